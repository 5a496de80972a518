"""Median (regression): the median of the members' predicted values, per row and output.

One member far off moves a mean by its error over n; it does not move the median at all while
fewer than half the members are off. Use it when a member can fail badly (a broken version, an
input outside its training range) rather than merely be noisy.

The median is unweighted, with np.median semantics: with an even number of members it is the
mean of the two middle values. Weight still matters in two ways: members of weight 0 have no
say and are left out (unless every weight is 0, then all take part), and the reported spread
is the weighted one shared by every regression strategy. Spread, confidence = 1 / (1 + spread),
agreement (share of members within one spread of the fused value) and labels (-1) are defined
in `weighted_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.fuser.strategies.base import Fused, MemberScores, member_weights
from chorus.fuser.strategies.weighted_mean import check_values, regression_fused


class Median:
    name = "median"
    needs = declared.STRATEGIES[name]

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        values = check_values(members)
        weights = member_weights(members)
        voting = weights > 0  # all of them when every weight was 0 (member_weights gives 1s)
        fused = np.median(values[voting], axis=0)
        how = f"median of {int(voting.sum())} of {len(members)} members"
        return regression_fused(self.name, values, weights, fused, how)
