"""The co-hosted path: the whole task to one replica of the group that holds every member, in
one message; the members run and are fused there (chorus.group). The group is called like a
model, `group:<name>`, through the same member calls: a group replica that is gone, fails or
runs late is retried or hedged on another, behind its breaker, within the task's deadline."""

from __future__ import annotations

from chorus.core.calls.payload import Payload
from chorus.core.context import CallContext
from chorus.core.errors import InvalidArgument, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.pb import wire_pb2
from chorus.router.one_way import fanned
from chorus.router.paths.base import Members, StageTask
from chorus.router.reply import StageDone, stage_done

PREFIX = "group:"
"""A group's name where a model's would be (chorus.infer.group:<name>), as chorus.group says."""


class GroupPath:
    def __init__(self, members: Members) -> None:
        self.members = members

    async def run(self, task: StageTask) -> StageDone:
        group = task.roster.group
        if group is None:
            raise Unavailable(f"capability {task.roster.capability!r}: no group replica holds it")
        name, replicas = group
        call = self.call(task)
        body = call.SerializeToString()
        limit = self.members.nc.max_payload
        if len(body) > limit:
            raise InvalidArgument(
                f"inputs: {len(body)} bytes exceed the mesh's {limit}-byte message limit; "
                "send fewer rows per task"
            )
        payload = Payload.of(body)
        reply = await self._ask(name, replicas, payload, task.ctx)
        fan = fanned(reply.fused)
        self.members.observe(fan)
        return stage_done(task.roster, fan, reply.fused)

    def call(self, task: StageTask) -> wire_pb2.FuseCall:
        """The fuser's task with the inputs always in it (the members run on them there) and
        the members the group is to run, with how to read each one's scores."""
        m = self.members
        call = m.fuse_call(task.roster, task.inputs, task.fusion_policy, task.conflict, task.ctx)
        if not call.inputs:
            call.inputs.extend(task.inputs)
        call.min_members = m.min_members
        for model, hb in task.roster.first.items():
            scores = hb.scores_for(task.roster.capability)
            call.expected.add(
                model=model, scores_output=scores.output, output_kind=scores.kind,
                temperature=scores.temperature,
            )  # fmt: skip
        return call

    async def _ask(
        self, name: str, replicas: list[Heartbeat], payload: Payload, ctx: CallContext
    ) -> wire_pb2.InferReply:
        calls = self.members.dispatcher.calls
        reply, _ = await calls.call(f"{PREFIX}{name}", replicas, payload.body, payload.digest, ctx)
        if not reply.HasField("fused"):
            raise Unavailable(
                f"group {name}: replica {reply.replica!r} answered with no fused reply"
            )
        return reply
