"""One synchronous task: check the input, fan out to the capability's models, fuse, answer."""

from __future__ import annotations

import time
import uuid

import numpy as np
from nats.aio.client import Client
from opentelemetry.trace import SpanKind

from chorus import tracing
from chorus.codec import from_tensor
from chorus.context import CallContext, Priority
from chorus.errors import ChorusError, DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from chorus.heartbeat import Heartbeat
from chorus.pb import task_pb2, tensor_pb2, wire_pb2
from chorus.registry import Registry
from chorus.scheduler import PriorityScheduler
from chorus.spec import check_tensor
from router import dispatch
from router.dispatch import Dispatcher
from router.metrics import RouterMetrics

NEEDS_INPUTS = ("negotiate", "arbiter", "escalate")
"""Conflict policies that look at the task's inputs again, so the fuser must receive them."""


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
    ) -> None:
        self.nc = nc
        self.dispatcher = dispatcher
        self.scheduler = scheduler
        self.min_members = min_members
        self.registry = registry
        self.metrics = metrics
        self.default_budget_s = default_budget_s
        self.default_policy = default_policy
        self.max_rows = max_rows
        self.default_conflict_policy = default_conflict_policy

    async def submit(
        self,
        req: task_pb2.SubmitRequest,
        grpc_remaining_s: float | None,
        metadata: dict[str, str] | None = None,
    ) -> task_pb2.SubmitResponse:
        """`metadata` is the caller's gRPC metadata; a `traceparent` there continues its trace."""
        start = time.perf_counter()
        priority = Priority.from_wire(req.priority)
        outcome = "ok"
        in_flight = self.metrics.in_flight.labels(priority.name.lower())
        in_flight.inc()
        try:
            with tracing.span(
                "chorus.task", metadata, kind=SpanKind.SERVER, capability=req.capability
            ):
                return await self._submit(req, priority, grpc_remaining_s)
        except ChorusError as err:
            outcome = err.code_name.lower()
            raise
        finally:
            in_flight.dec()
            self.metrics.tasks.labels(req.capability, priority.name.lower(), outcome).inc()
            if outcome == "ok":
                self.metrics.latency.labels(req.capability).observe(time.perf_counter() - start)

    async def _submit(
        self, req: task_pb2.SubmitRequest, priority: Priority, grpc_remaining_s: float | None
    ) -> task_pb2.SubmitResponse:
        if not req.capability:
            raise InvalidArgument(
                "capability: empty; expected a capability such as 'classify/digits'"
            )
        members = self.registry.models_for(req.capability, time.monotonic())
        if not members:
            live = self.registry.capabilities(time.monotonic()) or ["none"]
            raise NotFound(
                f"capability {req.capability!r}: no live model offers it "
                f"(live capabilities: {', '.join(live)})"
            )
        first = {m: replicas[0] for m, replicas in members.items()}
        self._check_inputs(req, list(first.values()))

        budget = req.deadline_ms / 1000 if req.deadline_ms else self.default_budget_s
        if grpc_remaining_s is not None:
            budget = min(budget, grpc_remaining_s)
        task_id = req.task_id or uuid.uuid4().hex
        ctx = CallContext.start(task_id, priority, budget)

        payloads = self._payloads(req, first)
        return await self.scheduler.run(ctx, lambda: self._run(req, ctx, members, first, payloads))

    async def _run(
        self,
        req: task_pb2.SubmitRequest,
        ctx: CallContext,
        members: dict[str, list[Heartbeat]],
        first: dict[str, Heartbeat],
        payloads: dict[str, bytes],
    ) -> task_pb2.SubmitResponse:
        task_id = ctx.task_id
        fan = await self.dispatcher.fan_out(members, payloads, ctx)
        for model, ms in fan.latency_ms.items():
            self.metrics.member_latency.labels(model).observe(ms / 1000)
        for model, err in fan.errors.items():
            self.metrics.member_errors.labels(model, err.code_name.lower()).inc()
        if len(fan.replies) < self.min_members:
            raise _no_members(req.capability, fan.errors, len(fan.replies), self.min_members)

        call = wire_pb2.FuseCall(
            policy=req.fusion_policy or self.default_policy,
            labels=next(iter(first.values())).labels,
            capability=req.capability,
            task_id=task_id,
            conflict=req.conflict,
        )
        if not call.conflict.name:
            call.conflict.name = self.default_conflict_policy
        if call.conflict.name in NEEDS_INPUTS:
            call.inputs.extend(req.inputs)
        for model, reply in fan.replies.items():
            hb = first[model]
            call.members.add(
                model=model,
                version=reply.version,
                probabilities=_output(reply, hb.scores_output),
                scores_output=hb.scores_output,
            )
        fused = await dispatch.fuse(self.nc, call, ctx)

        labels = np.array([r.label for r in fused.rows], dtype=np.int64)
        response = task_pb2.SubmitResponse(
            task_id=task_id,
            capability=req.capability,
            labels=call.labels,
            explanation=task_pb2.Explanation(
                policy=fused.policy,
                members=list(fan.replies),
                missing={m: e.message for m, e in fan.errors.items()},
                rows=fused.rows,
                weights=fused.weights,
                conflict_policy=fused.conflict_policy,
            ),
        )
        response.outputs.add(
            name="label", datatype="INT64", shape=labels.shape, raw=labels.tobytes()
        )
        response.outputs.append(fused.probabilities)
        for model, reply in fan.replies.items():
            response.members.add(
                model=model,
                version=reply.version,
                replica=reply.replica,
                outputs=reply.outputs,
                latency_ms=fan.latency_ms[model],
            )
        return response

    def _payloads(
        self, req: task_pb2.SubmitRequest, members: dict[str, Heartbeat]
    ) -> dict[str, bytes]:
        """Each member's InferCall, holding only the inputs it takes (shared when equal)."""
        by_names: dict[tuple[str, ...], bytes] = {}
        payloads = {}
        for model, hb in members.items():
            names = tuple(sorted(s.name for s in hb.inputs))
            if names not in by_names:
                tensors = [t for t in req.inputs if t.name in names]
                body = wire_pb2.InferCall(inputs=tensors).SerializeToString()
                if len(body) > self.nc.max_payload:
                    raise InvalidArgument(
                        f"inputs: {len(body)} bytes exceed the mesh's {self.nc.max_payload}-byte "
                        "message limit; send fewer rows per task"
                    )
                by_names[names] = body
            payloads[model] = by_names[names]
        return payloads

    async def feedback(self, req: task_pb2.FeedbackRequest) -> task_pb2.FeedbackResponse:
        if not req.task_id:
            raise InvalidArgument("task_id: empty; send the task_id a Submit returned")
        if not req.labels:
            raise InvalidArgument("labels: empty; send the true class of every row")
        ctx = CallContext.start(req.task_id, Priority.NORMAL, self.default_budget_s)
        return await dispatch.feedback(self.nc, req, ctx)

    def _check_inputs(self, req: task_pb2.SubmitRequest, members: list[Heartbeat]) -> None:
        if not req.inputs:
            raise InvalidArgument("inputs: empty; send at least one input tensor")
        names = [t.name for t in req.inputs]
        if len(set(names)) != len(names):
            raise InvalidArgument(f"inputs: duplicate tensor names in {names}")
        arrays = {t.name: from_tensor(t) for t in req.inputs}
        taken: set[str] = set()
        for hb in members:
            expected = {s.name: s for s in hb.inputs}
            if not set(expected) <= set(arrays):
                raise InvalidArgument(
                    f"inputs: model {hb.model} of capability {req.capability!r} takes "
                    f"{sorted(expected)}, got {sorted(arrays)}"
                )
            for name, spec in expected.items():
                check_tensor(spec, arrays[name], field=f"inputs[{name!r}]")
            taken |= set(expected)
        unused = sorted(set(arrays) - taken)
        if unused:
            raise InvalidArgument(
                f"inputs: {unused} taken by no model of capability {req.capability!r} "
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


def _output(reply: wire_pb2.InferReply, name: str) -> tensor_pb2.Tensor:
    for t in reply.outputs:
        if t.name == name:
            return t
    raise Unavailable(f"model {reply.model}: reply has no {name!r} output")


def _no_members(
    capability: str, errors: dict[str, ChorusError], answered: int = 0, needed: int = 1
) -> ChorusError:
    """One error for a task too few of whose members answered: the most actionable one."""
    invalid = [e for e in errors.values() if isinstance(e, InvalidArgument)]
    if invalid:
        return invalid[0]
    detail = "; ".join(e.message for e in errors.values())
    short = f"capability {capability!r}: {answered} member(s) answered, {needed} needed"
    if all(isinstance(e, DeadlineExceeded) for e in errors.values()):
        return DeadlineExceeded(f"{short}; out of time: {detail}")
    return Unavailable(f"{short}: {detail}")
