"""Tasks: check the input, fan out to the capability's models, fuse, answer; or run a
pipeline of such stages; or a cascade that asks more members only where it must."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from nats.aio.client import Client
from opentelemetry.trace import SpanKind

from chorus import needs, tracing
from chorus.calls.clock import SYSTEM, Clock
from chorus.calls.payload import Payload
from chorus.calls.quorum import too_few_members
from chorus.codec import from_tensor, to_tensor
from chorus.context import CallContext, Priority
from chorus.errors import ChorusError, InvalidArgument, NotFound, Unavailable
from chorus.heartbeat import Heartbeat
from chorus.pb import task_pb2, tensor_pb2, wire_pb2
from chorus.registry import Registry
from chorus.router import dispatch
from chorus.router.cascade import CascadeConfig, run_cascade
from chorus.router.dispatch import Dispatcher, FanOut
from chorus.router.metrics import RouterMetrics
from chorus.router.one_way import OneWay
from chorus.router.pipeline import Pipeline, Stage, run_pipeline
from chorus.router.plan_routing import PlanSplits
from chorus.scheduler import PriorityScheduler
from chorus.spec import check_tensor
from chorus.wire import REGRESSION_POLICY

RECENTLY_OFFERED_S = 10.0
"""A capability offered this recently and silent now is UNAVAILABLE (and waited for), not
NOT_FOUND: long enough to cover a client moving to another NATS node (about 3 s here)."""
WAIT_POLL_S = 0.05
Shared = dict[tuple[str, str], "asyncio.Future[tuple[wire_pb2.InferReply, float]]"] | None
"""One pipeline run's calls to multi-task models, shared by the stages that ask the same."""


@dataclass(frozen=True)
class Roster:
    """Who answers one stage: each member model's live replicas, and a heartbeat for its specs."""

    capability: str
    replicas: dict[str, list[Heartbeat]]

    @property
    def first(self) -> dict[str, Heartbeat]:
        return {m: r[0] for m, r in self.replicas.items()}

    @property
    def labels(self) -> Sequence[str]:
        """The capability's class labels (a multi-task model's per head)."""
        return _labels(next(iter(self.replicas.values()))[0], self.capability)

    @property
    def regression(self) -> bool:
        """Members answer with values, not classes (the fuser refuses a mix)."""
        return all(hb.regression for hb in self.first.values())


class TaskRunner:
    def __init__(
        self,
        nc: Client,
        registry: Registry,
        metrics: RouterMetrics,
        dispatcher: Dispatcher,
        scheduler: PriorityScheduler,
        *,
        default_budget_s: float,
        default_policy: str,
        max_rows: int,
        default_conflict_policy: str = "none",
        min_members: int = 1,
        pipelines: dict[str, Pipeline] | None = None,
        splits: PlanSplits | None = None,
        max_tensor_elements: int = 1 << 22,
        max_deadline_s: float = 3600.0,
        one_way: OneWay | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.nc = nc
        self.registry = registry
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.default_budget_s = default_budget_s
        self.default_policy = default_policy
        self.max_rows = max_rows
        self.default_conflict_policy = default_conflict_policy
        self.min_members = min_members
        self.pipelines = pipelines or {}
        self.splits = splits
        self.max_tensor_elements = max_tensor_elements
        self.max_deadline_s = max_deadline_s
        self.one_way = one_way
        """The router -> members -> fuser -> router path for single-stage tasks (None: off)."""
        self.clock = clock
        """Task latencies and waits for heartbeats; the registry's clock (monotonic)."""

    async def submit(
        self,
        req: task_pb2.SubmitRequest,
        grpc_remaining_s: float | None,
        metadata: dict[str, str] | None = None,
    ) -> task_pb2.SubmitResponse:
        """`metadata` is the caller's gRPC metadata; a `traceparent` there continues its trace."""
        start = self.clock.monotonic()
        priority = Priority.from_wire(req.priority)
        label = (req.pipeline and f"pipeline:{req.pipeline}") or req.capability
        outcome = "ok"
        in_flight = self.metrics.in_flight.labels(priority.label)
        in_flight.inc()
        try:
            with tracing.span("chorus.task", metadata, kind=SpanKind.SERVER, capability=label):
                return await self._submit(req, priority, grpc_remaining_s)
        except ChorusError as err:
            outcome = err.code_name.lower()
            raise
        finally:
            in_flight.dec()
            self.metrics.tasks.labels(label, priority.label, outcome).inc()
            if outcome == "ok":
                self.metrics.latency.labels(label).observe(self.clock.monotonic() - start)

    def validate(self, req: task_pb2.SubmitRequest) -> None:
        """Everything that can be checked before a task is accepted (for async submission)."""
        Priority.from_wire(req.priority)
        if req.pipeline:
            self._pipeline(req)
        else:
            self._check_inputs(req.inputs, self.roster(req.capability))

    async def _submit(
        self, req: task_pb2.SubmitRequest, priority: Priority, grpc_remaining_s: float | None
    ) -> task_pb2.SubmitResponse:
        if req.pipeline:
            pipeline = self._pipeline(req)
            ctx = self._context(req, priority, grpc_remaining_s)
            return await self.scheduler.run(ctx, lambda: self._run_pipeline(req, pipeline, ctx))
        ctx = self._context(req, priority, grpc_remaining_s)
        roster = await self.live_roster(req.capability, ctx)
        if self.splits is not None:
            chosen = self.splits.pick(req.capability, priority.label, set(roster.replicas))
            if chosen is not None:
                roster = Roster(roster.capability, {chosen: roster.replicas[chosen]})
        self._check_inputs(req.inputs, roster)
        payloads = self._payloads(req.inputs, roster.first) if not req.cascade.threshold else {}

        async def run() -> task_pb2.SubmitResponse:
            stage = await self._stage(
                roster, req.inputs, req.fusion_policy, req.conflict, req.cascade, ctx, payloads
            )
            return task_pb2.SubmitResponse(
                task_id=ctx.task_id,
                capability=req.capability,
                outputs=stage.outputs,
                labels=stage.labels,
                members=stage.result.members,
                explanation=stage.result.explanation,
                cascade_depth=stage.depth,
            )

        return await self.scheduler.run(ctx, run)

    def _context(
        self, req: task_pb2.SubmitRequest, priority: Priority, grpc_remaining_s: float | None
    ) -> CallContext:
        if req.deadline_ms > self.max_deadline_s * 1000:
            raise InvalidArgument(
                f"deadline_ms: {req.deadline_ms} is beyond the router's limit of "
                f"{self.max_deadline_s * 1000:.0f} ms; use SubmitAsync for long work"
            )
        budget = req.deadline_ms / 1000 if req.deadline_ms else self.default_budget_s
        if grpc_remaining_s is not None:
            budget = min(budget, grpc_remaining_s)
        return CallContext.start(req.task_id or uuid.uuid4().hex, priority, budget)

    def roster(self, capability: str) -> Roster:
        """NOT_FOUND for a capability no model offers; UNAVAILABLE for one offered within
        RECENTLY_OFFERED_S (its replicas' heartbeats stopped: a NATS node lost, a restart)."""
        if not capability:
            raise InvalidArgument(
                "capability: empty; expected a capability such as 'classify/digits'"
            )
        now = self.clock.monotonic()
        replicas = self.registry.models_for(capability, now)
        if not replicas:
            ago = self.registry.offered_s_ago(capability, now)
            if ago <= RECENTLY_OFFERED_S:
                raise Unavailable(
                    f"capability {capability!r}: no heartbeat from its models for {ago:.1f} s "
                    "(a NATS node lost or the models restarting); retry"
                )
            live = self.registry.capabilities(now) or ["none"]
            raise NotFound(
                f"capability {capability!r}: no live model offers it "
                f"(live capabilities: {', '.join(live)})"
            )
        return Roster(capability, replicas)

    async def live_roster(self, capability: str, ctx: CallContext) -> Roster:
        """`roster`, but a capability whose models went quiet a moment ago is waited for (up to
        half the task's time left) instead of failed: the router's own NATS connection moving
        to another node silences every heartbeat for a few seconds."""
        give_up = self.clock.monotonic() + min(ctx.remaining_s() / 2, RECENTLY_OFFERED_S)
        while True:
            try:
                return self.roster(capability)
            except Unavailable:
                if self.clock.monotonic() + WAIT_POLL_S > give_up:
                    raise
            await self.clock.sleep(WAIT_POLL_S)

    def _pipeline(self, req: task_pb2.SubmitRequest) -> Pipeline:
        pipeline = self.pipelines.get(req.pipeline)
        if pipeline is None:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise NotFound(f"pipeline: unknown pipeline {req.pipeline!r} (known: {known})")
        names = sorted(t.name for t in req.inputs)
        if names != sorted(pipeline.inputs):
            raise InvalidArgument(
                f"inputs: pipeline {pipeline.name!r} takes {sorted(pipeline.inputs)}, got {names}"
            )
        return pipeline

    async def _run_pipeline(
        self, req: task_pb2.SubmitRequest, pipeline: Pipeline, ctx: CallContext
    ) -> task_pb2.SubmitResponse:
        results: dict[str, task_pb2.StageResult] = {}
        shared: Shared = {}

        async def run_stage(stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            tensors = [to_tensor(n, a) for n, a in inputs.items()]
            roster = await self.live_roster(stage.capability, ctx)
            self._check_inputs(tensors, roster)
            conflict = task_pb2.ConflictPolicy(**(stage.conflict or {}))
            start = self.clock.monotonic()
            done = await self._stage(
                roster, tensors, stage.fusion_policy or "", conflict, task_pb2.Cascade(), ctx, {},
                shared,
            )  # fmt: skip
            done.result.name = stage.name
            done.result.latency_ms = (self.clock.monotonic() - start) * 1000
            results[stage.name] = done.result
            return {t.name: from_tensor(t) for t in done.outputs}

        arrays = {t.name: from_tensor(t) for t in req.inputs}
        ran = await run_pipeline(pipeline, arrays, run_stage)
        return task_pb2.SubmitResponse(
            task_id=ctx.task_id,
            capability=f"pipeline:{pipeline.name}",
            outputs=[to_tensor(n, np.asarray(a)) for n, a in ran.outputs.items()],
            stages=[results[name] for name in ran.order],
            explanation=task_pb2.Explanation(policy=f"pipeline {pipeline.name}"),
        )

    async def _stage(
        self,
        roster: Roster,
        inputs: Sequence[tensor_pb2.Tensor],
        fusion_policy: str,
        conflict: task_pb2.ConflictPolicy,
        cascade: task_pb2.Cascade,
        ctx: CallContext,
        payloads: dict[str, Payload],
        shared: Shared = None,
    ) -> StageDone:
        if cascade.threshold and roster.regression:
            raise InvalidArgument(
                f"cascade: capability {roster.capability!r} is a regression; cascades stop on "
                "a classifier's confidence"
            )
        if cascade.threshold:
            return await self._cascade(roster, inputs, fusion_policy, conflict, cascade, ctx)
        payloads = payloads or self._payloads(inputs, roster.first)
        if self.one_way is not None and shared is None and not _multi_task(roster):
            done = await self._one_way(roster, payloads, inputs, fusion_policy, conflict, ctx)
            if done is not None:
                return done
        fan = await self._fan_out(roster, payloads, ctx, shared)
        fused = await self._fuse(roster, fan, inputs, fusion_policy, conflict, ctx)
        return self._done(roster, fan, fused, task_pb2.StageResult(capability=roster.capability))

    async def _fan_out(
        self, roster: Roster, payloads: dict[str, Payload], ctx: CallContext, shared: Shared = None
    ) -> FanOut:
        fan = await self.dispatcher.fan_out(
            roster.replicas, payloads, ctx, roster.capability, shared
        )
        self._observe(fan)
        needed = min(self.min_members, len(payloads))
        if len(fan.replies) < needed:
            raise too_few_members(roster.capability, fan.errors, len(fan.replies), needed)
        return fan

    def _observe(self, fan: FanOut) -> None:
        for model, ms in fan.latency_ms.items():
            self.metrics.member_latency.labels(model).observe(ms / 1000)
        for model, err in fan.errors.items():
            self.metrics.member_errors.labels(model, err.code_name.lower()).inc()

    def _fuse_call(
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

    async def _fuse(
        self,
        roster: Roster,
        fan: FanOut,
        inputs: Sequence[tensor_pb2.Tensor],
        fusion_policy: str,
        conflict: task_pb2.ConflictPolicy,
        ctx: CallContext,
    ) -> wire_pb2.FuseReply:
        first = roster.first
        call = self._fuse_call(roster, inputs, fusion_policy, conflict, ctx)
        for model, reply in fan.replies.items():
            hb = first[model]
            call.members.add(
                model=model,
                version=reply.version,
                probabilities=_output(reply, hb.scores_output),
                scores_output=hb.scores_output,
                output_kind=hb.output_kind,
                temperature=hb.temperature,
            )
        return await dispatch.fuse(
            self.dispatcher.transport,
            call,
            ctx,
            attempt_timeout_s=self.dispatcher.policy.calls.attempt_timeout_s,
        )

    async def _one_way(
        self,
        roster: Roster,
        payloads: dict[str, Payload],
        inputs: Sequence[tensor_pb2.Tensor],
        fusion_policy: str,
        conflict: task_pb2.ConflictPolicy,
        ctx: CallContext,
    ) -> StageDone | None:
        """The stage over the one-way path; None when no fuser took it (go two-hop)."""
        assert self.one_way is not None
        call = self._fuse_call(roster, inputs, fusion_policy, conflict, ctx, inputs_in_bodies=True)
        call.min_members = self.min_members
        ran = await self.one_way.run(roster.replicas, payloads, call, ctx)
        if ran is None:
            self.metrics.one_way_fallbacks.inc()
            return None
        fan, fused = ran
        self._observe(fan)
        return self._done(roster, fan, fused, task_pb2.StageResult(capability=roster.capability))

    def _done(
        self, roster: Roster, fan: FanOut, fused: wire_pb2.FuseReply, result: task_pb2.StageResult
    ) -> StageDone:
        if roster.regression:
            result.outputs.append(_value(fused.probabilities))
        else:
            labels = np.array([r.label for r in fused.rows], dtype=np.int64)
            result.outputs.add(
                name="label", datatype="INT64", shape=labels.shape, raw=labels.tobytes()
            )
            result.outputs.append(fused.probabilities)
        result.explanation.CopyFrom(
            task_pb2.Explanation(
                policy=fused.policy,
                members=list(fan.replies),
                missing={m: e.message for m, e in fan.errors.items()},
                rows=fused.rows,
                weights=fused.weights,
                conflict_policy=fused.conflict_policy,
                temperatures=fused.temperatures,
                coverage=fused.coverage,
                calibration_rows=fused.calibration_rows,
            )
        )
        for model, reply in fan.replies.items():
            result.members.add(
                model=model,
                version=reply.version,
                replica=reply.replica,
                outputs=reply.outputs,
                latency_ms=fan.latency_ms[model],
            )
        return StageDone(result, () if roster.regression else roster.labels)

    async def _cascade(
        self,
        roster: Roster,
        inputs: Sequence[tensor_pb2.Tensor],
        fusion_policy: str,
        conflict: task_pb2.ConflictPolicy,
        cascade: task_pb2.Cascade,
        ctx: CallContext,
    ) -> StageDone:
        """Cheapest members first: cost is each model's measured service time (heartbeats)."""
        arrays = {t.name: from_tensor(t) for t in inputs}
        rows = next(iter(arrays.values())).shape[0]
        costs = {m: r[0].ewma_ms for m, r in roster.replicas.items()}
        last: dict[int, task_pb2.RowDecision] = {}
        probs: dict[int, bytes] = {}
        classes = len(roster.labels)

        async def ask(members: list[str], open_rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
            sub = Roster(roster.capability, {m: roster.replicas[m] for m in members})
            tensors = [to_tensor(n, np.ascontiguousarray(a[open_rows])) for n, a in arrays.items()]
            fan = await self._fan_out(sub, self._payloads(tensors, sub.first), ctx)
            fused = await self._fuse(sub, fan, tensors, fusion_policy, conflict, ctx)
            p = from_tensor(fused.probabilities)
            for i, r in enumerate(open_rows):
                last[r] = fused.rows[i]
                probs[r] = p[i].tobytes()
            return (
                np.array([x.label for x in fused.rows], dtype=np.int64),
                np.array([x.confidence for x in fused.rows], dtype=np.float64),
            )

        config = CascadeConfig(threshold=cascade.threshold, steps=tuple(cascade.steps))
        done = await run_cascade(list(roster.replicas), costs, ask, config, rows=rows)
        result = task_pb2.StageResult(capability=roster.capability)
        labels = np.asarray(done.labels, dtype=np.int64)
        result.outputs.add(name="label", datatype="INT64", shape=labels.shape, raw=labels.tobytes())
        result.outputs.add(
            name="probabilities", datatype="FP32", shape=[rows, classes],
            raw=b"".join(probs[r] for r in range(rows)),
        )  # fmt: skip
        steps = "; ".join(f"{len(s.rows_asked)} rows to {list(s.members)}" for s in done.steps)
        result.explanation.CopyFrom(
            task_pb2.Explanation(
                policy=f"cascade at {cascade.threshold:g}: {steps}",
                members=list(done.members),
                rows=[last[r] for r in range(rows)],
            )
        )
        return StageDone(result, roster.labels, [int(d) for d in done.depth])

    def _payloads(
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

    async def feedback(self, req: task_pb2.FeedbackRequest) -> task_pb2.FeedbackResponse:
        if not req.task_id:
            raise InvalidArgument("task_id: empty; send the task_id a Submit returned")
        if not req.labels and not req.values:
            raise InvalidArgument(
                "labels: empty; send the true class of every row (or `values` for regression)"
            )
        ctx = CallContext.start(req.task_id, Priority.NORMAL, self.default_budget_s)
        return await dispatch.feedback(self.dispatcher.transport, req, ctx)

    def _check_inputs(self, inputs: Sequence[tensor_pb2.Tensor], roster: Roster) -> None:
        capability = roster.capability
        if not inputs:
            raise InvalidArgument("inputs: empty; send at least one input tensor")
        names = [t.name for t in inputs]
        for t in inputs:
            elements = math.prod(int(d) for d in t.shape)
            if elements > self.max_tensor_elements:
                raise InvalidArgument(
                    f"inputs[{t.name!r}]: shape {list(t.shape)} has {elements} elements; "
                    f"the router takes at most {self.max_tensor_elements}"
                )
        if len(set(names)) != len(names):
            raise InvalidArgument(f"inputs: duplicate tensor names in {names}")
        arrays = {t.name: from_tensor(t) for t in inputs}
        taken: set[str] = set()
        for hb in roster.first.values():
            expected = {s.name: s for s in hb.inputs}
            if not set(expected) <= set(arrays):
                raise InvalidArgument(
                    f"inputs: model {hb.model} of capability {capability!r} takes "
                    f"{sorted(expected)}, got {sorted(arrays)}"
                )
            for name, spec in expected.items():
                check_tensor(spec, arrays[name], field=f"inputs[{name!r}]")
            taken |= set(expected)
        unused = sorted(set(arrays) - taken)
        if unused:
            raise InvalidArgument(
                f"inputs: {unused} taken by no model of capability {capability!r} "
                f"(they take {sorted(taken)})"
            )
        rows = {a.shape[0] for a in arrays.values() if a.ndim}
        if len(rows) > 1:
            raise InvalidArgument(f"inputs: tensors disagree on the number of rows: {sorted(rows)}")
        if rows and max(rows) > self.max_rows:
            raise InvalidArgument(
                f"inputs: {max(rows)} rows exceed the router's max_rows of {self.max_rows}; "
                "split the task"
            )


@dataclass
class StageDone:
    result: task_pb2.StageResult
    labels: Sequence[str]
    depth: list[int] | None = None

    @property
    def outputs(self) -> Sequence[tensor_pb2.Tensor]:
        return self.result.outputs


def _multi_task(roster: Roster) -> bool:
    """A member with several heads answers a capability through the two-hop path, which
    cuts its reply down to the capability's head."""
    return any(r and r[0].heads for r in roster.replicas.values())


def _labels(hb: Heartbeat, capability: str) -> Sequence[str]:
    """Class labels of `capability` as this model gives them (a multi-task model per head)."""
    head = hb.heads.get(capability)
    return tuple(head["labels"]) if head else hb.labels


def _value(fused: tensor_pb2.Tensor) -> tensor_pb2.Tensor:
    """The fused regression values as "value": [rows] when one value a row, else [rows, k]."""
    shape = list(fused.shape)
    if len(shape) == 2 and shape[1] == 1:
        shape = shape[:1]
    return tensor_pb2.Tensor(name="value", datatype=fused.datatype, shape=shape, raw=fused.raw)


def _output(reply: wire_pb2.InferReply, name: str) -> tensor_pb2.Tensor:
    for t in reply.outputs:
        if t.name == name:
            return t
    raise Unavailable(f"model {reply.model}: reply has no {name!r} output")
