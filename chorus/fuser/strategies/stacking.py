"""Stacking: a logistic-regression meta-model (`chorus models build`), served as the model
with capability `stack:<capability>` like any other, reads the members' probabilities side by
side and answers; the soft vote, saying so, when a member it was trained on is missing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.fuser.strategies.base import Fused, MemberScores, Task, agreement
from chorus.fuser.strategies.served import served_model, without_missing


class Stacking:
    name = "stacking"
    needs = declared.STRATEGIES[name]

    async def fuse_task(self, members: Sequence[MemberScores], task: Task) -> Fused:
        found = served_model(self.name, self.needs.model, task)
        fallback = without_missing(self.name, found, members)
        if fallback is not None:
            return fallback
        by_name = {m.model: m for m in members}
        assert task.client is not None
        x = np.hstack([by_name[n].probabilities for n in found.members]).astype(np.float32)
        probs = await task.client.scores(
            found.model, {found.input_name: x}, scores_output="probabilities",
            augment=False, ctx=task.ctx,
        )  # fmt: skip
        labels = np.argmax(probs, axis=1)
        confidence = probs[np.arange(len(labels)), labels]
        rules = [
            f"stacking: {found.model} over {list(found.members)} ({c:.3f})" for c in confidence
        ]
        return Fused(probs, labels, confidence, agreement(members, labels), rules)
