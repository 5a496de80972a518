"""Fusion strategies, selected by name.

Classification: soft_vote, majority_vote, weighted_vote, max_confidence, borda, threshold
(min_confidence 0.6). Regression, reading members' `probabilities` as predicted values:
weighted_mean, median.
"""

from __future__ import annotations

from chorus.errors import InvalidArgument
from chorus.fuser.strategies.base import Fused, FusionStrategy, MemberScores
from chorus.fuser.strategies.borda import Borda
from chorus.fuser.strategies.majority_vote import MajorityVote
from chorus.fuser.strategies.max_confidence import MaxConfidence
from chorus.fuser.strategies.median import Median
from chorus.fuser.strategies.soft_vote import SoftVote
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
REGRESSION: tuple[FusionStrategy, ...] = (WeightedMean(), Median())

STRATEGIES: dict[str, FusionStrategy] = {s.name: s for s in (*CLASSIFICATION, *REGRESSION)}


def get(name: str) -> FusionStrategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidArgument(
            f"fusion_policy: unknown policy {name!r}; expected one of {sorted(STRATEGIES)}"
        ) from None


__all__ = [
    "CLASSIFICATION",
    "REGRESSION",
    "STRATEGIES",
    "Fused",
    "FusionStrategy",
    "MemberScores",
    "get",
]
