"""Soft vote: the (weighted) mean of the members' probabilities; the top class wins.

Ties in the mean go to the lowest class index, so the answer is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.fuser.strategies.base import (
    Fused,
    MemberScores,
    agreement,
    check_members,
    weighted_mean,
)


class SoftVote:
    name = "soft_vote"
    needs = declared.STRATEGIES[name]

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, _ = check_members(members)
        mean = weighted_mean(members)
        labels = np.argmax(mean, axis=1)
        confidence = mean[np.arange(rows), labels]
        rules = [f"soft_vote: highest mean probability ({c:.3f})" for c in confidence]
        return Fused(mean.astype(np.float32), labels, confidence, agreement(members, labels), rules)
