"""The router's own view of each replica, beside what the replica's heartbeat says: requests
this router has outstanding there, the round trip it measures, and a circuit breaker.

Heartbeats are up to a second old; outstanding requests are exact. The expected wait uses
both, so a burst that lands between two heartbeats still spreads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from chorus.core.calls.breaker import CircuitBreaker
from chorus.core.calls.choice import Candidate
from chorus.core.heartbeat import Heartbeat

EWMA_ALPHA = 0.2


@dataclass
class ReplicaState:
    outstanding: int = 0
    ewma_ms: float = 0.0
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)

    def observe(self, ms: float) -> None:
        self.ewma_ms = (
            ms if self.ewma_ms == 0 else (1 - EWMA_ALPHA) * self.ewma_ms + EWMA_ALPHA * ms
        )


class ReplicaBook:
    def __init__(
        self, *, failures_to_open: int = 3, cooldown_s: float = 5.0, window: int = 256
    ) -> None:
        self.failures_to_open = failures_to_open
        self.cooldown_s = cooldown_s
        self._states: dict[str, ReplicaState] = {}
        self._latency: dict[str, deque[float]] = {}
        self._window = window
        self._p95: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def state(self, replica: str) -> ReplicaState:
        st = self._states.get(replica)
        if st is None:
            st = self._states[replica] = ReplicaState(
                breaker=CircuitBreaker(self.failures_to_open, self.cooldown_s)
            )
        return st

    def sending(self, replica: str, change: int) -> None:
        """Requests this caller has outstanding at `replica` go up or down by `change`."""
        self.state(replica).outstanding += change

    def candidates(
        self, replicas: list[Heartbeat], now: float, exclude: set[str]
    ) -> list[Candidate]:
        """Replicas a request may go to now (breaker allowing), with their expected waits."""
        out = []
        for hb in replicas:
            if hb.replica in exclude:
                continue
            st = self.state(hb.replica)
            if not st.breaker.available(now):
                continue
            out.append(Candidate(hb.replica, expected_wait_ms(hb, st)))
        return out

    def record_latency(self, model: str, ms: float) -> None:
        window = self._latency.setdefault(model, deque(maxlen=self._window))
        window.append(ms)
        self._since[model] = self._since.get(model, 0) + 1

    def p95_ms(self, model: str) -> float | None:
        """The model's 95th percentile round trip, once 20 requests have been seen; recomputed
        every 16 new samples, not on every request."""
        window = self._latency.get(model)
        if window is None or len(window) < 20:
            return None
        if model not in self._p95 or self._since.get(model, 0) >= 16:
            self._p95[model] = float(np.percentile(np.fromiter(window, dtype=np.float64), 95))
            self._since[model] = 0
        return self._p95[model]


def expected_wait_ms(hb: Heartbeat, st: ReplicaState) -> float:
    service_ms = st.ewma_ms or hb.ewma_ms or 1.0
    ahead = max(st.outstanding, hb.in_flight) + sum(hb.queue.values())
    return (ahead + 1) * service_ms / max(1, hb.capacity)
