"""Shared helpers for each service's Prometheus endpoint."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, disable_created_metrics, make_wsgi_app

from chorus.core.errors import CODE_NAMES

# prometheus_client exports a `<name>_created` timestamp series beside every counter and
# histogram child by default: no dashboard, autoscaler or alert reads them, and they were 41 of
# a mesh's 353 series. Every service's metrics module imports this one, so it is off for all.
disable_created_metrics()

OK = "ok"
ERROR_OUTCOMES: tuple[str, ...] = tuple(name.lower() for name in CODE_NAMES)
"""Every `outcome` label a failed call can carry (the gRPC status name, lowercased)."""
OUTCOMES: tuple[str, ...] = (OK, *ERROR_OUTCOMES)

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


def start_at_zero(metric: Any, *label_sets: Sequence[str]) -> None:
    """Create each labelled child now, so its series is scraped as 0 before the first event.

    prometheus_client makes a labelled child on its first use; until then the series is
    absent, and absent is not 0 to PromQL: a sum over it is empty, a ratio has no value and an
    autoscaler's query answers nothing, so KEDA and the HPA see no metric while a mesh idles.
    `labels()` on an existing child returns it unchanged, so calling this again (a heartbeat,
    a new policy) never resets a count or a gauge."""
    for labels in label_sets:
        metric.labels(*labels)


class Children:
    """Labelled series looked up once each: a lookup by labels costs a few microseconds, and a
    task touches about ten. Only for families that never drop a series (FollowedLabels does)."""

    def __init__(self) -> None:
        self._found: dict[tuple[object, ...], Any] = {}

    def __call__(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._found.get(key)
        if child is None:
            child = self._found[key] = metric.labels(*values)
        return child


class FollowedLabels:
    """The children of one labelled metric kept to a set of label values that changes: values
    that arrive start at 0, values that leave are removed.

    For per-replica series (a breaker's state): a replica that stops sending heartbeats is
    never called again, so its last state must not stay behind, read forever by a dashboard
    and an alert as an open breaker of a replica that no longer exists."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self._current: set[tuple[str, ...]] = set()

    def follow(self, current: set[tuple[str, ...]]) -> None:
        start_at_zero(self.metric, *(current - self._current))
        for gone in self._current - current:
            with contextlib.suppress(KeyError):
                self.metric.remove(*gone)
        self._current = current


LIVEZ_PATH = "/livez"
READYZ_PATH = "/readyz"

Liveness = Callable[[], tuple[bool, str]]
"""Answers (alive, or ready, and one line saying why) for GET /livez and /readyz."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _QuietHandler)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds would otherwise fill the log."""


def serve_metrics(
    host: str,
    port: int,
    registry: CollectorRegistry,
    liveness: Liveness | None = None,
    readiness: Liveness | None = None,
) -> tuple[WSGIServer, int]:
    """Start /metrics (and /livez, /readyz, given `liveness`, `readiness`) on a background
    thread; returns the server and the port it bound.

    /livez lives here rather than on gRPC health because it must answer while NATS is down
    (gRPC health then says NOT_SERVING, which is readiness) and it must not answer 200 just
    because this thread runs: `liveness` reads what the service's event loop last did. /readyz
    says what gRPC health says, for a process with no gRPC port of its own to probe (a
    co-hosted group)."""
    metrics = make_wsgi_app(registry)
    probes = {LIVEZ_PATH: liveness, READYZ_PATH: readiness}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = probes.get(environ.get("PATH_INFO", ""))
        if probe is not None:
            ok, why = probe()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [why.encode() + b"\n"]
        return metrics(environ, start_response)

    server = _Server((host, port), _family(host, port))
    server.set_app(app)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server, int(server.server_port)


def stop_metrics(server: WSGIServer | None) -> None:
    """Stop what `serve_metrics` started and free its port; None: nothing was served."""
    if server is not None:
        server.shutdown()
        server.server_close()


def _family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for an IPv6 bind address ("::"), as prometheus_client's own server does."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    return infos[0][0]
