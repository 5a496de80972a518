"""The one-way path: members answer a fuser, which answers the router; two-hop when no
fuser takes the task."""

from __future__ import annotations

from dataclasses import replace

from chorus.router.metrics import RouterMetrics
from chorus.router.one_way import OneWay
from chorus.router.paths.base import Members, StagePath, StageTask
from chorus.router.reply import StageDone, stage_done


class OneWayPath:
    def __init__(
        self, one_way: OneWay, members: Members, metrics: RouterMetrics, fallback: StagePath
    ) -> None:
        self.one_way = one_way
        self.members = members
        self.metrics = metrics
        self.fallback = fallback
        """Where a task goes when no fuser took it (the two-hop path), with the time left."""

    async def run(self, task: StageTask) -> StageDone:
        m = self.members
        payloads = task.payloads or m.payloads(task.inputs, task.roster.first)
        call = m.fuse_call(
            task.roster, task.inputs, task.fusion_policy, task.conflict, task.ctx,
            inputs_in_bodies=True,
        )  # fmt: skip
        call.min_members = m.min_members
        ran = await self.one_way.run(task.roster.replicas, payloads, call, task.ctx)
        if ran is None:
            self.metrics.one_way_fallbacks.inc()
            return await self.fallback.run(replace(task, payloads=payloads))
        fan, fused = ran
        m.observe(fan)
        return stage_done(task.roster, fan, fused)
