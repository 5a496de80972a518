"""What the strategies that ask a served model (stacking, gated) share: finding it, and the
soft vote, saying why, when a member it was trained on did not answer."""

from __future__ import annotations

from collections.abc import Sequence

from chorus.core.errors import FailedPrecondition
from chorus.fuser.strategies.base import Fused, MemberScores, Stacker, Task
from chorus.fuser.strategies.soft_vote import SoftVote

FALLBACK = SoftVote()
"""The default classification strategy (chorus.core.wire.DEFAULT_POLICY)."""


def served_model(strategy: str, role: str, task: Task) -> Stacker:
    """The model a strategy asks (`task.model`, serving `role`), or why it cannot."""
    if task.model is None or task.client is None:
        raise FailedPrecondition(
            f"fusion_policy: {strategy} needs a model with capability "
            f"'{role}:{task.capability}'; none is running"
        )
    return task.model


def without_missing(strategy: str, found: Stacker, members: Sequence[MemberScores]) -> Fused | None:
    """The soft vote, saying why, when a member the model was trained on did not answer."""
    present = {m.model for m in members}
    missing = [n for n in found.members if n not in present]
    if not missing:
        return None
    fallback = FALLBACK.fuse(members)
    rules = [f"{strategy}: {missing} missing, so {r}" for r in fallback.rules]
    return Fused(
        fallback.probabilities, fallback.labels, fallback.confidence, fallback.agreement, rules
    )
