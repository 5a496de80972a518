"""Conflict resolution policies, selected by name (`conflict.name`; empty is `none`).

Each policy says what it needs (`needs`, chorus.core.needs); a new one is one module and a
`register(...)` call.
"""

from __future__ import annotations

from chorus.core import needs as declared
from chorus.core.errors import InvalidArgument
from chorus.core.needs import Needs
from chorus.fuser.policies.arbiter import Arbiter
from chorus.fuser.policies.base import Case, ConflictPolicy, Outcome, Settings
from chorus.fuser.policies.conformal import Conformal
from chorus.fuser.policies.escalate import Escalate
from chorus.fuser.policies.negotiate import Negotiate
from chorus.fuser.policies.none import NoPolicy
from chorus.fuser.policies.quorum import Quorum

POLICIES: dict[str, ConflictPolicy] = {}
"""Every registered conflict policy by name."""


def register(policy: ConflictPolicy) -> ConflictPolicy:
    """Makes `policy` selectable by its name, its needs declared (chorus.core.needs)."""
    if policy.name in POLICIES:
        raise ValueError(f"conflict policy {policy.name!r} is registered already")
    declared.declare(declared.CONFLICT_POLICIES, policy.name, policy.needs)
    POLICIES[policy.name] = policy
    return policy


for _p in (NoPolicy(), Quorum(), Negotiate(), Arbiter(), Escalate(), Conformal()):
    register(_p)


def get(name: str) -> ConflictPolicy:
    try:
        return POLICIES[name or "none"]
    except KeyError:
        raise InvalidArgument(
            f"conflict.name: unknown conflict policy {name!r}; expected one of {sorted(POLICIES)}"
        ) from None


def needs_of(name: str) -> Needs | None:
    """The needs of the policy `name`, None for an unknown one."""
    found = POLICIES.get(name)
    return None if found is None else found.needs


__all__ = [
    "POLICIES",
    "Case",
    "ConflictPolicy",
    "Outcome",
    "Settings",
    "get",
    "needs_of",
    "register",
]
