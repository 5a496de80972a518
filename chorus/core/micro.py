"""Registering a Chorus service as a NATS micro service (ADR-32), with live numbers in STATS.

nats-py's `nats.micro` answers `$SRV.PING/INFO/STATS`, so `nats micro ls|info|stats` and any
other ADR-32 tool find every replica without Chorus. Without a stats handler it writes
`"data": null` on every endpoint, which the micro v1 STATS schema's earlier revisions reject
and which tells an operator nothing; here every endpoint names a `Data` function whose JSON
object becomes its `data` (in flight, queued per priority, outcomes, mean batch, service time).

The functions run only when a STATS request comes, never per request: they read counters the
service keeps anyway (its scheduler, its Prometheus metrics). nats.micro's own
`processing_time` covers only the handler handing a request to a task (every Chorus handler
spawns its work so requests run concurrently), and its `num_errors` only exceptions escaping
that hand-off; the time and the errors that mean something are in `data`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import nats.micro
from nats.aio.client import Client
from nats.micro.request import Handler
from nats.micro.service import EndpointStats, Service
from prometheus_client import Counter, Gauge, Histogram

import chorus

log = logging.getLogger(__name__)


class Responder(Protocol):
    """A micro request as a handler uses it: nats.micro's Request, or a test's own."""

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...

    async def respond(self, data: bytes = ..., headers: dict[str, str] | None = ...) -> None: ...

    async def respond_error(
        self,
        code: str,
        description: str,
        data: bytes = ...,
        headers: dict[str, str] | None = ...,
    ) -> None: ...


Data = Callable[[], dict[str, Any]]
"""An endpoint's live numbers, as one JSON object (keys and values JSON can carry)."""


@dataclass(frozen=True)
class Endpoint:
    """One micro endpoint: where it listens, who handles a request, what STATS says of it."""

    name: str
    subject: str
    queue_group: str
    handler: Handler
    data: Data


async def register(
    nc: Client,
    *,
    name: str,
    description: str,
    endpoints: Sequence[Endpoint],
    metadata: Mapping[str, str] | None = None,
) -> Service:
    """Start the micro service `name` (version: Chorus's) with `endpoints`; stop it with
    `Service.stop()`. Endpoint names must be unique: STATS finds each one's data by name."""
    by_name = {e.name: e.data for e in endpoints}
    if len(by_name) != len(endpoints):
        raise ValueError(
            f"micro service {name}: endpoint names repeat: {[e.name for e in endpoints]}"
        )

    def stats(endpoint: EndpointStats) -> dict[str, Any]:
        # An exception here would leave the STATS request unanswered (nats.micro raises in
        # its callback); a reply that says what failed is worth more to the operator.
        try:
            return by_name[endpoint.name]()
        except Exception as exc:
            log.error("micro %s: stats of %s: %r", name, endpoint.name, exc, exc_info=exc)
            return {"error": repr(exc)}

    service = await nats.micro.add_service(
        nc,
        name=name,
        version=chorus.__version__,
        description=description,
        metadata=dict(metadata or {}),
        stats_handler=stats,
    )
    for e in endpoints:
        await service.add_endpoint(
            name=e.name, subject=e.subject, queue_group=e.queue_group, handler=e.handler
        )
    return service


def totals(metric: Counter | Gauge, by: str, **where: str) -> dict[str, int]:
    """A labelled counter's or gauge's totals per value of label `by`, over the children
    whose labels match `where` (e.g. a model service's requests per outcome on transport
    nats); a value not seen yet is absent."""
    out: dict[str, int] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name not in (family.name, f"{family.name}_total"):
                continue
            if any(s.labels.get(k) != v for k, v in where.items()):
                continue
            key = s.labels[by]
            out[key] = out.get(key, 0) + int(s.value)
    return out


def mean(histogram: Histogram, **where: str) -> float:
    """A histogram's mean over the children whose labels match `where`; 0 before the first
    observation (as the dashboards show it), never NaN, which JSON cannot carry."""
    total = count = 0.0
    for family in histogram.collect():
        for s in family.samples:
            if any(s.labels.get(k) != v for k, v in where.items()):
                continue
            if s.name.endswith("_sum"):
                total += s.value
            elif s.name.endswith("_count"):
                count += s.value
    return total / count if count else 0.0
