"""NATS subject names: the only addresses services use to find each other."""

from __future__ import annotations

import re

PREFIX = "chorus"
FUSE = f"{PREFIX}.fuse"
FUSER_QUEUE = "fuser"
FEEDBACK = f"{PREFIX}.feedback"
PLAN = f"{PREFIX}.plan"
HEARTBEATS = f"{PREFIX}.hb.*"
DISCOVER = f"{PREFIX}.discover"
ROUTER_STATUS = f"{PREFIX}.router.status"
SUBMIT = f"{PREFIX}.submit"
"""The task API on the bus: a SubmitRequest in, a SubmitResponse out (any router replica)."""
ROUTER_QUEUE = "router"
"""Any router replica answers with its live numbers (JSON): the NATS face of a gRPC service."""
FUSER_HEARTBEATS = f"{PREFIX}.fuser.hb"
"""Each fuser replica's id, every second: where the router may send one-way tasks."""


def infer(model: str) -> str:
    """Any replica of `model` (NATS balances the queue group named after the model)."""
    return f"{PREFIX}.infer.{model}"


def infer_replica(model: str, replica: str) -> str:
    """One replica of `model`, for callers that choose the replica themselves."""
    return f"{PREFIX}.infer.{model}.{replica}"


def fuse_replica(replica: str) -> str:
    """One fuser replica: a one-way task must be fused where its members answer."""
    return f"{FUSE}.r.{replica}"


def collect(fuser: str, call: str = ">") -> str:
    """Where members answer a one-way call (`call`: `<replica or _>.<the router's token>`);
    the fuser replica subscribes to every call's."""
    return f"{PREFIX}.collect.{fuser}.{call}"


def heartbeat(model: str) -> str:
    return f"{PREFIX}.hb.{model}"


def kv_key(name: str) -> str:
    """Any capability or task id as a valid JetStream KV key (readable for plain names)."""
    return re.sub(r"[^-/_a-zA-Z0-9]", lambda m: f"={ord(m.group()):02x}", name)


def tasks(priority_name: str) -> str:
    """Durable async tasks of one priority class (a JetStream work-queue stream each)."""
    return f"{PREFIX}.tasks.{priority_name}"
