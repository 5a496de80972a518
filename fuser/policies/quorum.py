"""Quorum: an answer stands only if at least k members voted for it; else it is unresolved.

k defaults to a strict majority of the members that answered. Unresolved rows get label -1,
so a caller can never mistake them for an answer.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from fuser.policies.base import Case, Outcome, first_pass
from fuser.strategies import Fused


class Quorum:
    name = "quorum"

    async def resolve(self, case: Case, fused: Fused) -> Outcome:
        out = first_pass(case, fused)
        n = len(case.members)
        k = case.settings.quorum or n // 2 + 1
        votes = np.stack([m.votes for m in case.members])
        backing = (votes == fused.labels[None, :]).sum(axis=0)
        labels = fused.labels.copy()
        for r, count in enumerate(backing):
            if count < k:
                labels[r] = -1
                out.status[r] = "unresolved"
                out.rules[r] = (
                    f"quorum: only {count} of {n} members back {fused.labels[r]}; {k} needed"
                )
            elif out.status[r] == "conflicted":
                out.status[r] = "resolved"
                out.rules[r] = f"quorum: {count} of {n} members back {fused.labels[r]} ({k} needed)"
        out.fused = replace(fused, labels=labels)
        return out
