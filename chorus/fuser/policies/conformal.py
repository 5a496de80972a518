"""Conformal: each row gets the labels (or the interval) that hold the truth with the asked
coverage, calibrated on held-out rows (fuser.conformal); a classification row whose set is
not exactly one label is conflicted and goes to the follow-up: flagged, the arbiter, or
people. Regression rows carry their interval and keep the spread rule for conflicts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from chorus.core import needs as declared
from chorus.core.errors import FailedPrecondition, InvalidArgument
from chorus.fuser.conformal import intervals, label_sets, threshold
from chorus.fuser.policies.arbiter import Arbiter
from chorus.fuser.policies.base import Case, Outcome, first_pass
from chorus.fuser.policies.escalate import Escalate
from chorus.fuser.strategies import Fused


class Conformal:
    name = "conformal"
    needs = declared.CONFLICT_POLICIES[name]
    follow_ups = ("", "none", *needs.follow_ups)

    async def resolve(self, case: Case, fused: Fused) -> Outcome:
        then = case.settings.then
        if then not in self.follow_ups:
            raise InvalidArgument(
                f"conflict.then: unknown follow-up {then!r}; expected one of "
                f"{[f for f in self.follow_ups if f]} or empty (flag the rows)"
            )
        scores = case.calibration
        if scores is None or len(scores) == 0:
            raise FailedPrecondition(
                f"conflict.conformal: no calibration for {case.capability!r} fused by "
                f"{case.strategy!r}; run `chorus fusion calibrate --capability "
                f"{case.capability} --policy {case.strategy}` on held-out rows first"
            )
        coverage = case.settings.coverage
        q = threshold(scores, coverage)
        out = first_pass(case, fused)
        out.coverage, out.calibration_rows = coverage, len(scores)
        promise = f"conformal {coverage:.0%} over {len(scores)} rows"
        if case.regression:
            lower, upper = intervals(fused.probabilities, q)
            out.intervals = (lower, upper)
            for r in range(len(out.rules)):
                out.rules[r] += f"; {promise}: [{lower[r, 0]:.4g}, {upper[r, 0]:.4g}]"
        else:
            sets = label_sets(fused.probabilities, q)
            out.prediction_sets = sets
            conflicted = np.array([len(s) != 1 for s in sets])
            reasons = tuple(
                f"set {s} holds {len(s)} labels" if c else ""
                for s, c in zip(sets, conflicted, strict=True)
            )
            out.report = replace(out.report, conflicted=conflicted, reasons=reasons)
            out.status = ["conflicted" if c else "agreed" for c in conflicted]
            out.rules = [
                f"{rule}; {promise}: set {s}" + ("; conflicted" if c else "")
                for rule, s, c in zip(fused.rules, sets, conflicted, strict=True)
            ]
        rows = [r for r, s in enumerate(out.status) if s == "conflicted"]
        if then == "arbiter":
            return await Arbiter().decide(case, out, rows)
        if then == "escalate":
            return await Escalate().decide(case, out, rows)
        return out
