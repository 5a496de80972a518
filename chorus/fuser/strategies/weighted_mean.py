"""Weighted mean (regression): the weight-weighted mean of the members' predicted values.

Regression members put their predictions in `probabilities`, as values [rows, outputs]. The
fused value of each row and output is sum(w_i * v_i) / sum(w_i). The mean uses every member's
magnitude, which is what makes it accurate when members err independently and what makes it
fragile when one member is far off; the median strategy is the robust alternative.

What every regression strategy reports, defined here and shared with `median`:

- probabilities: the fused values [rows, outputs]; labels: -1 (int64) on every row, there is
  no class;
- spread: per row, the weighted standard deviation of the members' values around their
  weighted mean (population form, sqrt(sum w_i (v_i - mean)^2 / sum w_i)), averaged over the
  outputs. It is the same for every regression strategy, so rows compare across strategies;
- confidence = 1 / (1 + spread): 1 when the members agree exactly, falling as they diverge;
- agreement: the share of members (unweighted, like the classification agreement) "within one
  spread" of the fused value, i.e. whose mean absolute distance to the fused values over the
  outputs is <= the row's spread (inclusive, with a 1e-9 relative tolerance). When all members
  agree exactly the spread is 0 and every member is within it.

If every member's weight is 0 the members count with equal weight 1, as in the soft vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.core.errors import InvalidArgument
from chorus.fuser.strategies.base import Fused, MemberScores, check_members, member_weights

TOLERANCE = 1e-9


def check_values(members: Sequence[MemberScores]) -> np.ndarray:
    """The members' values stacked as float64 [members, rows, outputs], after check_members."""
    _, outputs = check_members(members)
    if outputs == 0:
        raise InvalidArgument("members: values have 0 outputs; expected at least 1 per row")
    return np.stack([m.probabilities.astype(np.float64) for m in members])


def spread_of(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row, the weighted std of `values` [members, rows, outputs] around their weighted
    mean, averaged over the outputs (float64 [rows])."""
    share = weights / weights.sum()
    mean = np.tensordot(share, values, axes=1)
    variance = np.tensordot(share, (values - mean[None]) ** 2, axes=1)
    return np.asarray(np.sqrt(variance).mean(axis=1))


def weighted_spread(members: Sequence[MemberScores]) -> np.ndarray:
    """The regression spread of `members` per row (see the module docstring)."""
    return spread_of(check_values(members), member_weights(members))


def regression_fused(
    name: str, values: np.ndarray, weights: np.ndarray, fused: np.ndarray, how: str
) -> Fused:
    """The Fused of a regression strategy: `values` [members, rows, outputs] as checked by
    check_values, `weights` as from member_weights, `fused` the fused values [rows, outputs]."""
    spread = spread_of(values, weights)
    distance = np.abs(values - fused[None]).mean(axis=2)  # [members, rows]
    within = distance <= spread[None] + TOLERANCE * np.maximum(spread[None], 1.0)
    confidence = 1.0 / (1.0 + spread)
    rows = fused.shape[0]
    rules = [f"{name}: {how}, spread {spread[r]:.3f}" for r in range(rows)]
    return Fused(
        fused.astype(np.float32),
        np.full(rows, -1, dtype=np.int64),
        confidence,
        np.asarray(within.mean(axis=0), dtype=np.float64),
        rules,
    )


class WeightedMean:
    name = "weighted_mean"
    needs = declared.STRATEGIES[name]

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        values = check_values(members)
        weights = member_weights(members)
        fused = np.tensordot(weights / weights.sum(), values, axes=1)
        how = f"weighted mean of {len(members)} members"
        return regression_fused(self.name, values, weights, fused, how)
