"""FuserService: a stateless NATS micro service in queue group `fuser`; add replicas to scale.

What it must remember lives in JetStream (learned weights, tasks awaiting feedback, review
cases), and what it must know about models comes from their heartbeats, so any replica can
serve any request and a restart loses nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any, Self, TypeVar

import numpy as np
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry.trace import SpanKind

from chorus.core import micro, subjects, tracing
from chorus.core.calls import choice
from chorus.core.calls.client import CallPolicy, MemberCalls
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.transport import NatsTransport
from chorus.core.config import FuserConfig
from chorus.core.context import CallContext
from chorus.core.errors import InvalidArgument, outcome_label, respond_error
from chorus.core.heartbeat import Heartbeat, HeartbeatLoop
from chorus.core.registry import Registry
from chorus.core.service import ServiceBase
from chorus.core.spawner import Spawner
from chorus.core.wire import DEFAULT_POLICY
from chorus.fuser import strategies
from chorus.fuser.batch import FuseBatcher
from chorus.fuser.collect import Collected, Collector
from chorus.fuser.conflict import ConflictThresholds
from chorus.fuser.conformal import ConformalStore, nonconformity
from chorus.fuser.fusion import Tools, decode_members
from chorus.fuser.members import NatsMembers
from chorus.fuser.metrics import FuserMetrics
from chorus.fuser.policies import Outcome
from chorus.fuser.records import (
    Feedback,
    ReviewQueue,
    TaskRecords,
    feedback_for,
    losses,
    member_scores,
)
from chorus.fuser.reliability import ReliabilityStore
from chorus.fuser.strategies import Stacker
from chorus.fuser.temperatures import TemperatureStore
from chorus.fuser.weights import WeightStore
from chorus.pb import task_pb2, wire_pb2

log = logging.getLogger(__name__)


class FuserService(ServiceBase):
    kind = "fuser"

    def __init__(self, config: FuserConfig) -> None:
        super().__init__()
        self.config = config
        self.metrics = FuserMetrics()
        self.models = Registry()
        self._service: Service | None = None
        self._hb_sub: Subscription | None = None
        self._subs: list[Subscription] = []
        self._beat = HeartbeatLoop(self._announce, config.heartbeat_s, "fuser-heartbeat")
        self.replica = uuid.uuid4().hex[:12]
        self._collector: Collector | None = None
        self._work = Spawner()
        self._tools: Tools | None = None
        self._batcher: FuseBatcher | None = None
        self._weights: WeightStore | None = None
        self._records: TaskRecords | None = None
        self._conformal: ConformalStore | None = None
        self._reliability: ReliabilityStore | None = None
        self._temperatures: TemperatureStore | None = None
        self._fusing = 0
        """Fuse requests being served now (both fuse endpoints), for `$SRV.STATS`."""
        self._feedback_outcomes: dict[str, int] = {}
        """Feedback requests answered, by outcome, for `$SRV.STATS` (no metric counts them)."""

    async def start(self) -> Self:
        if self._service is not None:
            return self
        cfg = self.config
        self._serve_metrics(
            cfg.host, cfg.metrics_port, self.metrics.registry, endpoint=cfg.own_ports
        )
        nc = await self._connect(cfg.nats_url, "chorus-fuser")
        js = nc.jetstream()
        self._weights = WeightStore(js, replicas=self.jetstream_replicas)
        await self._weights.start()
        self._records = TaskRecords(js, replicas=self.jetstream_replicas)
        await self._records.start()
        self._conformal = ConformalStore(js, replicas=self.jetstream_replicas)
        await self._conformal.start()
        self._reliability = ReliabilityStore(js, replicas=self.jetstream_replicas)
        await self._reliability.start()
        self._temperatures = TemperatureStore(js, replicas=self.jetstream_replicas)
        await self._temperatures.start()
        review = ReviewQueue(js, replicas=self.jetstream_replicas)
        await review.start()
        self._hb_sub = await nc.subscribe(subjects.HEARTBEATS, cb=self._on_heartbeat)
        await nc.publish(subjects.DISCOVER, b"")
        calls = MemberCalls(
            NatsTransport(nc),
            ReplicaBook(),
            choice.get("power_of_two"),
            CallPolicy(),
            self.metrics.calls,
        )
        self._collector = Collector(calls, self._replicas)
        self._subs.append(
            await nc.subscribe(subjects.collect(self.replica), cb=self._collector.on_answer)
        )
        self._tools = Tools(
            client=NatsMembers(calls, self._replicas),
            weights=self._weights.get,
            served=self._served,
            arbiter=self._arbiter,
            review=review.publish,
            thresholds=ConflictThresholds(
                min_margin=cfg.min_margin,
                max_entropy=cfg.max_entropy,
                min_vote_margin=cfg.min_vote_margin,
                max_spread=cfg.max_spread,
                max_relative_spread=cfg.max_relative_spread,
            ),
            conformal=self._conformal.get,
            reliability=self._reliability.get,
            temperatures=self._temperatures.get,
            coverage=cfg.conformal_coverage,
        )
        self._batcher = FuseBatcher(
            self._tools, observe=self.metrics.stacked.observe, enabled=cfg.stack_tasks
        )
        fuse, feedback = self._fuse_stats, self._feedback_stats
        self._service = await micro.register(
            nc,
            name="chorus-fuser",
            description="merges member outputs, settles conflicts, explains the decision",
            metadata={"replica": self.replica},
            endpoints=[
                micro.Endpoint("fuse", subjects.FUSE, subjects.FUSER_QUEUE, self._on_fuse, fuse),
                micro.Endpoint(
                    "fuse-replica",
                    subjects.fuse_replica(self.replica),
                    self.replica,
                    self._on_fuse,
                    fuse,
                ),
                micro.Endpoint(
                    "feedback", subjects.FEEDBACK, subjects.FUSER_QUEUE, self._on_feedback, feedback
                ),
            ],
        )
        self._subs.append(await nc.subscribe(subjects.DISCOVER, cb=self._on_discover))
        await self._announce()
        self._beat.start()
        log.info(
            "fuser %s serving on %s (queue %s)", self.replica, subjects.FUSE, subjects.FUSER_QUEUE
        )
        return self

    async def _announce(self) -> None:
        """Tell routers this replica takes one-way tasks (and where)."""
        if self._nc is not None:
            await self._nc.publish(subjects.FUSER_HEARTBEATS, self.replica.encode())

    async def _on_discover(self, msg: Msg) -> None:
        await self._announce()

    async def _reconnected(self) -> None:
        await self._announce()

    async def stop(self) -> None:
        await self._beat.stop()
        if self._service is not None:
            await self._service.stop()
            self._service = None
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        if self._hb_sub is not None:
            await self._hb_sub.unsubscribe()
            self._hb_sub = None
        await self._work.close()
        if self._weights is not None:
            await self._weights.stop()
            self._weights = None
        if self._conformal is not None:
            await self._conformal.stop()
            self._conformal = None
        if self._temperatures is not None:
            await self._temperatures.stop()
            self._temperatures = None
        if self._reliability is not None:
            with contextlib.suppress(Exception):
                await self._reliability.flush()
            await self._reliability.stop()
            self._reliability = None
        await super().stop()

    async def _on_heartbeat(self, msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            now = time.monotonic()
            hb = self.models.observe_json(msg.data, now)
            self.metrics.saw_model(hb.model)
            self.metrics.live_replicas(self.models.live(now))

    def _replicas(self, model: str) -> list[Heartbeat]:
        return [hb for hb in self.models.live(time.monotonic()) if hb.model == model]

    def _served(self, role: str, capability: str) -> Stacker | None:
        """A live model that serves `role` (stack, gate) for `capability`, over its members."""
        for hb in self.models.live(time.monotonic()):
            if f"{role}:{capability}" in hb.capabilities and hb.members:
                return Stacker(hb.model, hb.members, hb.inputs[0].name)
        return None

    def _arbiter(self, capability: str) -> str | None:
        found = self.models.models_for(f"arbiter:{capability}", time.monotonic())
        return next(iter(found), None)

    async def _on_fuse(self, request: Request) -> None:
        self._work.spawn(self._fuse(request), name="fuse")

    async def fuse_here(
        self,
        call: wire_pb2.FuseCall,
        ctx: CallContext,
        headers: dict[str, str] | None,
        *,
        together: bool,
        tasks: Sequence[tuple[str, int, int]] = (),
    ) -> wire_pb2.FuseReply:
        """A task from a co-hosted group in this process (chorus.group), within the group's
        own context: the same work, metrics and errors as a request from the bus, with no
        message encoded either way. `together`: the group's members answered it in a batch,
        so tasks finishing in this turn of the event loop are fused in one pass
        (FuseBatcher). `tasks`: the calls whose rows this one joins (chorus.group.joining),
        each (its id, first row, end), each kept for feedback as if fused alone."""
        with self._fusing_one(headers):
            try:
                return await self._fused(call, ctx, together=together, tasks=tasks)
            except Exception as exc:
                self.metrics.requests.labels(
                    call.policy or DEFAULT_POLICY, outcome_label(exc)
                ).inc()
                raise

    async def _fuse(self, request: micro.Responder) -> None:
        with self._fusing_one(request.headers):
            await self._fuse_traced(request)

    @contextlib.contextmanager
    def _fusing_one(self, headers: dict[str, str] | None) -> Iterator[None]:
        """A fuse in flight, for `$SRV.STATS`, inside its trace span: from the bus or a group."""
        self._fusing += 1
        try:
            with tracing.span("fuse", headers, kind=SpanKind.SERVER):
                yield
        finally:
            self._fusing -= 1

    def _fuse_stats(self) -> dict[str, Any]:
        """The fuse endpoints' live numbers for `$SRV.STATS`, read from the metrics."""
        m = self.metrics
        return {
            "in_flight": self._fusing,
            "requests": micro.totals(m.requests, "outcome"),
            "mean_fuse_ms": micro.mean(m.latency) * 1000,
            "mean_stacked_tasks": micro.mean(m.stacked),
            "collected": micro.totals(m.collected, "outcome"),
        }

    def _feedback_stats(self) -> dict[str, Any]:
        return {"requests": dict(self._feedback_outcomes)}

    async def _fuse_traced(self, request: micro.Responder) -> None:
        policy = DEFAULT_POLICY
        try:
            ctx = CallContext.from_headers(
                request.headers, default_budget_s=self.config.default_budget_s
            )
            call = _parse(wire_pb2.FuseCall, request.data)
            policy = call.policy or DEFAULT_POLICY
            reply = await self._fused(call, ctx, together=False)
        except Exception as exc:
            self.metrics.requests.labels(policy, await respond_error(request, exc, "fuser")).inc()
            return
        await request.respond(reply.SerializeToString())

    async def _fused(
        self,
        call: wire_pb2.FuseCall,
        ctx: CallContext,
        *,
        together: bool,
        tasks: Sequence[tuple[str, int, int]] = (),
    ) -> wire_pb2.FuseReply:
        """One task fused, its members' answers first collected when it names them; counted
        in the metrics once it succeeds (the caller counts a failure), its record kept for
        feedback in the background."""
        assert self._batcher is not None and self._records is not None
        assert self._collector is not None
        start = time.perf_counter()
        collected = await self._collector.collect(call, ctx) if call.expected else None
        if collected is not None:
            call = collected.task
            together = collected.joined
        reply, outcome = await self._batcher.fuse(call, ctx, together=together)
        if collected is not None:
            collected.report(reply)
            self._count(collected)
        self.metrics.fused(
            reply.policy,
            reply.conflict_policy,
            time.perf_counter() - start,
            outcome.fused.agreement,
            int(np.sum(outcome.report.conflicted)),
            outcome.status,
            call.capability,
            dict(reply.weights),
        )
        self._observe_votes(call.capability, outcome)
        conflicted = outcome.report.conflicted
        kept = [(t, slice(a, b)) for t, a, b in tasks] or [(call.task_id, slice(None))]
        for task_id, rows in kept:
            if task_id and (self.config.keep_tasks or conflicted[rows].any()):
                # Kept beside the answer, not before it: a JetStream write that fails (NATS
                # just restarted, say) is logged and costs the task nothing.
                keep = self._records.keep(
                    call, dict(reply.weights), reply.policy, dict(reply.temperatures),
                    task_id=task_id, rows=rows if len(kept) > 1 else None,
                )  # fmt: skip
                self._work.spawn(keep, name="keep-task")
        return reply

    def _count(self, collected: Collected) -> None:
        for model, outcome in collected.outcomes().items():
            self.metrics.collected.labels(model, outcome).inc()

    def _observe_votes(self, capability: str, outcome: Outcome) -> None:
        """Every classification task's votes feed the label-free reliability estimate."""
        store = self._reliability
        if store is None or outcome.report.spread is not None or len(outcome.members) < 2:
            return
        votes = np.stack([m.votes for m in outcome.members], axis=1)
        classes = outcome.members[0].probabilities.shape[1]
        store.observe(capability, [m.model for m in outcome.members], votes, classes)
        if store.due():
            self._work.spawn(store.flush(), name="reliability-flush")

    async def _on_feedback(self, request: Request) -> None:
        self._work.spawn(self._feedback(request), name="feedback")

    async def _feedback(self, request: Request) -> None:
        assert self._records is not None and self._weights is not None
        try:
            req = _parse(task_pb2.FeedbackRequest, request.data)
            if not req.task_id:
                raise InvalidArgument("task_id: empty; send the task_id a Submit returned")
            record = await self._records.get(req.task_id)
            fb = feedback_for(record, list(req.labels), list(req.rows), list(req.values))
            capability = record.capability
            weights = await self._weights.learn(capability, losses(fb))
            await self._learn_calibration(fb)
        except Exception as exc:
            self._answered(await respond_error(request, exc, "fuser: feedback failed"))
            return
        for model, weight in weights.items():
            self.metrics.weights.labels(capability, model).set(weight)
        reply = task_pb2.FeedbackResponse(capability=capability, weights=weights)
        await request.respond(reply.SerializeToString())
        self._answered("ok")

    def _answered(self, outcome: str) -> None:
        self._feedback_outcomes[outcome] = self._feedback_outcomes.get(outcome, 0) + 1

    async def _learn_calibration(self, fb: Feedback) -> None:
        """Truth refines what the fuser says about its confidence: each classifier's
        temperature takes a step, and the fused answer's nonconformity on these rows joins
        the conformal calibration of the strategy that made it."""
        assert self._temperatures is not None and self._conformal is not None
        record = fb.record
        if not fb.regression and self.config.learn_temperatures:
            raw = member_scores(fb, temperature=1.0)
            used = {m.model: m.temperature or 1.0 for m in record.members}
            await self._temperatures.learn(
                record.capability, {n: (used[n], p) for n, p in raw.items()}, fb.truth
            )
        strategy = strategies.scores_only(record.policy)
        if strategy is not None:
            members = decode_members(record, {})
            fused = strategy.fuse(members).probabilities[fb.rows]
            scores = nonconformity(fused, fb.truth, fb.regression)
            await self._conformal.put(record.capability, record.policy, scores, extend=True)


M = TypeVar("M", wire_pb2.FuseCall, task_pb2.FeedbackRequest)


def _parse(kind: type[M], data: bytes) -> M:
    msg = kind()
    try:
        msg.ParseFromString(data)
    except Exception:
        raise InvalidArgument(f"body: not a {kind.DESCRIPTOR.full_name} message") from None
    return msg
