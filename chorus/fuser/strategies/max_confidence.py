"""Max confidence: on each row the single most confident member decides.

Useful when members are specialists: the one that recognises the input is sure of it while
the others spread their mass, and averaging would dilute the specialist's answer. It trusts
calibration blindly, so it is only as good as the members' probabilities are honest.

Per row the deciding member is the one with the highest top-class probability. Ties (exactly
equal probabilities) go to the higher `weight`, then the higher `priority`, then the member
listed first. A member with weight 0 has no say and never decides, unless every member's
weight is 0 (then all take part, as in the soft vote). The fused probabilities are the
deciding member's row, the label its top class, and the confidence its top probability; the
rule names the deciding model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.fuser.strategies.base import Fused, MemberScores, agreement, check_members


class MaxConfidence:
    name = "max_confidence"
    needs = declared.STRATEGIES[name]

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, _ = check_members(members)
        n = len(members)
        idx = np.arange(rows)
        stacked = np.stack([m.probabilities for m in members])  # [members, rows, classes]
        weights = np.array([m.weight for m in members], dtype=np.float64)
        eligible = weights > 0 if np.any(weights > 0) else np.ones(n, dtype=bool)

        top = stacked.max(axis=2).astype(np.float64)  # [members, rows]
        top = np.where(eligible[:, None], top, -np.inf)
        shape = top.shape
        order = np.broadcast_to(np.arange(n)[:, None], shape)
        weight_key = np.broadcast_to(-weights[:, None], shape)
        priority_key = np.broadcast_to(-np.array([m.priority for m in members])[:, None], shape)
        # lexsort sorts by the last key first: top probability (descending), weight, priority,
        # then member order; the first entry along the members axis is the decider.
        decider = np.lexsort((order, priority_key, weight_key, -top), axis=0)[0]

        probabilities = stacked[decider, idx]
        labels = np.argmax(probabilities, axis=1)
        confidence = top[decider, idx]
        at_top = top == confidence[None, :]  # [members, rows]: tied with the decider
        rules = []
        for r in range(rows):
            d = decider[r]
            rule = f"max_confidence: model {members[d].model!r} most confident ({top[d, r]:.3f})"
            tied = np.flatnonzero(at_top[:, r])
            if len(tied) > 1:
                same_weight = tied[weights[tied] == weights[d]]
                if len(same_weight) == 1:
                    by = "weight"
                elif sum(members[i].priority == members[d].priority for i in same_weight) == 1:
                    by = "priority"
                else:
                    by = "member order"
                rule += f", tie between {len(tied)} members broken by {by}"
            rules.append(rule)
        return Fused(
            probabilities.astype(np.float32), labels, confidence, agreement(members, labels), rules
        )
