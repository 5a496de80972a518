"""What every stage path shares: one stage's task, the interface, and the calls to members
and fuser (with the member metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nats.aio.client import Client

from chorus.core import needs
from chorus.core.calls.payload import Payload
from chorus.core.calls.quorum import too_few_members
from chorus.core.context import CallContext
from chorus.core.errors import InvalidArgument, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.core.wire import REGRESSION_POLICY
from chorus.pb import task_pb2, tensor_pb2, wire_pb2
from chorus.router import dispatch
from chorus.router.dispatch import Dispatcher, FanOut
from chorus.router.metrics import RouterMetrics
from chorus.router.reply import StageDone
from chorus.router.roster import Roster

Shared = dict[tuple[str, str], "asyncio.Future[tuple[wire_pb2.InferReply, float]]"] | None
"""One pipeline run's calls to multi-task models, shared by the stages that ask the same."""


@dataclass(frozen=True)
class StageTask:
    """One stage to run: who answers, on what, fused how, by when. `payloads`: the members'
    calls when already encoded ({}: the path encodes them); `shared`: a pipeline run's."""

    roster: Roster
    inputs: Sequence[tensor_pb2.Tensor]
    fusion_policy: str
    conflict: task_pb2.ConflictPolicy
    cascade: task_pb2.Cascade
    ctx: CallContext
    payloads: dict[str, Payload]
    shared: Shared = None


class StagePath(Protocol):
    async def run(self, task: StageTask) -> StageDone: ...


class Members:
    """The router's calls for a stage: encode, fan out to the members, hand the fuser."""

    def __init__(
        self,
        nc: Client,
        dispatcher: Dispatcher,
        metrics: RouterMetrics,
        *,
        default_policy: str,
        default_conflict_policy: str,
        min_members: int,
    ) -> None:
        self.nc = nc
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.default_policy = default_policy
        self.default_conflict_policy = default_conflict_policy
        self.min_members = min_members

    def payloads(
        self, inputs: Sequence[tensor_pb2.Tensor], members: dict[str, Heartbeat]
    ) -> dict[str, Payload]:
        """Each member's InferCall, holding only the inputs it takes (shared when equal),
        encoded and hashed once for whichever path carries it."""
        by_names: dict[tuple[str, ...], Payload] = {}
        payloads = {}
        for model, hb in members.items():
            names = tuple(sorted(s.name for s in hb.inputs))
            if names not in by_names:
                tensors = [t for t in inputs if t.name in names]
                body = wire_pb2.InferCall(inputs=tensors).SerializeToString()
                if len(body) > self.nc.max_payload:
                    raise InvalidArgument(
                        f"inputs: {len(body)} bytes exceed the mesh's {self.nc.max_payload}-byte "
                        "message limit; send fewer rows per task"
                    )
                by_names[names] = Payload.of(body)
            payloads[model] = by_names[names]
        return payloads

    async def fan_out(
        self, roster: Roster, payloads: dict[str, Payload], ctx: CallContext, shared: Shared = None
    ) -> FanOut:
        fan = await self.dispatcher.fan_out(
            roster.replicas, payloads, ctx, roster.capability, shared
        )
        self.observe(fan)
        needed = min(self.min_members, len(payloads))
        if len(fan.replies) < needed:
            raise too_few_members(roster.capability, fan.errors, len(fan.replies), needed)
        return fan

    def observe(self, fan: FanOut) -> None:
        for model, ms in fan.latency_ms.items():
            self.metrics.member_latency.labels(model).observe(ms / 1000)
        for model, err in fan.errors.items():
            self.metrics.member_errors.labels(model, err.code_name.lower()).inc()

    def fuse_call(
        self,
        roster: Roster,
        inputs: Sequence[tensor_pb2.Tensor],
        fusion_policy: str,
        conflict: task_pb2.ConflictPolicy,
        ctx: CallContext,
        *,
        inputs_in_bodies: bool = False,
    ) -> wire_pb2.FuseCall:
        """The fuser's task, less the members' scores. `inputs_in_bodies`: the members'
        bodies go with it (the one-way path), and the fuser reads the inputs from those."""
        call = wire_pb2.FuseCall(
            policy=fusion_policy
            or (REGRESSION_POLICY if roster.regression else self.default_policy),
            labels=roster.labels,
            capability=roster.capability,
            task_id=ctx.task_id,
            conflict=conflict,
        )
        if not call.conflict.name:
            call.conflict.name = self.default_conflict_policy
        if needs.sends_inputs(call.policy, call.conflict.name, call.conflict.then):
            if inputs_in_bodies:
                call.inputs_in_bodies = True
            else:
                call.inputs.extend(inputs)
        return call

    async def fuse(
        self,
        roster: Roster,
        fan: FanOut,
        inputs: Sequence[tensor_pb2.Tensor],
        fusion_policy: str,
        conflict: task_pb2.ConflictPolicy,
        ctx: CallContext,
    ) -> wire_pb2.FuseReply:
        first = roster.first
        call = self.fuse_call(roster, inputs, fusion_policy, conflict, ctx)
        for model, reply in fan.replies.items():
            scores = first[model].scores_for(roster.capability)
            call.members.add(
                model=model,
                version=reply.version,
                probabilities=_output(reply, scores.output),
                scores_output=scores.output,
                output_kind=scores.kind,
                temperature=scores.temperature,
            )
        return await dispatch.fuse(
            self.dispatcher.transport,
            call,
            ctx,
            attempt_timeout_s=self.dispatcher.policy.calls.attempt_timeout_s,
        )


def _output(reply: wire_pb2.InferReply, name: str) -> tensor_pb2.Tensor:
    for t in reply.outputs:
        if t.name == name:
            return t
    raise Unavailable(f"model {reply.model}: reply has no {name!r} output")
