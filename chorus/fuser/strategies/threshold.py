"""Threshold: a weighted soft vote among only the members that are confident on the row.

A member unsure of a row (its top probability below `min_confidence`) adds mostly noise to
an average; leaving it out lets the members that recognise the input decide. Which members
take part is decided per row.

On each row the members whose top probability is >= `min_confidence` (and whose weight is
> 0) take part in a weighted soft vote: the weight-weighted mean of their probabilities, top
class wins, ties to the lowest class index. If no member qualifies on a row, the row falls
back to the weighted soft vote of all members, and its rule says so. If every member's weight
is 0 the members count with equal weight 1, as in the soft vote. The confidence is the fused
probability of the chosen class; agreement counts all members, taking part or not.
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
)


class Threshold:
    name = "threshold"
    needs = declared.STRATEGIES[name]

    def __init__(self, min_confidence: float = 0.6) -> None:
        if not (np.isfinite(min_confidence) and 0.0 <= min_confidence <= 1.0):
            raise ValueError(f"min_confidence: expected a number in [0, 1], got {min_confidence}")
        self.min_confidence = float(min_confidence)

    def _confident(self, probabilities: np.ndarray) -> np.ndarray:
        """Rows whose top probability reaches the threshold, compared in the member's own
        float precision: an FP32 member sending 0.7 meets a 0.7 threshold, although
        float32(0.7) < 0.7 in float64."""
        floating = np.issubdtype(probabilities.dtype, np.floating)
        bar = np.asarray(self.min_confidence, dtype=probabilities.dtype if floating else np.float64)
        return np.asarray(probabilities.max(axis=1) >= bar)

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, _ = check_members(members)
        n = len(members)
        idx = np.arange(rows)
        weights = member_weights(members)
        stacked = np.stack([m.probabilities.astype(np.float64) for m in members])

        confident = np.stack([self._confident(m.probabilities) for m in members])
        confident &= weights[:, None] > 0
        row_weights = np.where(confident, weights[:, None], 0.0)  # [members, rows]
        row_total = row_weights.sum(axis=0)
        fallback = row_total <= 0
        row_weights[:, fallback] = weights[:, None]
        row_total[fallback] = weights.sum()

        mean = np.einsum("mr,mrc->rc", row_weights / row_total, stacked)
        labels = np.argmax(mean, axis=1)
        confidence = mean[idx, labels]
        n_confident = confident.sum(axis=0)
        at = f">= {self.min_confidence:.2f}"
        rules = [
            (
                f"threshold: no member at {at}; fell back to the soft vote of all {n} members "
                f"({confidence[r]:.3f})"
                if fallback[r]
                else f"threshold: soft vote of {n_confident[r]} of {n} members at {at} "
                f"({confidence[r]:.3f})"
            )
            for r in range(rows)
        ]
        return Fused(mean.astype(np.float32), labels, confidence, agreement(members, labels), rules)
