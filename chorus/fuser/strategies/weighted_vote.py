"""Weighted vote: each member votes its top class with its weight; the largest total wins.

A plain majority vote lets a poorly trusted member outvote a well trusted one; here a member's
`weight` (its current trust) is what it votes with. The fused "probabilities" are the weight
shares per class, and the confidence is the winner's share.

Ties are broken deterministically, in this order, each level only among the classes still tied:

1. total weight of the members voting the class (equal within a relative 1e-9, so that sums
   of the same weights added in a different order still tie);
2. calibrated confidence: the weight-weighted mean probability that all members give the
   class (the soft vote's score), so the class the members lean to overall wins;
3. model priority: the class voted by the highest-`priority` member among those voting for a
   tied class (only members with weight > 0 count; a weight-0 member has no say);
4. the lowest class index.

The rule text names the level that decided, e.g. "weighted_vote: 2.40 of 3.00 weight" or
"weighted_vote: tie at 1.50 weight between [3, 5], broken by calibrated confidence".

If every member's weight is 0 the members vote with equal weight 1, as the soft vote does.
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
    member_weights,
    weighted_mean,
)

# Relative tolerance under which two weight totals (or two calibrated confidences) are tied.
TIE_RTOL = 1e-9


def _tied(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Among `candidates` (bool [rows, classes]), those whose score equals the row's best."""
    masked = np.where(candidates, scores, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    return candidates & (masked >= best - TIE_RTOL * np.maximum(np.abs(best), 1.0))


class WeightedVote:
    name = "weighted_vote"
    needs = declared.STRATEGIES[name]

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, classes = check_members(members)
        weights = member_weights(members)
        total_weight = float(weights.sum())
        idx = np.arange(rows)
        votes = np.stack([m.votes for m in members])

        totals = np.zeros((rows, classes), dtype=np.float64)
        # Highest priority among the (weight > 0) members voting each class; -inf for none.
        priority = np.full((rows, classes), -np.inf)
        for w, m, row_votes in zip(weights, members, votes, strict=True):
            totals[idx, row_votes] += w
            if w > 0:
                priority[idx, row_votes] = np.maximum(priority[idx, row_votes], m.priority)

        calibrated = weighted_mean(members)

        tied_weight = _tied(totals, np.ones_like(totals, dtype=bool))
        tied_calibrated = _tied(calibrated, tied_weight)
        tied_priority = _tied(priority, tied_calibrated)
        # argmax of a bool row is its first True: the lowest class index still tied.
        labels = np.argmax(tied_priority, axis=1)

        n_weight = tied_weight.sum(axis=1)
        n_calibrated = tied_calibrated.sum(axis=1)
        n_priority = tied_priority.sum(axis=1)
        top = totals[idx, labels]
        rules = []
        for r in range(rows):
            if n_weight[r] == 1:
                rules.append(f"weighted_vote: {top[r]:.2f} of {total_weight:.2f} weight")
                continue
            if n_calibrated[r] == 1:
                by = "calibrated confidence"
            elif n_priority[r] == 1:
                by = "model priority"
            else:
                by = "lowest class index"
            between = np.flatnonzero(tied_weight[r]).tolist()
            rules.append(
                f"weighted_vote: tie at {top[r]:.2f} weight between {between}, broken by {by}"
            )

        shares = totals / total_weight
        confidence = shares[idx, labels]
        return Fused(
            shares.astype(np.float32), labels, confidence, agreement(members, labels), rules
        )
