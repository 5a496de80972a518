"""RouterService: the gRPC front door, the live registry and the NATS client that dispatches."""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any, Self

import grpc
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.micro.request import Request
from nats.micro.service import Service

from chorus.core import micro, subjects
from chorus.core.calls import choice
from chorus.core.calls.client import CallPolicy
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.transport import NatsTransport
from chorus.core.config import RouterConfig
from chorus.core.context import Priority
from chorus.core.grpcserver import add_health_and_reflection, bind, server_for
from chorus.core.registry import Registry
from chorus.core.scheduler import PriorityScheduler
from chorus.core.security import Authorizer, server_credentials
from chorus.core.service import ServiceBase
from chorus.pb import task_pb2, task_pb2_grpc
from chorus.router.dispatch import Dispatcher, DispatchPolicy
from chorus.router.durable import DurableTasks
from chorus.router.metrics import RouterMetrics
from chorus.router.nats_door import NatsDoor
from chorus.router.one_way import FuserBook, OneWay
from chorus.router.pipeline import load_pipelines
from chorus.router.plan_routing import PlanSplits
from chorus.router.servicer import TaskServicer
from chorus.router.task import TaskRunner

log = logging.getLogger(__name__)
TASK_SERVICE = task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
STOP_GRACE_S = 2.0
"""On stop, tasks already running on the gRPC server get this long to finish."""


class RouterService(ServiceBase):
    kind = "router"

    def __init__(self, config: RouterConfig) -> None:
        super().__init__()
        self.config = config
        self.registry = Registry()
        self.metrics = RouterMetrics()
        self.grpc_port = 0
        self._hb_sub: Subscription | None = None
        self._server: grpc.aio.Server | None = None
        self._durable: DurableTasks | None = None
        self._splits: PlanSplits | None = None
        self._plan_sub: Subscription | None = None
        self._fuser_sub: Subscription | None = None
        self._counted: set[str] = set()
        self._service: Service | None = None
        self._door: NatsDoor | None = None
        self._scheduler: PriorityScheduler | None = None

    async def start(self) -> Self:
        if self._server is not None:
            return self
        cfg = self.config
        self._serve_metrics(cfg.host, cfg.metrics_port, self.metrics.registry)
        # Bound before anything else starts, so a port already held fails fast and leaves
        # no streams, consumers or subscriptions behind.
        credentials = server_credentials(self.security)
        self._server = server_for(cfg, credentials)
        self.grpc_port = bind(self._server, cfg.host, cfg.grpc_port, credentials)
        nc = await self._connect(cfg.nats_url, "chorus-router")
        self._hb_sub = await nc.subscribe(subjects.HEARTBEATS, cb=self._on_heartbeat)
        fusers = FuserBook()
        if cfg.one_way:
            self._fuser_sub = await nc.subscribe(subjects.FUSER_HEARTBEATS, cb=fusers.on_heartbeat)
        if cfg.plan_routing:
            self._splits = PlanSplits()
            self._plan_sub = await nc.subscribe(subjects.PLAN, cb=self._on_plan)
        await nc.publish(subjects.DISCOVER, b"")
        await nc.flush()

        transport = NatsTransport(nc)
        dispatcher = Dispatcher(
            transport,
            ReplicaBook(failures_to_open=cfg.breaker_failures, cooldown_s=cfg.breaker_cooldown_s),
            choice.get(cfg.replica_choice),
            DispatchPolicy(
                CallPolicy(
                    max_attempts=cfg.max_attempts,
                    attempt_timeout_s=cfg.attempt_timeout_s,
                    hedge=cfg.hedge,
                ),
                coalesce_rows=cfg.coalesce_rows,
            ),
            self.metrics,
        )
        one_way = None
        if cfg.one_way:
            metrics = self.metrics
            one_way = OneWay(
                transport, dispatcher.calls, fusers, coalesce_rows=cfg.coalesce_rows,
                observe=lambda model, tasks: metrics.call_tasks.labels(model).observe(tasks),
                waiting=lambda model, change: metrics.member_waiting.labels(model).inc(change),
            )  # fmt: skip
        scheduler = PriorityScheduler(
            "router",
            cfg.max_concurrent_tasks,
            dict.fromkeys(Priority, cfg.queue_limit),
            aging_s=cfg.aging_s,
        )
        self._scheduler = scheduler
        for p in Priority:
            self.metrics.queue.labels(p.label).set_function(functools.partial(scheduler.depth, p))
        runner = TaskRunner(
            nc,
            self.registry,
            self.metrics,
            dispatcher,
            scheduler,
            min_members=cfg.min_members,
            splits=self._splits,
            max_tensor_elements=cfg.max_tensor_elements,
            max_deadline_s=cfg.max_deadline_s,
            pipelines=load_pipelines(cfg.pipelines_dir) if cfg.pipelines_dir.is_dir() else {},
            default_budget_s=cfg.default_budget_s,
            default_policy=cfg.default_policy,
            max_rows=cfg.max_rows,
            default_conflict_policy=cfg.default_conflict_policy,
            one_way=one_way,
        )
        self._durable = DurableTasks(
            nc,
            runner,
            workers=cfg.async_workers,
            ack_wait_s=cfg.ack_wait_s,
            result_ttl_s=cfg.result_ttl_s,
            dedupe_window_s=cfg.dedupe_window_s,
            replicas=self.jetstream_replicas,
        )
        await self._durable.start()
        authorizer = Authorizer.from_config(self.security)
        task_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(runner, self.registry, self._durable, authorizer), self._server
        )
        self._door = NatsDoor(runner, authorizer)
        health = add_health_and_reflection(self._server, [TASK_SERVICE])
        await self._server.start()
        # Tasks come over gRPC, and over NATS for applications on the bus (`submit`);
        # registering makes every router replica visible to `nats micro ls|stats` too.
        self._service = await micro.register(
            nc,
            name="chorus-router",
            description="the task API: decomposes tasks, dispatches members, returns the answer",
            metadata={
                "grpc_port": str(self.grpc_port),
                "one_way": str(cfg.one_way).lower(),
                "replica_choice": cfg.replica_choice,
            },
            endpoints=[
                micro.Endpoint(
                    "status",
                    subjects.ROUTER_STATUS,
                    subjects.ROUTER_QUEUE,
                    self._on_status,
                    self.stats,
                ),
                micro.Endpoint(
                    "submit",
                    subjects.SUBMIT,
                    subjects.ROUTER_QUEUE,
                    self._door.on_submit,
                    self.stats,
                ),
            ],
        )
        await self.report_health(health, [TASK_SERVICE])
        log.info(
            "router serving: gRPC %s:%d, NATS %s, metrics :%d",
            cfg.host,
            self.grpc_port,
            cfg.nats_url,
            self.metrics_port,
        )
        return self

    async def stop(self) -> None:
        if self._service is not None:
            await self._service.stop()
            self._service = None
        if self._door is not None:
            await self._door.close()
            self._door = None
        if self._server is not None:
            await self._server.stop(grace=STOP_GRACE_S)
            self._server = None
        if self._durable is not None:
            await self._durable.stop()
            self._durable = None
        if self._hb_sub is not None:
            await self._hb_sub.unsubscribe()
            self._hb_sub = None
        if self._plan_sub is not None:
            await self._plan_sub.unsubscribe()
            self._plan_sub = None
        if self._fuser_sub is not None:
            await self._fuser_sub.unsubscribe()
            self._fuser_sub = None
        await super().stop()

    def stats(self) -> dict[str, Any]:
        """This replica's live task numbers, for `$SRV.STATS` and chorus.router.status: read
        from its scheduler and its metrics, nothing kept anew."""
        scheduler, m = self._scheduler, self.metrics
        assert scheduler is not None, "start the router first"
        return {
            "in_flight": {p.label: 0 for p in Priority} | micro.totals(m.in_flight, "priority"),
            "queued": {p.label: scheduler.depth(p) for p in Priority},
            "slots": scheduler.slots,
            "tasks": micro.totals(m.tasks, "outcome"),
            "mean_task_ms": micro.mean(m.latency) * 1000,
            "mean_call_tasks": micro.mean(m.call_tasks),
            "live_replicas": len(self.registry.live(time.monotonic())),
        }

    async def _on_status(self, request: Request) -> None:
        await request.respond(json.dumps(self.stats()).encode())

    async def _on_plan(self, msg: Msg) -> None:
        assert self._splits is not None
        try:
            self._splits.update_json(msg.data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed plan: %s", exc)

    async def _reconnected(self) -> None:
        # Every model answers with a heartbeat now, not at its next beat: the seconds the
        # connection was stale may have aged them all out of the registry.
        if self._nc is not None:
            await self._nc.publish(subjects.DISCOVER, b"")

    async def _on_heartbeat(self, msg: Msg) -> None:
        now = time.monotonic()
        try:
            hb = self.registry.observe_json(msg.data, now)
        except ValueError as exc:
            log.warning("ignoring heartbeat on %s: %s", msg.subject, exc)
            return
        self.metrics.saw_model(hb.model, hb.capabilities)
        self.metrics.heartbeats.labels(hb.model).inc()
        counts: dict[str, int] = {}
        replicas = self.registry.live(now)
        self.metrics.live_replicas(replicas)
        for live in replicas:
            counts[live.model] = counts.get(live.model, 0) + 1
        # A model whose last replica went silent reads 0, not its last count.
        for model in self._counted - counts.keys():
            self.metrics.replicas.labels(model).set(0)
        self._counted = set(counts)
        for model, n in counts.items():
            self.metrics.replicas.labels(model).set(n)
