"""RouterService: the gRPC front door, the live registry and the NATS client that dispatches."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

import grpc
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from chorus import subjects
from chorus.config import RouterConfig
from chorus.grpcserver import add_health_and_reflection, bind, make_server, set_serving
from chorus.heartbeat import Heartbeat
from chorus.metrics import serve_metrics
from chorus.pb import task_pb2, task_pb2_grpc
from router.metrics import RouterMetrics
from router.registry import Registry
from router.servicer import TaskServicer
from router.task import TaskRunner

log = logging.getLogger(__name__)
TASK_SERVICE = task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name


class RouterService:
    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.registry = Registry()
        self.metrics = RouterMetrics()
        self.grpc_port = 0
        self.metrics_port = 0
        self._nc: Client | None = None
        self._hb_sub: Subscription | None = None
        self._server: grpc.aio.Server | None = None
        self._metrics_server: WSGIServer | None = None

    async def start(self) -> Self:
        if self._server is not None:
            return self
        cfg = self.config
        self._metrics_server, self.metrics_port = serve_metrics(
            cfg.host, cfg.metrics_port, self.metrics.registry
        )
        self._nc = await nats.connect(cfg.nats_url, name="chorus-router", max_reconnect_attempts=-1)
        self._hb_sub = await self._nc.subscribe(subjects.HEARTBEATS, cb=self._on_heartbeat)
        await self._nc.publish(subjects.DISCOVER, b"")
        await self._nc.flush()

        runner = TaskRunner(
            self._nc,
            self.registry,
            self.metrics,
            default_budget_s=cfg.default_budget_s,
            default_policy=cfg.default_policy,
            max_rows=cfg.max_rows,
        )
        self._server = make_server(cfg.max_message_bytes)
        task_pb2_grpc.add_TaskServiceServicer_to_server(
            TaskServicer(runner, self.registry), self._server
        )
        health = add_health_and_reflection(self._server, [TASK_SERVICE])
        self.grpc_port = bind(self._server, cfg.host, cfg.grpc_port)
        await self._server.start()
        await set_serving(health, [TASK_SERVICE], True)
        log.info(
            "router serving: gRPC %s:%d, NATS %s, metrics :%d",
            cfg.host,
            self.grpc_port,
            cfg.nats_url,
            self.metrics_port,
        )
        return self

    async def wait_for_models(self, capability: str, count: int, timeout_s: float) -> None:
        """Block until `count` models offer `capability` (used by `chorus up` and tests)."""
        deadline = time.monotonic() + timeout_s
        while len(self.registry.models_for(capability, time.monotonic())) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} models offer {capability!r}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=2.0)
            self._server = None
        if self._hb_sub is not None:
            await self._hb_sub.unsubscribe()
            self._hb_sub = None
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            hb = Heartbeat.from_json(msg.data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring malformed heartbeat on %s: %s", msg.subject, exc)
            return
        now = time.monotonic()
        self.registry.observe(hb, now)
        self.metrics.heartbeats.labels(hb.model).inc()
        counts: dict[str, int] = {}
        for live in self.registry.live(now):
            counts[live.model] = counts.get(live.model, 0) + 1
        for model, n in counts.items():
            self.metrics.replicas.labels(model).set(n)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
