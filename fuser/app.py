"""FuserService: a stateless NATS micro service in queue group `fuser`; add replicas to scale."""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

import nats
import nats.micro
import numpy as np
from nats.aio.client import Client
from nats.micro.request import Request
from nats.micro.service import Service

import chorus
from chorus import subjects
from chorus.config import FuserConfig
from chorus.errors import ChorusError, InvalidArgument
from chorus.metrics import serve_metrics
from chorus.pb import wire_pb2
from fuser.fusion import DEFAULT_POLICY, fuse
from fuser.metrics import FuserMetrics

log = logging.getLogger(__name__)


class FuserService:
    def __init__(self, config: FuserConfig) -> None:
        self.config = config
        self.metrics = FuserMetrics()
        self.metrics_port = 0
        self._nc: Client | None = None
        self._service: Service | None = None
        self._metrics_server: WSGIServer | None = None

    async def start(self) -> Self:
        if self._service is not None:
            return self
        self._metrics_server, self.metrics_port = serve_metrics(
            self.config.host, self.config.metrics_port, self.metrics.registry
        )
        self._nc = await nats.connect(
            self.config.nats_url, name="chorus-fuser", max_reconnect_attempts=-1
        )
        self._service = await nats.micro.add_service(
            self._nc,
            name="chorus-fuser",
            version=chorus.__version__,
            description="merges member outputs and explains the decision",
        )
        await self._service.add_endpoint(
            name="fuse",
            subject=subjects.FUSE,
            queue_group=subjects.FUSER_QUEUE,
            handler=self._on_fuse,
        )
        log.info(
            "fuser serving on %s (queue %s), metrics :%d",
            subjects.FUSE,
            subjects.FUSER_QUEUE,
            self.metrics_port,
        )
        return self

    async def stop(self) -> None:
        if self._service is not None:
            await self._service.stop()
            self._service = None
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None

    async def _on_fuse(self, request: Request) -> None:
        start = time.perf_counter()
        call = wire_pb2.FuseCall()
        policy = DEFAULT_POLICY
        try:
            try:
                call.ParseFromString(request.data)
            except Exception:
                raise InvalidArgument("body: not a chorus.wire.v1.FuseCall message") from None
            policy = call.policy or DEFAULT_POLICY
            reply, fused = fuse(call)
        except ChorusError as err:
            self.metrics.requests.labels(policy, err.code_name.lower()).inc()
            await request.respond_error(err.code_name, err.message)
            return
        except Exception as exc:
            log.exception("fusion failed")
            self.metrics.requests.labels(policy, "internal").inc()
            await request.respond_error("INTERNAL", f"fuser: {exc!r}")
            return
        await request.respond(reply.SerializeToString())
        m = self.metrics
        m.requests.labels(reply.policy, "ok").inc()
        m.latency.labels(reply.policy).observe(time.perf_counter() - start)
        for a in fused.agreement:
            m.agreement.labels(reply.policy).observe(a)
        m.conflicts.labels(reply.policy).inc(int(np.sum(fused.agreement < 1.0)))

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
