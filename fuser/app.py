"""FuserService: a stateless NATS micro service in queue group `fuser`; add replicas to scale."""

from __future__ import annotations

import logging
import time
from typing import Self

import nats
import nats.micro
import numpy as np
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry.trace import SpanKind

import chorus
from chorus import subjects, tracing
from chorus.config import FuserConfig
from chorus.errors import ChorusError, InvalidArgument
from chorus.pb import wire_pb2
from chorus.service import ServiceBase
from fuser.fusion import DEFAULT_POLICY, fuse
from fuser.metrics import FuserMetrics

log = logging.getLogger(__name__)


class FuserService(ServiceBase):
    kind = "fuser"

    def __init__(self, config: FuserConfig) -> None:
        super().__init__()
        self.config = config
        self.metrics = FuserMetrics()
        self._service: Service | None = None

    async def start(self) -> Self:
        if self._service is not None:
            return self
        self._serve_metrics(self.config.host, self.config.metrics_port, self.metrics.registry)
        nc = await self._connect(self.config.nats_url, "chorus-fuser")
        self._service = await nats.micro.add_service(
            nc,
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
        await super().stop()

    async def _on_fuse(self, request: Request) -> None:
        with tracing.span("fuse", request.headers, kind=SpanKind.SERVER):
            await self._fuse(request)

    async def _fuse(self, request: Request) -> None:
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
