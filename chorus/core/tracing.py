"""OpenTelemetry traces across router -> members -> fuser; off unless an OTLP endpoint is set.

The W3C `traceparent` travels in the same NATS headers as the deadline, so one task is one
trace however many processes it crosses. When tracing is off nothing is injected or
extracted, so the hot path pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from chorus.core.config import TracingConfig

log = logging.getLogger(__name__)
_propagator = TraceContextTextMapPropagator()
_enabled = False
_provider: object | None = None


def setup(service_name: str, config: TracingConfig) -> bool:
    """Install an OTLP exporter for this process; returns whether tracing is on."""
    global _enabled, _provider
    if not config.otlp_endpoint or _enabled:
        return _enabled
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    insecure = config.otlp_endpoint.startswith("http://")
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=config.otlp_endpoint, insecure=insecure))
    )
    trace.set_tracer_provider(provider)
    _provider, _enabled = provider, True
    log.info("tracing to %s as %s", config.otlp_endpoint, service_name)
    return True


def shutdown() -> None:
    """Flush spans still buffered; called when a service stops."""
    shutdown_fn = getattr(_provider, "shutdown", None)
    if shutdown_fn is not None:
        shutdown_fn()


def enabled() -> bool:
    return _enabled


def inject(headers: dict[str, str]) -> dict[str, str]:
    if _enabled:
        _propagator.inject(headers)
    return headers


@contextmanager
def span(
    name: str,
    headers: dict[str, str] | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: str | int | float,
) -> Iterator[Span | None]:
    """A span that continues the trace found in `headers` (if any), current while inside."""
    if not _enabled:
        yield None
        return
    parent = _propagator.extract(headers) if headers else None
    token = context.attach(parent) if parent is not None else None
    try:
        tracer = trace.get_tracer("chorus")
        with tracer.start_as_current_span(name, kind=kind, attributes=attributes) as s:
            yield s
    finally:
        if token is not None:
            context.detach(token)
