"""Leave the choice to NATS: the request goes to the model's queue group, which picks a
subscribed replica at random, blind to load. The baseline the load-aware policy must beat."""

from __future__ import annotations

import random
from collections.abc import Sequence

from chorus.core.calls.choice.base import Candidate


class QueueGroup:
    name = "queue_group"

    def choose(self, candidates: Sequence[Candidate], rng: random.Random) -> Candidate | None:
        return None
