"""How the router picks one replica of a model for one request."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Candidate:
    replica: str
    expected_wait_ms: float
    """(requests ahead + 1) x service time / slots, from heartbeats and this router's view."""


class ReplicaChooser(Protocol):
    name: str

    def choose(self, candidates: Sequence[Candidate], rng: random.Random) -> Candidate | None:
        """A replica, or None to let NATS pick one from the model's queue group."""
        ...
