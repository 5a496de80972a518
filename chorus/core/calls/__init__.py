"""Calls to member models, shared by every service that makes them (core layer): the
replica choice policies (choice/), per-replica state and circuit breakers (replicas.py,
breaker.py) and the client that retries, hedges and checks digests (client.py)."""
