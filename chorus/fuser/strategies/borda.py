"""Borda count: each member ranks the classes; points by rank, weighted, most points wins.

A vote uses only each member's top class and a soft vote trusts the members' probability
scales; Borda uses the whole ordering but not the scale, so one member's overconfident
probabilities cannot swamp the others, and a class every member ranks second can still win.

Of C classes, a member gives the class it ranks r-th (r = 0 the most probable) C-1-r points,
times its weight. Classes a member gives exactly equal probability share the ranks they span
(mid-rank: [0.5, 0.5, 0.0] gives 1.5, 1.5, 0 points), so class order cannot leak into the
count. Ties in points (within a relative 1e-9) go to the higher weighted mean probability,
then to the lowest class index.

The fused "probabilities" are the points normalised to sum 1 per row (uniform when there is
one class only). The confidence is the winner's points over the most it could have had
(every member ranking it first), so a unanimous first place reads 1.0 whatever C is.
If every member's weight is 0 the members count with equal weight 1, as in the soft vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from chorus.core import needs as declared
from chorus.fuser.strategies.base import (
    Fused,
    MemberScores,
    agreement,
    check_members,
    member_weights,
    weighted_average,
)

TIE_RTOL = 1e-9


class Borda:
    name = "borda"
    needs = declared.STRATEGIES[name]

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, classes = check_members(members)
        idx = np.arange(rows)
        weights = member_weights(members)
        stacked = np.stack([m.probabilities.astype(np.float64) for m in members])
        # rankdata ranks ascending from 1, so the least probable class gets 0 points and the
        # most probable C-1; ties get the mean of the ranks they span.
        member_points = rankdata(stacked, method="average", axis=2) - 1.0
        points = np.tensordot(weights, member_points, axes=1)  # [rows, classes]
        mean = weighted_average(stacked, weights)

        best = points.max(axis=1, keepdims=True)
        tied = points >= best - TIE_RTOL * np.maximum(best, 1.0)
        # Among the tied classes the higher mean probability wins; argmax then takes the
        # lowest index on an exact tie.
        tied_mean = np.where(tied, mean, -np.inf)
        labels = np.argmax(tied_mean, axis=1)
        n_tied_mean = (tied_mean == tied_mean[idx, labels][:, None]).sum(axis=1)

        per_row = points.sum(axis=1, keepdims=True)
        normalised = np.divide(
            points, per_row, out=np.full_like(points, 1.0 / classes), where=per_row > 0
        )
        most = weights.sum() * (classes - 1)
        won = points[idx, labels]
        confidence = won / most if most > 0 else np.ones(rows)
        n_tied = tied.sum(axis=1)
        rules = []
        for r in range(rows):
            if n_tied[r] > 1:
                between = np.flatnonzero(tied[r]).tolist()
                by = "mean probability" if n_tied_mean[r] == 1 else "lowest class index"
                rules.append(f"borda: tie at {won[r]:.2f} points between {between}, broken by {by}")
            else:
                rules.append(f"borda: {won[r]:.2f} of {most:.2f} points")
        return Fused(
            normalised.astype(np.float32), labels, confidence, agreement(members, labels), rules
        )
