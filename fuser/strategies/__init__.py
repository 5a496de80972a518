"""Fusion strategies, selected by name."""

from __future__ import annotations

from chorus.errors import InvalidArgument
from fuser.strategies.base import Fused, FusionStrategy, MemberScores
from fuser.strategies.majority_vote import MajorityVote
from fuser.strategies.soft_vote import SoftVote

STRATEGIES: dict[str, FusionStrategy] = {s.name: s for s in (SoftVote(), MajorityVote())}


def get(name: str) -> FusionStrategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidArgument(
            f"fusion_policy: unknown policy {name!r}; expected one of {sorted(STRATEGIES)}"
        ) from None


__all__ = ["STRATEGIES", "Fused", "FusionStrategy", "MemberScores", "get"]
