"""ModelService: one model's ONNX session, its KServe v2 gRPC server and its NATS worker."""

from __future__ import annotations

import asyncio
import logging
import uuid
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

import grpc
import nats
from nats.aio.client import Client

from chorus.config import ModelServiceConfig
from chorus.grpcserver import add_health_and_reflection, bind, make_server, set_serving
from chorus.metrics import serve_metrics
from chorus.pb import kserve_v2_pb2, kserve_v2_pb2_grpc
from services import repository
from services.kserve import KServeServicer
from services.metrics import ModelMetrics
from services.runtime import OnnxModel
from services.worker import NatsWorker

log = logging.getLogger(__name__)
KSERVE_SERVICE = kserve_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class ModelService:
    def __init__(self, config: ModelServiceConfig) -> None:
        self.config = config
        self.replica = config.replica or f"{config.model}-{uuid.uuid4().hex[:8]}"
        self.model: OnnxModel | None = None
        self.grpc_port = 0
        self.metrics_port = 0
        self._nc: Client | None = None
        self._server: grpc.aio.Server | None = None
        self._worker: NatsWorker | None = None
        self._metrics_server: WSGIServer | None = None

    async def start(self) -> Self:
        if self._server is not None:
            return self
        cfg = self.config
        version = repository.load(cfg.repository, cfg.model)
        self.model = await asyncio.to_thread(
            OnnxModel,
            version,
            device=cfg.device,
            intra_op_threads=cfg.intra_op_threads,
            workers=cfg.workers,
        )
        metrics = ModelMetrics(cfg.model, version.manifest.version, self.model.provider)
        self._metrics_server, self.metrics_port = serve_metrics(
            cfg.host, cfg.metrics_port, metrics.registry
        )

        self._server = make_server(cfg.max_message_bytes)
        kserve_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(self.model, metrics), self._server
        )
        health = add_health_and_reflection(self._server, [KSERVE_SERVICE])
        self.grpc_port = bind(self._server, cfg.host, cfg.grpc_port)
        await self._server.start()

        self._nc = await nats.connect(cfg.nats_url, name=self.replica, max_reconnect_attempts=-1)
        self._worker = NatsWorker(
            self._nc,
            self.model,
            metrics,
            replica=self.replica,
            heartbeat_s=cfg.heartbeat_s,
            default_budget_s=cfg.default_budget_s,
        )
        await self._worker.start()
        await set_serving(health, [KSERVE_SERVICE], True)
        log.info(
            "model %s serving: gRPC %s:%d, NATS %s, metrics :%d, provider %s",
            cfg.model,
            cfg.host,
            self.grpc_port,
            cfg.nats_url,
            self.metrics_port,
            self.model.provider,
        )
        return self

    async def stop(self) -> None:
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server = None
        if self.model is not None:
            self.model.close()
            self.model = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
