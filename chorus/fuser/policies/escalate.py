"""Escalation: conflicted rows go to people, with all the evidence, durably.

The fused label stays as the machine's provisional answer; the row's status says
needs_review, and the review case waits on chorus.review.<capability> in JetStream until a
reviewer takes it.
"""

from __future__ import annotations

from chorus.core import needs as declared
from chorus.core.errors import FailedPrecondition
from chorus.fuser.policies.base import ActsOnConflicts, Case, Outcome


class Escalate(ActsOnConflicts):
    name = "escalate"
    needs = declared.CONFLICT_POLICIES[name]

    async def decide(self, case: Case, out: Outcome, rows: list[int]) -> Outcome:
        """Send `rows` of an outcome another step flagged to people."""
        if not rows:
            return out
        if case.review is None:
            raise FailedPrecondition("conflict.escalate: this fuser has no review stream")
        await case.review(rows, out.fused, case.members)
        for r in rows:
            out.status[r] = "needs_review"
            out.rules[r] = f"escalate: sent to review on chorus.review ({out.rules[r]})"
        return out
