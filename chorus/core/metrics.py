"""Shared helpers for each service's Prometheus endpoint."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


LIVEZ_PATH = "/livez"

Liveness = Callable[[], tuple[bool, str]]
"""Answers (alive, one line saying why) for GET /livez."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _QuietHandler)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds would otherwise fill the log."""


def serve_metrics(
    host: str, port: int, registry: CollectorRegistry, liveness: Liveness | None = None
) -> tuple[WSGIServer, int]:
    """Start /metrics (and /livez, given `liveness`) on a background thread; returns the
    server and the port it bound.

    /livez lives here rather than on gRPC health because it must answer while NATS is down
    (gRPC health then says NOT_SERVING, which is readiness) and it must not answer 200 just
    because this thread runs: `liveness` reads what the service's event loop last did."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if liveness is not None and environ.get("PATH_INFO") == LIVEZ_PATH:
            alive, why = liveness()
            status = "200 OK" if alive else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [why.encode() + b"\n"]
        return metrics(environ, start_response)

    server = _Server((host, port), _family(host, port))
    server.set_app(app)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server, int(server.server_port)


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for an IPv6 bind address ("::"), as prometheus_client's own server does."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]
