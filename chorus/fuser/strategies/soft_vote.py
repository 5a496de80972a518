"""Soft vote: the (weighted) mean of the members' probabilities; the top class wins.

Ties in the mean go to the lowest class index, so the answer is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.fuser.strategies.base import Fused, MemberScores, agreement, check_members


class SoftVote:
    name = "soft_vote"

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, _ = check_members(members)
        weights = np.array([m.weight for m in members], dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones_like(weights)
        stacked = np.stack([m.probabilities.astype(np.float64) for m in members])
        mean = np.tensordot(weights / weights.sum(), stacked, axes=1)
        labels = np.argmax(mean, axis=1)
        confidence = mean[np.arange(rows), labels]
        rules = [f"soft_vote: highest mean probability ({c:.3f})" for c in confidence]
        return Fused(mean.astype(np.float32), labels, confidence, agreement(members, labels), rules)
