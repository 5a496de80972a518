"""Replica choice policies, selected by name in RouterConfig.replica_choice."""

from __future__ import annotations

from chorus.core.calls.choice.base import Candidate, ReplicaChooser
from chorus.core.calls.choice.power_of_two import PowerOfTwo
from chorus.core.calls.choice.queue_group import QueueGroup

CHOOSERS: dict[str, ReplicaChooser] = {c.name: c for c in (PowerOfTwo(), QueueGroup())}


def get(name: str) -> ReplicaChooser:
    try:
        return CHOOSERS[name]
    except KeyError:
        raise ValueError(
            f"replica_choice: expected one of {sorted(CHOOSERS)}, got {name!r}"
        ) from None


__all__ = ["CHOOSERS", "Candidate", "ReplicaChooser", "get"]
