"""Dawid-Skene: each row's posterior over the true label under the members' confusion
matrices, estimated from their votes alone (fuser.reliability), with each member's
probabilities as its evidence; the majority vote, saying so, until enough votes were seen."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.fuser.reliability import MIN_ROWS
from chorus.fuser.strategies.base import Fused, MemberScores, Task, agreement, check_members
from chorus.fuser.strategies.majority_vote import MajorityVote

FALLBACK = MajorityVote()


class DawidSkene:
    name = "dawid_skene"
    needs = declared.STRATEGIES[name]

    async def fuse_task(self, members: Sequence[MemberScores], task: Task) -> Fused:
        _, classes = check_members(members)
        found = task.reliability
        seen = found.counts.rows if found is not None else 0.0
        if found is None or seen < MIN_ROWS:
            fallback = FALLBACK.fuse(members)
            rules = [
                f"dawid_skene: {seen:.0f} rows of votes seen (needs {MIN_ROWS}), so {r}"
                for r in fallback.rules
            ]
            return Fused(fallback.probabilities, fallback.labels, fallback.confidence,
                         fallback.agreement, rules)  # fmt: skip
        counts = found.aligned([m.model for m in members], classes)
        posterior = counts.posterior_from_scores([m.probabilities for m in members])
        labels = np.argmax(posterior, axis=1)
        confidence = posterior[np.arange(len(labels)), labels]
        accuracy = ", ".join(
            f"{m.model} {a:.2f}" for m, a in zip(members, counts.accuracy(), strict=True)
        )
        rules = [
            f"dawid_skene: posterior {c:.3f} from {seen:.0f} rows of votes "
            f"(estimated accuracy {accuracy})"
            for c in confidence
        ]
        return Fused(posterior, labels, confidence, agreement(members, labels), rules)
