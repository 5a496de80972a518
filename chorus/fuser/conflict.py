"""Conflict detection: which rows of a fused batch the members do not really agree on.

A fused answer always names a class; these measures say how much it should be trusted, and
`detect` flags the rows a conflict policy (quorum, negotiate, arbiter, escalate) must look at.
All are pure functions of the members' outputs and the fused result.

Classification, per row:

- margin: fused top-1 minus top-2 probability (the top-1 itself when there is one class).
  Small means the fused distribution barely prefers its answer.
- entropy: Shannon entropy of the fused distribution (renormalised to sum 1, negatives
  clipped to 0) divided by log(classes), so 0 = all mass on one class and 1 = uniform
  (0 when there is one class).
- vote_margin: the share of members whose top class is the most voted class, minus the share
  voting the runner-up class (0 when two classes tie for the most votes; 1 when unanimous or
  with one member). Unweighted: it counts members, so it shows disagreement that the weights
  may hide.

A classification row is conflicted when margin < min_margin, or entropy > max_entropy, or
vote_margin < min_vote_margin. With the default min_vote_margin of 0.34 a 2-to-1 split of
three members (vote margin 1/3) counts as a conflict.

Regression, per row: spread, the weighted std of the members' values around their weighted
mean averaged over the outputs (the one every regression strategy reports, see
`fuser.strategies.weighted_mean`). A regression row is conflicted when its spread exceeds
max(max_spread, max_relative_spread * |fused value|): the bar follows the target's scale, so
a spread of 15 is a conflict on a value of 20 and agreement on a value of 2,000, while
max_spread keeps values near zero from making every row a conflict. The same bar says which
members back a regression answer (quorum).
Measures that do not apply to the kind of task are None in the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from chorus.core.config import FuserConfig
from chorus.core.errors import InvalidArgument
from chorus.fuser.strategies.base import Fused, MemberScores, check_members, weighted_mean
from chorus.fuser.strategies.weighted_mean import weighted_spread

_DEFAULTS = FuserConfig()


@dataclass(frozen=True)
class ConflictThresholds:
    """When a row counts as conflicted; see the module docstring for each measure. The
    defaults are FuserConfig's (CHORUS_FUSER_MIN_MARGIN, ...), which says why."""

    min_margin: float = _DEFAULTS.min_margin
    max_entropy: float = _DEFAULTS.max_entropy
    min_vote_margin: float = _DEFAULTS.min_vote_margin
    max_spread: float = _DEFAULTS.max_spread
    max_relative_spread: float = _DEFAULTS.max_relative_spread

    def __post_init__(self) -> None:
        for name in ("min_margin", "max_entropy", "min_vote_margin"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
        for name in ("max_spread", "max_relative_spread"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")


@dataclass(frozen=True, eq=False)
class ConflictReport:
    """Per-row conflict measures of one fused batch.

    Classification reports fill margin, entropy and vote_margin (float64 [rows]) and leave
    spread None; regression reports fill spread and leave the others None. `reasons[r]` says
    which thresholds row r crossed ("" when it is not conflicted). Compared by identity
    (eq=False): its fields are arrays.
    """

    conflicted: np.ndarray
    reasons: tuple[str, ...]
    thresholds: ConflictThresholds
    margin: np.ndarray | None = None
    entropy: np.ndarray | None = None
    vote_margin: np.ndarray | None = None
    spread: np.ndarray | None = None

    @property
    def rate(self) -> float:
        """Share of the batch's rows that are conflicted (0 for an empty batch)."""
        return float(self.conflicted.mean()) if self.conflicted.size else 0.0


def margin(probabilities: np.ndarray) -> np.ndarray:
    """Per row, top-1 minus top-2 of a [rows, classes] distribution."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.shape[1] < 2:
        return p[:, 0].copy() if p.shape[1] else np.zeros(p.shape[0])
    top2 = np.partition(p, -2, axis=1)[:, -2:]
    return np.asarray(top2[:, 1] - top2[:, 0])


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Per row, the Shannon entropy of a [rows, classes] distribution over log(classes)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, None)
    rows, classes = p.shape
    if classes < 2:
        return np.zeros(rows)
    total = p.sum(axis=1, keepdims=True)
    # A row with no mass at all is treated as uniform: nothing is preferred.
    q = np.divide(p, total, out=np.full_like(p, 1.0 / classes), where=total > 0)
    plogp = q * np.log(np.where(q > 0, q, 1.0))
    return np.asarray(np.clip(-plogp.sum(axis=1) / math.log(classes), 0.0, 1.0))


def vote_margin(members: Sequence[MemberScores]) -> np.ndarray:
    """Per row, share of members voting the most voted class minus share voting the
    runner-up class."""
    rows, classes = check_members(members)
    idx = np.arange(rows)
    counts = np.zeros((rows, classes), dtype=np.int64)
    for m in members:
        counts[idx, m.votes] += 1
    if classes < 2:
        return np.ones(rows)
    top2 = np.partition(counts, -2, axis=1)[:, -2:]
    return np.asarray((top2[:, 1] - top2[:, 0]) / len(members), dtype=np.float64)


def detect(
    members: Sequence[MemberScores],
    fused: Fused,
    thresholds: ConflictThresholds,
    regression: bool = False,
) -> ConflictReport:
    """The conflict report of one fused batch; InvalidArgument when `fused` does not match
    the members' rows."""
    rows, _ = check_members(members)
    if fused.probabilities.ndim != 2 or fused.probabilities.shape[0] != rows:
        raise InvalidArgument(
            f"fused.probabilities: expected [{rows}, n] like the members, "
            f"got {list(fused.probabilities.shape)}"
        )
    t = thresholds
    if regression:
        spread = weighted_spread(members)
        limit = spread_limit(t, fused.probabilities)
        conflicted = spread > limit
        reasons = tuple(
            f"spread {s:.3f} > {lim:.3f}" if c else ""
            for s, lim, c in zip(spread, limit, conflicted, strict=True)
        )
        return ConflictReport(conflicted, reasons, t, spread=spread)

    # Margin and entropy are read from the members' weighted mean distribution, not from the
    # strategy's output, whose scale differs by strategy (vote shares, Borda points).
    consensus = weighted_mean(members)
    mar = margin(consensus)
    ent = entropy(consensus)
    vm = vote_margin(members)
    low_margin = mar < t.min_margin
    high_entropy = ent > t.max_entropy
    low_vote_margin = vm < t.min_vote_margin

    def why(r: int) -> str:
        said = []
        if low_margin[r]:
            said.append(f"margin {mar[r]:.3f} < {t.min_margin:.3f}")
        if high_entropy[r]:
            said.append(f"entropy {ent[r]:.3f} > {t.max_entropy:.3f}")
        if low_vote_margin[r]:
            said.append(f"vote margin {vm[r]:.3f} < {t.min_vote_margin:.3f}")
        return "; ".join(said)

    reasons = tuple(why(r) for r in range(rows))
    conflicted = low_margin | high_entropy | low_vote_margin
    return ConflictReport(conflicted, reasons, t, margin=mar, entropy=ent, vote_margin=vm)


def spread_limit(thresholds: ConflictThresholds, fused_values: np.ndarray) -> np.ndarray:
    """Per row, the spread above which a regression row is conflicted (module docstring)."""
    scale = np.abs(np.asarray(fused_values, dtype=np.float64)).mean(axis=1)
    return np.maximum(thresholds.max_spread, thresholds.max_relative_spread * scale)
