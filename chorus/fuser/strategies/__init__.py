"""Fusion strategies, selected by name (`fusion_policy`).

Classification: soft_vote, majority_vote, weighted_vote, max_confidence, borda, threshold
(min_confidence 0.6), and three that need more than the scores: stacking (a served
meta-model), gated (a served gate model and the task's input) and dawid_skene (the members'
estimated reliability). Regression, reading members' `probabilities` as predicted values:
weighted_mean, median.

Each strategy says what it needs (`needs`, chorus.core.needs); a new one is one module and a
`register(...)` call.
"""

from __future__ import annotations

from chorus.core import needs as declared
from chorus.core.errors import InvalidArgument
from chorus.fuser.strategies.base import (
    Fused,
    FusionStrategy,
    MemberScores,
    Stacker,
    Strategy,
    Task,
    TaskStrategy,
    from_scores,
)
from chorus.fuser.strategies.borda import Borda
from chorus.fuser.strategies.dawid_skene import DawidSkene
from chorus.fuser.strategies.gated import Gated
from chorus.fuser.strategies.majority_vote import MajorityVote
from chorus.fuser.strategies.max_confidence import MaxConfidence
from chorus.fuser.strategies.median import Median
from chorus.fuser.strategies.soft_vote import SoftVote
from chorus.fuser.strategies.stacking import Stacking
from chorus.fuser.strategies.threshold import Threshold
from chorus.fuser.strategies.weighted_mean import WeightedMean
from chorus.fuser.strategies.weighted_vote import WeightedVote

CLASSIFICATION: tuple[FusionStrategy, ...] = (
    SoftVote(),
    MajorityVote(),
    WeightedVote(),
    MaxConfidence(),
    Borda(),
    Threshold(),
)
"""The classification strategies that are pure functions of the scores."""
REGRESSION: tuple[FusionStrategy, ...] = (WeightedMean(), Median())

STRATEGIES: dict[str, Strategy] = {}
"""Every registered strategy by name."""


def register(strategy: Strategy) -> Strategy:
    """Makes `strategy` selectable by its name, its needs declared (chorus.core.needs)."""
    if strategy.name in STRATEGIES:
        raise ValueError(f"fusion strategy {strategy.name!r} is registered already")
    declared.declare(declared.STRATEGIES, strategy.name, strategy.needs)
    STRATEGIES[strategy.name] = strategy
    return strategy


_BUILT_IN: tuple[Strategy, ...] = (*CLASSIFICATION, Stacking(), Gated(), DawidSkene(), *REGRESSION)
for _s in _BUILT_IN:
    register(_s)


def get(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidArgument(
            f"fusion_policy: unknown policy {name!r}; expected one of {sorted(STRATEGIES)}"
        ) from None


def scores_only(name: str) -> FusionStrategy | None:
    """The strategy `name` when it is a pure function of the members' scores, else None."""
    found = STRATEGIES.get(name)
    return found if found is not None and from_scores(found) else None


def names(*, regression: bool) -> list[str]:
    """The registered strategies of one kind, sorted."""
    return sorted(n for n, s in STRATEGIES.items() if s.needs.regression == regression)


__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "STRATEGIES",
    "Fused",
    "FusionStrategy",
    "MemberScores",
    "Stacker",
    "Strategy",
    "Task",
    "TaskStrategy",
    "from_scores",
    "get",
    "names",
    "register",
    "scores_only",
]
