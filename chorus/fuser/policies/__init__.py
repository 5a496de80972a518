"""Conflict resolution policies, selected by name."""

from __future__ import annotations

from chorus.errors import InvalidArgument
from chorus.fuser.policies.arbiter import Arbiter
from chorus.fuser.policies.base import Case, ConflictPolicy, Outcome, Settings
from chorus.fuser.policies.conformal import Conformal
from chorus.fuser.policies.escalate import Escalate
from chorus.fuser.policies.negotiate import Negotiate
from chorus.fuser.policies.none import NoPolicy
from chorus.fuser.policies.quorum import Quorum

POLICIES: dict[str, ConflictPolicy] = {
    p.name: p for p in (NoPolicy(), Quorum(), Negotiate(), Arbiter(), Escalate(), Conformal())
}


def get(name: str) -> ConflictPolicy:
    try:
        return POLICIES[name or "none"]
    except KeyError:
        raise InvalidArgument(
            f"conflict.name: unknown conflict policy {name!r}; expected one of {sorted(POLICIES)}"
        ) from None


__all__ = ["POLICIES", "Case", "ConflictPolicy", "Outcome", "Settings", "get"]
