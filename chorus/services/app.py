"""ModelService: one model's ONNX session, its KServe v2 gRPC server and its NATS worker."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from dataclasses import replace
from typing import Self

import grpc
import nats.errors
from nats.aio.client import Client
from nats.js.errors import ServiceUnavailableError

from chorus.core.config import ModelServiceConfig
from chorus.core.context import Priority
from chorus.core.errors import NotFound, describe_error
from chorus.core.grpcserver import add_health_and_reflection, bind, server_for
from chorus.core.model_store import ModelStore, StoreError, address
from chorus.core.scheduler import PriorityScheduler
from chorus.core.security import server_credentials
from chorus.core.service import ServiceBase
from chorus.core.spawner import Spawner
from chorus.pb import kserve_v2_pb2, kserve_v2_pb2_grpc
from chorus.services.gpu_metrics import nvml_collector
from chorus.services.inference import InferenceCore
from chorus.services.kserve import KServeServicer
from chorus.services.lifecycle import ModelHost
from chorus.services.metrics import ModelMetrics
from chorus.services.runtime import OnnxModel
from chorus.services.store_sync import StoreSync
from chorus.services.worker import NatsWorker

log = logging.getLogger(__name__)
STORE_RETRY_S = 1.0
WAIT_LOG_S = 30.0
STOP_GRACE_S = 1.0
"""On stop, requests already running on the gRPC (KServe) server get this long to finish."""
KSERVE_SERVICE = kserve_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


class ModelService(ServiceBase):
    kind = "model"

    def __init__(self, config: ModelServiceConfig) -> None:
        super().__init__()
        self.config = config
        self.replica = config.replica or f"{config.model}-{uuid.uuid4().hex[:8]}"
        self.host: ModelHost | None = None
        self.grpc_port = 0
        self._server: grpc.aio.Server | None = None
        self._worker: NatsWorker | None = None
        self._health_refresh = Spawner()
        self._scheduler: PriorityScheduler | None = None
        self._store: StoreSync | None = None
        self.core: InferenceCore | None = None
        """How requests run, whichever way they come (a co-hosted group calls it directly)."""
        self.kserve: KServeServicer | None = None
        """Its KServe v2 model, which a co-hosted group's own gRPC port also serves."""

    @property
    def model(self) -> OnnxModel | None:
        """The session serving requests that name no version (None while none is loaded)."""
        current = self.host.current if self.host is not None else None
        return current.model if current is not None else None

    async def start(self) -> Self:
        if self._server is not None:
            return self
        cfg = self.config
        bucket = address(cfg.repository)
        nc = None
        if bucket is not None:
            # The store is on the bus: NATS first, then the model it holds.
            nc = await self._connect(cfg.nats_url, self.replica)
            self._store = await _fetch_from_store(nc, bucket, cfg)
            cfg = replace(cfg, repository=self._store.root, reload_poll_s=0)
        metrics = ModelMetrics(cfg.model)
        self.metrics = metrics
        self.host = ModelHost(cfg, on_batch=metrics.batch, on_change=self._on_versions)
        await self.host.load()
        self.host.mark_seen()
        first = self.host.current
        assert first is not None
        self.scheduler = self._scheduler = PriorityScheduler(
            f"model {cfg.model}",
            _slots(first.model),
            dict.fromkeys(Priority, cfg.queue_limit),
            aging_s=cfg.aging_s,
        )
        for p in Priority:
            metrics.queue.labels(cfg.model, p.label).set_function(
                functools.partial(self.scheduler.depth, p)
            )
        core = self.core = InferenceCore(cfg.model, metrics, self.scheduler)
        if first.model.device == "cuda":
            gpu = nvml_collector(cfg.model)
            if gpu is not None:
                metrics.registry.register(gpu)
        self._serve_metrics(cfg.host, cfg.metrics_port, metrics.registry, endpoint=cfg.own_ports)
        self.kserve = KServeServicer(self.host, metrics, core, cfg.default_budget_s)
        health = None
        if cfg.own_ports:
            credentials = server_credentials(self.security)
            self._server = server_for(cfg, credentials)
            kserve_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self.kserve, self._server)
            health = add_health_and_reflection(self._server, [KSERVE_SERVICE])
            self.grpc_port = bind(self._server, cfg.host, cfg.grpc_port, credentials)
            await self._server.start()

        if nc is None:
            nc = await self._connect(cfg.nats_url, self.replica)
        self._worker = NatsWorker(
            nc,
            self.host,
            metrics,
            replica=self.replica,
            heartbeat_s=cfg.heartbeat_s,
            default_budget_s=cfg.default_budget_s,
            core=core,
            group=cfg.group,
            group_replica=cfg.group_replica,
        )
        await self._worker.start()
        if health is not None:
            await self.report_health(health, [KSERVE_SERVICE])
        self.host.watch()
        if self._store is not None:
            self._store.follow(self.host)
        ports = f"gRPC {cfg.host}:{self.grpc_port}, metrics :{self.metrics_port}"
        log.info(
            "model %s v%s serving: %s, NATS %s, provider %s",
            cfg.model,
            first.version,
            ports if cfg.own_ports else f"on group {cfg.group}'s ports",
            cfg.nats_url,
            first.model.provider,
        )
        return self

    def _can_serve(self) -> bool:
        return self.host is not None and self.host.ready()

    def _on_versions(self) -> None:
        """Loaded versions changed: metrics, gRPC health and heartbeats say so at once."""
        assert self.host is not None
        self.metrics.loaded([(x.version, x.model.provider) for x in self.host.loaded()])
        current = self.host.current
        if current is not None and self._scheduler is not None:
            self._scheduler.resize(_slots(current.model))
        self._health_refresh.spawn(self._announce(), name="announce-versions")

    async def _announce(self) -> None:
        await self._refresh_health()
        if self._worker is not None:
            await self._worker.announce()

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._server is not None:
            await self._server.stop(grace=STOP_GRACE_S)
            self._server = None
        await super().stop()
        if self.host is not None:
            await self.host.close()
            self.host = None


async def _fetch_from_store(nc: Client, bucket: str, cfg: ModelServiceConfig) -> StoreSync:
    """The model's versions from the store. A store that has no version of the model yet (a
    pod started before its model was pushed) or does not answer yet (a cluster electing a
    leader after losing a node) is asked again, one log line per WAIT_LOG_S, until it does;
    a version refused for its digest is not waited on."""
    said = 0.0
    while True:
        try:
            sync = StoreSync(await ModelStore.open(nc, bucket), cfg.model, cfg.cache_dir / bucket)
            await sync.fetch_all()
            return sync
        except (NotFound, StoreError, nats.errors.TimeoutError, ServiceUnavailableError) as exc:
            if time.monotonic() - said >= WAIT_LOG_S:
                said = time.monotonic()
                why = describe_error(exc) if isinstance(exc, nats.errors.Error) else str(exc)
                log.warning("model %s: waiting for the model store: %s", cfg.model, why)
            await asyncio.sleep(STORE_RETRY_S)


def _slots(model: OnnxModel) -> int:
    """Requests in service at once: enough to fill every instance, or one batch."""
    return max(model.settings.instances, model.settings.max_batch)
