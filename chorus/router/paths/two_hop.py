"""The two-hop path: the router asks the members, then hands their scores to a fuser."""

from __future__ import annotations

from chorus.router.paths.base import Members, StageTask
from chorus.router.reply import StageDone, stage_done


class TwoHop:
    def __init__(self, members: Members) -> None:
        self.members = members

    async def run(self, task: StageTask) -> StageDone:
        m = self.members
        payloads = task.payloads or m.payloads(task.inputs, task.roster.first)
        fan = await m.fan_out(task.roster, payloads, task.ctx, task.shared)
        fused = await m.fuse(
            task.roster, fan, task.inputs, task.fusion_policy, task.conflict, task.ctx
        )
        return stage_done(task.roster, fan, fused)
