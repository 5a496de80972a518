"""The cascade path: the cheapest members first, more only for rows still unsure."""

from __future__ import annotations

import numpy as np

from chorus.core.codec import from_tensor, to_tensor
from chorus.pb import task_pb2
from chorus.router.cascade import CascadeConfig, run_cascade
from chorus.router.paths.base import Members, StageTask
from chorus.router.reply import StageDone, cascade_done
from chorus.router.roster import Roster
from chorus.router.validate import check_cascade


class CascadePath:
    def __init__(self, members: Members) -> None:
        self.members = members

    async def run(self, task: StageTask) -> StageDone:
        """Cheapest members first: cost is each model's measured service time (heartbeats)."""
        roster, ctx, calls = task.roster, task.ctx, self.members
        check_cascade(task.cascade, roster)
        arrays = {t.name: from_tensor(t) for t in task.inputs}
        rows = next(iter(arrays.values())).shape[0]
        costs = {m: r[0].ewma_ms for m, r in roster.replicas.items()}
        last: dict[int, task_pb2.RowDecision] = {}
        probs: dict[int, bytes] = {}

        async def ask(members: list[str], open_rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
            sub = Roster(roster.capability, {m: roster.replicas[m] for m in members})
            tensors = [to_tensor(n, np.ascontiguousarray(a[open_rows])) for n, a in arrays.items()]
            fan = await calls.fan_out(sub, calls.payloads(tensors, sub.first), ctx)
            fused = await calls.fuse(sub, fan, tensors, task.fusion_policy, task.conflict, ctx)
            p = from_tensor(fused.probabilities)
            for i, r in enumerate(open_rows):
                last[r] = fused.rows[i]
                probs[r] = p[i].tobytes()
            return (
                np.array([x.label for x in fused.rows], dtype=np.int64),
                np.array([x.confidence for x in fused.rows], dtype=np.float64),
            )

        config = CascadeConfig(threshold=task.cascade.threshold, steps=tuple(task.cascade.steps))
        done = await run_cascade(list(roster.replicas), costs, ask, config, rows=rows)
        return cascade_done(roster, done, task.cascade.threshold, last, probs, rows)
