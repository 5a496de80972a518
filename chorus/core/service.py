"""What every Chorus service process shares: its NATS connection, its /metrics endpoint, and
an idempotent start/stop usable as an async context manager."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

from grpc_health.v1 import health
from nats.aio.client import Client
from prometheus_client import CollectorRegistry, Gauge

from chorus.core import tracing
from chorus.core.config import JetStreamConfig, LivenessConfig, SecurityConfig, TracingConfig
from chorus.core.environment import from_env
from chorus.core.errors import describe_error
from chorus.core.grpcserver import set_serving
from chorus.core.jetstream import replicas_for, servers
from chorus.core.metrics import serve_metrics, stop_metrics
from chorus.core.security import nats_options
from chorus.core.spawner import cancel

log = logging.getLogger(__name__)

NATS_ERROR_LOG_INTERVAL_S = 30.0
"""While NATS stays unreachable, one line per this many seconds, not a traceback per attempt."""

LIVENESS_TICK_S = 1.0
"""The event loop's tick for GET /livez; well under LivenessConfig.stall_s."""


class ServiceBase:
    kind = "service"
    """Metric prefix and trace service name: router, model or fuser."""

    def __init__(self) -> None:
        self.security = from_env(SecurityConfig, "security")
        self.metrics_port = 0
        self._nc: Client | None = None
        self._metrics_server: WSGIServer | None = None
        self._nats_up: Gauge | None = None
        self._health: health.aio.HealthServicer | None = None
        self._health_names: list[str] = []
        self.nats_url = ""
        self.jetstream_replicas = 1
        self.nats_error: Exception | None = None
        """The last connection error, so a process stopped while waiting for NATS can say why."""
        self._nats_error_logged = 0.0
        self.liveness = from_env(LivenessConfig, "liveness")
        self._last_tick = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> Self:
        raise NotImplementedError

    @property
    def nc(self) -> Client:
        """This service's NATS connection, once started (a co-hosted group shares its fuser's)."""
        if self._nc is None:
            raise RuntimeError(f"{self.kind} service: not connected to NATS yet")
        return self._nc

    async def stop(self) -> None:
        """Subclasses stop their own parts first, then call this."""
        tracing.shutdown()
        await cancel(self._ticker)
        self._ticker = None
        if self._nc is not None:
            # Draining waits for a server; with NATS gone, close at once instead.
            if self._nc.is_connected:
                await self._nc.drain()
            else:
                await self._nc.close()
            self._nc = None
        stop_metrics(self._metrics_server)
        self._metrics_server = None

    def _serve_metrics(
        self, host: str, port: int, registry: CollectorRegistry, *, endpoint: bool = True
    ) -> None:
        """`endpoint` off: the registry is served elsewhere (a co-hosted group's one port)."""
        self._nats_up = Gauge(
            f"chorus_{self.kind}_nats_connected",
            "1 while the NATS connection is up",
            registry=registry,
        )
        self._last_tick = time.monotonic()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        if endpoint:
            self._metrics_server, self.metrics_port = serve_metrics(
                host, port, registry, liveness=self.alive, readiness=self.ready
            )

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(LIVENESS_TICK_S)

    def alive(self) -> tuple[bool, str]:
        """Liveness for GET /livez, called on the metrics thread: whether the event loop
        still runs its tick. NATS and every other service are left out on purpose (readiness
        covers them), so an outage of either restarts nothing."""
        age = time.monotonic() - self._last_tick
        if age < self.liveness.stall_s:
            return True, f"ok: event loop ticked {age:.1f} s ago"
        return False, (
            f"{self.kind}: event loop stalled: no tick for {age:.1f} s "
            f"(limit {self.liveness.stall_s:g} s, CHORUS_LIVENESS_STALL_S)"
        )

    def ready(self) -> tuple[bool, str]:
        """Readiness for GET /readyz, called on the metrics thread: what gRPC health says."""
        if self._nc is None or not self._nc.is_connected:
            return False, f"{self.kind}: not connected to NATS"
        if not self._can_serve():
            return False, f"{self.kind}: not ready to serve yet"
        return True, f"ok: {self.kind} serving"

    async def _connect(self, url: str, name: str) -> Client:
        tracing.setup(f"chorus-{self.kind}", from_env(TracingConfig, "tracing"))

        async def down() -> None:
            await self._nats_state(False)

        async def up() -> None:
            await self._nats_state(True)
            await self._reconnected()

        async def error(exc: Exception) -> None:
            self.nats_error = exc
            now = time.monotonic()
            if now - self._nats_error_logged >= NATS_ERROR_LOG_INTERVAL_S:
                self._nats_error_logged = now
                log.warning("NATS at %s: %s (retrying)", url, describe_error(exc))

        self.nats_url = url
        jetstream = from_env(JetStreamConfig, "jetstream")
        # Held before connecting, so stop() can close a connection still retrying.
        self._nc = Client()
        await self._nc.connect(
            servers(url),
            name=name,
            max_reconnect_attempts=-1,
            ping_interval=jetstream.ping_interval_s,
            max_outstanding_pings=2,
            disconnected_cb=down,
            reconnected_cb=up,
            error_cb=error,
            **nats_options(self.security),
        )
        self.nats_error = None
        self.jetstream_replicas = replicas_for(self._nc, jetstream)
        log.info("NATS %s; JetStream streams and buckets keep %d replica(s)",
                 url, self.jetstream_replicas)  # fmt: skip
        await self._nats_state(True)
        return self._nc

    async def _nats_state(self, connected: bool) -> None:
        """Readiness follows NATS: a service that cannot reach NATS cannot serve the mesh."""
        if self._nats_up is not None:
            self._nats_up.set(1 if connected else 0)
        if self._health is not None:
            await set_serving(self._health, self._health_names, connected and self._can_serve())

    async def _reconnected(self) -> None:
        """Called after the NATS client reconnects (to any node of the cluster)."""

    def _can_serve(self) -> bool:
        """Whatever besides NATS this service needs to serve (a model service: a model)."""
        return True

    async def _refresh_health(self) -> None:
        await self._nats_state(self._nc is not None and self._nc.is_connected)

    async def report_health(self, servicer: health.aio.HealthServicer, names: list[str]) -> None:
        """Report SERVING on gRPC health from now on, for as long as NATS is connected (a
        co-hosted group's port reports its fuser's connection)."""
        self._health, self._health_names = servicer, names
        await self._refresh_health()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
