"""Prometheus metrics of one model service (its own registry, so tests can run several).

Every series starts at 0 when the service starts (each transport and outcome, each priority's
queue), so the dashboard and the autoscalers read 0 from an idle replica rather than nothing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chorus.core.context import Priority
from chorus.core.metrics import LATENCY_BUCKETS_S, OUTCOMES, Children, start_at_zero

TRANSPORTS = ("nats", "grpc")
"""How a request reached the model: a member call over NATS, or KServe v2 over gRPC."""


class ModelMetrics:
    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chorus_model_requests",
            "Inference requests by transport and outcome",
            ["model", "transport", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chorus_model_inference_seconds",
            "ONNX Runtime compute time per request",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.rows = Histogram(
            "chorus_model_batch_size",
            "Rows per inference call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=self.registry,
        )
        self.queue = Gauge(
            "chorus_model_queue_depth",
            "Requests waiting for an inference slot, by priority",
            ["model", "priority"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "chorus_model_in_flight", "Requests being served", ["model"], registry=self.registry
        )
        self.info = Gauge(
            "chorus_model_info",
            "Loaded model versions and the execution provider each runs on",
            ["model", "version", "provider"],
            registry=self.registry,
        )
        self.model = model
        start_at_zero(self.requests, *[(model, t, o) for t in TRANSPORTS for o in OUTCOMES])
        for per_model in (self.latency, self.rows, self.in_flight):
            start_at_zero(per_model, (model,))
        start_at_zero(self.queue, *[(model, p.label) for p in Priority])
        # The series every request touches, looked up once (Children).
        self._child = Children()
        self._latency = self.latency.labels(model)
        self._rows = self.rows.labels(model)
        self._in_flight = self.in_flight.labels(model)

    def loaded(self, versions: list[tuple[str, str]]) -> None:
        """The (version, provider) pairs loaded now; unloaded ones leave the gauge."""
        self.info.clear()
        for version, provider in versions:
            self.info.labels(self.model, version, provider).set(1)

    def observe(self, transport: str, outcome: str, rows: int = 0, seconds: float = 0.0) -> None:
        self._child(self.requests, self.model, transport, outcome).inc()
        if outcome == "ok":
            self._latency.observe(seconds)

    def batch(self, rows: int) -> None:
        """Rows in one ONNX Runtime call (several requests' when batching)."""
        self._rows.observe(rows)

    def serving(self, tasks: int) -> None:
        """`tasks` more (or, negative, fewer) in flight."""
        self._in_flight.inc(tasks)
