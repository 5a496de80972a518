"""Arbiter: a designated model, not a member, decides the conflicted rows (for regression,
its value replaces the fused one)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from chorus.core import needs as declared
from chorus.core.errors import FailedPrecondition
from chorus.fuser.kinds import REGRESSION, as_scores
from chorus.fuser.policies.base import ActsOnConflicts, Case, Outcome, rows_of


class Arbiter(ActsOnConflicts):
    name = "arbiter"
    needs = declared.CONFLICT_POLICIES[name]

    async def decide(self, case: Case, out: Outcome, rows: list[int]) -> Outcome:
        """The arbiter's answer for `rows` of an outcome another step flagged."""
        if not rows:
            return out
        fused = out.fused
        arbiter = case.settings.arbiter
        if not arbiter or case.client is None:
            raise FailedPrecondition(
                f"conflict.arbiter: no arbiter model for {case.capability!r}; name one or run a "
                f"model with capability 'arbiter:{case.capability}'"
            )
        scores = await case.client.scores(
            arbiter, rows_of(case.inputs, rows), scores_output="probabilities",
            augment=False, ctx=case.ctx,
        )  # fmt: skip
        probs, labels, confidence = (
            fused.probabilities.copy(),
            fused.labels.copy(),
            fused.confidence.copy(),
        )
        if case.regression:
            values = as_scores(scores, REGRESSION, 1.0, field=f"arbiter {arbiter}")
            for i, r in enumerate(rows):
                probs[r] = values[i]
                out.status[r] = "resolved"
                why = out.report.reasons[r] or out.rules[r]
                out.rules[r] = f"arbiter: {arbiter} decided {values[i, 0]:.4g} ({why})"
            out.fused = replace(fused, probabilities=probs)
            return out
        for i, r in enumerate(rows):
            labels[r] = int(np.argmax(scores[i]))
            probs[r] = scores[i]
            confidence[r] = float(scores[i][labels[r]])
            out.status[r] = "resolved"
            out.rules[r] = f"arbiter: {arbiter} decided {labels[r]} ({confidence[r]:.2f})"
        out.fused = replace(fused, probabilities=probs, labels=labels, confidence=confidence)
        return out
