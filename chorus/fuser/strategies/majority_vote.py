"""Majority (plurality) vote: each member votes its top class; most votes wins.

A tie between classes is broken by the higher mean probability among the tied classes, then
by the lower class index. The fused "probabilities" are the vote shares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.fuser.strategies.base import Fused, MemberScores, agreement, check_members


class MajorityVote:
    name = "majority_vote"
    needs = declared.STRATEGIES[name]

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, classes = check_members(members)
        n = len(members)
        votes = np.stack([m.votes for m in members])
        counts = np.zeros((rows, classes), dtype=np.int64)
        for row_votes in votes:
            counts[np.arange(rows), row_votes] += 1
        mean = np.mean([m.probabilities for m in members], axis=0)
        top = counts.max(axis=1, keepdims=True)
        tied = counts == top
        # Among the tied classes, the higher mean probability wins; argmax picks the lowest
        # index on an exact tie.
        labels = np.argmax(np.where(tied, mean, -np.inf), axis=1)
        n_tied = tied.sum(axis=1)
        rules = []
        for r in range(rows):
            if n_tied[r] > 1:
                classes_tied = np.flatnonzero(tied[r]).tolist()
                rules.append(
                    f"majority_vote: tie at {top[r, 0]} of {n} votes between {classes_tied}, "
                    "broken by mean probability"
                )
            else:
                rules.append(f"majority_vote: {top[r, 0]} of {n} votes")
        shares = counts / n
        confidence = shares[np.arange(rows), labels]
        return Fused(
            shares.astype(np.float32), labels, confidence, agreement(members, labels), rules
        )
