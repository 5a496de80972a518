"""Quorum: an answer stands only if at least k members voted for it; else it is unresolved.

k defaults to a strict majority of the members that answered. A regression member backs the
fused value when it is within the conflict bar of it (fuser.conflict). Unresolved rows get
label -1, so a caller can never mistake them for an answer; a regression row keeps its value,
and its status says unresolved.
"""

from __future__ import annotations

from dataclasses import replace

from chorus.core import needs as declared
from chorus.fuser.policies.base import Case, Outcome, backing, first_pass
from chorus.fuser.strategies import Fused


class Quorum:
    name = "quorum"
    needs = declared.CONFLICT_POLICIES[name]

    async def resolve(self, case: Case, fused: Fused) -> Outcome:
        out = first_pass(case, fused)
        n = len(case.members)
        k = case.settings.quorum or n // 2 + 1
        backed = backing(case, fused)
        labels = fused.labels.copy()
        answer = [
            f"{fused.probabilities[r, 0]:.4g}" if case.regression else str(fused.labels[r])
            for r in range(len(labels))
        ]
        for r, count in enumerate(backed):
            if count < k:
                labels[r] = -1
                out.status[r] = "unresolved"
                out.rules[r] = f"quorum: only {count} of {n} members back {answer[r]}; {k} needed"
            elif out.status[r] == "conflicted":
                out.status[r] = "resolved"
                out.rules[r] = f"quorum: {count} of {n} members back {answer[r]} ({k} needed)"
        out.fused = replace(fused, labels=labels)
        return out
