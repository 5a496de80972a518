"""Negotiation: bounded rounds in which unsure dissenters take a second look.

Each round, on the rows still conflicted, every member that votes against the current answer
with confidence below `concede_below` is asked again with test-time augmentation (its own,
declared in its manifest). Its second opinion replaces the first on those rows; the batch is
fused again. A member whose second opinion joins the answer has conceded. Rounds stop at
consensus (no row conflicted), when nobody is unsure enough to ask, or after `max_rounds`.
Members sure of a dissent are never asked: their conviction is evidence, not noise.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from chorus.core import needs as declared
from chorus.core.errors import FailedPrecondition
from chorus.fuser.conflict import detect
from chorus.fuser.kinds import as_scores
from chorus.fuser.policies.base import Case, Outcome, first_pass, rows_of
from chorus.fuser.strategies import Fused


class Negotiate:
    name = "negotiate"
    needs = declared.CONFLICT_POLICIES[name]

    async def resolve(self, case: Case, fused: Fused) -> Outcome:
        out = first_pass(case, fused)
        if case.client is None:
            raise FailedPrecondition("conflict.negotiate: this fuser cannot reach the members")
        if case.regression:
            raise FailedPrecondition(
                f"conflict.negotiate: {case.capability!r} is a regression, and negotiation "
                "re-asks classifiers' votes; use quorum, arbiter or escalate"
            )
        members = list(case.members)
        conceded: dict[int, list[str]] = {}
        settled_in: dict[int, int] = {}
        report = out.report
        for round_no in range(1, case.settings.max_rounds + 1):
            open_rows = np.flatnonzero(report.conflicted)
            if open_rows.size == 0:
                break
            asked = False
            for i, m in enumerate(members):
                top = m.probabilities.max(axis=1)
                unsure = [
                    int(r)
                    for r in open_rows
                    if m.votes[r] != fused.labels[r] and top[r] < case.settings.concede_below
                ]
                if not unsure:
                    continue
                asked = True
                raw = await case.client.scores(
                    m.model, rows_of(case.inputs, unsure),
                    scores_output=case.scores_outputs.get(m.model, "probabilities"),
                    augment=True, ctx=case.ctx,
                )  # fmt: skip
                second = as_scores(raw, m.output_kind, m.temperature, field=m.model)
                probs = m.probabilities.copy()
                probs[unsure] = second
                members[i] = replace(m, probabilities=probs)
                for j, r in enumerate(unsure):
                    if int(np.argmax(second[j])) == fused.labels[r]:
                        conceded.setdefault(r, []).append(m.model)
            if not asked:
                break
            fused = await case.fuse(members)
            report = detect(members, fused, case.thresholds, regression=case.regression)
            for row in open_rows.tolist():
                if not report.conflicted[row]:
                    settled_in.setdefault(row, round_no)

        out = first_pass(replace(case, members=members), fused)
        for r in range(len(out.status)):
            who = ", ".join(conceded.get(r, [])) or "nobody"
            if r in settled_in:
                out.status[r] = "resolved"
                out.rounds[r] = settled_in[r]
                out.rules[r] = (
                    f"negotiate: consensus in round {settled_in[r]} ({who} conceded); "
                    f"{fused.rules[r]}"
                )
            elif out.status[r] == "conflicted":
                out.rounds[r] = case.settings.max_rounds
                out.rules[r] = (
                    f"negotiate: no consensus after {case.settings.max_rounds} rounds "
                    f"({who} conceded); {out.rules[r]}"
                )
        return out
