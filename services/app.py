"""ModelService: one model's ONNX session, its KServe v2 gRPC server and its NATS worker."""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from typing import Self

import grpc

from chorus.config import ModelServiceConfig
from chorus.context import Priority
from chorus.grpcserver import add_health_and_reflection, bind, make_server
from chorus.pb import kserve_v2_pb2, kserve_v2_pb2_grpc
from chorus.scheduler import PriorityScheduler
from chorus.security import server_credentials
from chorus.service import ServiceBase
from services import repository
from services.batcher import DynamicBatcher
from services.gpu_metrics import nvml_collector
from services.kserve import KServeServicer
from services.metrics import ModelMetrics
from services.runtime import OnnxModel
from services.worker import NatsWorker

log = logging.getLogger(__name__)
KSERVE_SERVICE = kserve_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class ModelService(ServiceBase):
    kind = "model"

    def __init__(self, config: ModelServiceConfig) -> None:
        super().__init__()
        self.config = config
        self.replica = config.replica or f"{config.model}-{uuid.uuid4().hex[:8]}"
        self.model: OnnxModel | None = None
        self.grpc_port = 0
        self._server: grpc.aio.Server | None = None
        self._worker: NatsWorker | None = None

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
            delay_s=cfg.delay_ms / 1000,
            noise=cfg.noise,
        )
        self.scheduler = PriorityScheduler(
            f"model {cfg.model}",
            max(cfg.workers, cfg.max_batch),
            dict.fromkeys(Priority, cfg.queue_limit),
            aging_s=cfg.aging_s,
        )
        metrics = ModelMetrics(cfg.model, version.manifest.version, self.model.provider)
        self.batcher = DynamicBatcher(
            self.model,
            max_batch=cfg.max_batch,
            max_delay_s=cfg.max_batch_delay_ms / 1000,
            on_batch=metrics.batch,
        )
        for p in Priority:
            metrics.queue.labels(cfg.model, p.name.lower()).set_function(
                functools.partial(self.scheduler.depth, p)
            )
        if self.model.device == "cuda":
            gpu = nvml_collector(cfg.model)
            if gpu is not None:
                metrics.registry.register(gpu)
        self._serve_metrics(cfg.host, cfg.metrics_port, metrics.registry)

        self._server = make_server(cfg.max_message_bytes, cfg.max_concurrent_streams)
        kserve_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            KServeServicer(self.model, metrics, self.scheduler, cfg.default_budget_s, self.batcher),
            self._server,
        )
        health = add_health_and_reflection(self._server, [KSERVE_SERVICE])
        self.grpc_port = bind(
            self._server, cfg.host, cfg.grpc_port, server_credentials(self.security)
        )
        await self._server.start()

        nc = await self._connect(cfg.nats_url, self.replica)
        self._worker = NatsWorker(
            nc,
            self.model,
            metrics,
            replica=self.replica,
            heartbeat_s=cfg.heartbeat_s,
            default_budget_s=cfg.default_budget_s,
            scheduler=self.scheduler,
            batcher=self.batcher,
        )
        await self._worker.start()
        await self._ready(health, [KSERVE_SERVICE])
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
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None
        await super().stop()
        if self.model is not None:
            await self.batcher.close()
            self.model.close()
            self.model = None
