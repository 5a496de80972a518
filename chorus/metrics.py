"""Shared helpers for each service's Prometheus endpoint."""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

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


def serve_metrics(host: str, port: int, registry: CollectorRegistry) -> tuple[WSGIServer, int]:
    """Start /metrics on a background thread; returns the server and the port it bound."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, int(server.server_port)
