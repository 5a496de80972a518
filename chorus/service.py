"""What every Chorus service process shares: its NATS connection, its /metrics endpoint, and
an idempotent start/stop usable as an async context manager."""

from __future__ import annotations

from types import TracebackType
from typing import Self
from wsgiref.simple_server import WSGIServer

import nats
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from chorus.metrics import serve_metrics


class ServiceBase:
    def __init__(self) -> None:
        self.metrics_port = 0
        self._nc: Client | None = None
        self._metrics_server: WSGIServer | None = None

    async def start(self) -> Self:
        raise NotImplementedError

    async def stop(self) -> None:
        """Subclasses stop their own parts first, then call this."""
        if self._nc is not None:
            await self._nc.drain()
            self._nc = None
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    def _serve_metrics(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._metrics_server, self.metrics_port = serve_metrics(host, port, registry)

    async def _connect(self, url: str, name: str) -> Client:
        self._nc = await nats.connect(url, name=name, max_reconnect_attempts=-1)
        return self._nc

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
