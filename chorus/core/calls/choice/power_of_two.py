"""Power of two choices: sample two replicas, send to the one with the shorter expected wait.

Nearly as good as asking every replica, without every router piling onto the same
least-loaded one when their views are equally stale.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from chorus.core.calls.choice.base import Candidate


class PowerOfTwo:
    name = "power_of_two"

    def choose(self, candidates: Sequence[Candidate], rng: random.Random) -> Candidate | None:
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        a, b = rng.sample(list(candidates), 2)
        return a if a.expected_wait_ms <= b.expected_wait_ms else b
