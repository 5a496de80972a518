"""Tasks: check the input, fan out to the capability's models, fuse, answer; or run a
pipeline of such stages; or a cascade that asks more members only where it must.

One Submit, top down: `submit` (metrics, trace) -> `_submit`: a pipeline goes to
`PipelinePath`; a single stage gets its context, roster and checks (`validate`), then the
path `Paths.choose` picks (`paths/`) runs it under the scheduler, and `reply` assembles the
answer."""

from __future__ import annotations

from dataclasses import replace

from nats.aio.client import Client
from opentelemetry.trace import SpanKind

from chorus.core import tracing
from chorus.core.calls.clock import SYSTEM, Clock
from chorus.core.context import CallContext, Priority
from chorus.core.errors import ChorusError
from chorus.core.registry import Registry
from chorus.core.scheduler import PriorityScheduler
from chorus.pb import task_pb2
from chorus.router import dispatch
from chorus.router.dispatch import Dispatcher
from chorus.router.metrics import RouterMetrics
from chorus.router.one_way import OneWay
from chorus.router.paths import Members, Paths, PipelinePath, StageTask
from chorus.router.pipeline import Pipeline
from chorus.router.plan_routing import PlanSplits
from chorus.router.reply import submit_response
from chorus.router.roster import Roster, Rosters
from chorus.router.validate import Limits, check_feedback, find_pipeline


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
        self.metrics = metrics
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.pipelines = pipelines or {}
        for name in self.pipelines:
            metrics.saw_capability(f"pipeline:{name}")
        self.splits = splits
        self.clock = clock
        """Task latencies and waits for heartbeats; the registry's clock (monotonic)."""
        self.limits = Limits(
            default_budget_s=default_budget_s,
            max_rows=max_rows,
            max_tensor_elements=max_tensor_elements,
            max_deadline_s=max_deadline_s,
        )
        self.rosters = Rosters(registry, clock)
        self.members = Members(
            nc,
            dispatcher,
            metrics,
            default_policy=default_policy,
            default_conflict_policy=default_conflict_policy,
            min_members=min_members,
        )
        self.paths = Paths(self.members, metrics, one_way)
        self.pipeline_path = PipelinePath(self.rosters, self.limits, self.paths, clock)

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
            find_pipeline(self.pipelines, req)
        else:
            self.limits.check_inputs(req.inputs, self.rosters.roster(req.capability))

    async def _submit(
        self, req: task_pb2.SubmitRequest, priority: Priority, grpc_remaining_s: float | None
    ) -> task_pb2.SubmitResponse:
        if req.pipeline:
            pipeline = find_pipeline(self.pipelines, req)
            ctx = self.limits.context(req, priority, grpc_remaining_s)
            return await self.scheduler.run(ctx, lambda: self.pipeline_path.run(req, pipeline, ctx))
        ctx = self.limits.context(req, priority, grpc_remaining_s)
        roster = self._split(await self.rosters.live_roster(req.capability, ctx), priority)
        self.limits.check_inputs(req.inputs, roster)
        task = StageTask(roster, req.inputs, req.fusion_policy, req.conflict, req.cascade, ctx, {})
        path = self.paths.choose(task)
        if path is not self.paths.group and not req.cascade.threshold:
            # Encoded (and refused when too large) before the task waits its turn; the group
            # path sends the task whole instead, and a cascade encodes as it goes.
            task = replace(task, payloads=self.members.payloads(req.inputs, roster.first))

        async def run() -> task_pb2.SubmitResponse:
            return submit_response(req, ctx, await path.run(task))

        return await self.scheduler.run(ctx, run)

    def _split(self, roster: Roster, priority: Priority) -> Roster:
        """The one member the plan's routing split gives this task, where a plan splits."""
        if self.splits is not None:
            chosen = self.splits.pick(roster.capability, priority.label, set(roster.replicas))
            if chosen is not None:
                return Roster(roster.capability, {chosen: roster.replicas[chosen]})
        return roster

    async def feedback(self, req: task_pb2.FeedbackRequest) -> task_pb2.FeedbackResponse:
        check_feedback(req)
        ctx = CallContext.start(req.task_id, Priority.NORMAL, self.limits.default_budget_s)
        return await dispatch.feedback(self.dispatcher.transport, req, ctx)
