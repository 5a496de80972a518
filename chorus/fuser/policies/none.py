"""Leave conflicts as the strategy decided them, flagged so the caller can see them."""

from __future__ import annotations

from chorus.core import needs as declared
from chorus.fuser.policies.base import Case, Outcome, first_pass
from chorus.fuser.strategies import Fused


class NoPolicy:
    name = "none"
    needs = declared.CONFLICT_POLICIES[name]

    async def resolve(self, case: Case, fused: Fused) -> Outcome:
        return first_pass(case, fused)
