"""A co-hosted group's one metrics endpoint: its members' model metrics, its fuser's and its
own in one scrape, as a pod exposes one metrics port and Prometheus scrapes that."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from chorus.core.metrics import OUTCOMES, start_at_zero

TRANSPORTS = ("nats", "grpc", "grpc_stream")
"""How a task reached the group: a router's over NATS, or its KServe model's, unary or on a
stream."""


class Merged(Collector):
    """The families of several registries as one: a family two of them export (each member's
    `chorus_model_nats_connected`, say) is written once, the first sample of each series
    kept, so the scrape stays valid exposition text."""

    def __init__(self, registries: Sequence[CollectorRegistry]) -> None:
        self.registries = list(registries)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        seen: dict[str, set[tuple[str, tuple[tuple[str, str], ...]]]] = {}
        for registry in self.registries:
            for family in registry.collect():
                have = families.setdefault(family.name, family)
                keys = seen.setdefault(family.name, set())
                fresh = []
                for s in family.samples:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    if key not in keys:
                        keys.add(key)
                        fresh.append(s)
                if have is family:
                    family.samples = fresh
                else:
                    have.samples.extend(fresh)
        yield from families.values()


class GroupMetrics:
    def __init__(
        self,
        group: str,
        in_flight: Callable[[], float],
        sources: Sequence[CollectorRegistry] = (),
    ) -> None:
        """`in_flight`: the tasks the group replica is answering now, read at each scrape
        (its autoscaler's demand); `sources`: the members' and the fuser's registries."""
        self.registry = CollectorRegistry()
        self.tasks_in_flight = Gauge(
            "chorus_group_tasks_in_flight",
            "Tasks this group replica is answering now",
            ["group"],
            registry=self.registry,
        )
        self.tasks_in_flight.labels(group).set_function(in_flight)
        self.tasks = Counter(
            "chorus_group_tasks",
            "Tasks this group replica answered, by how they came (nats: a router's; grpc, "
            "grpc_stream: its KServe model's) and outcome",
            ["group", "transport", "outcome"],
            registry=self.registry,
        )
        start_at_zero(self.tasks, *[(group, t, o) for t in TRANSPORTS for o in OUTCOMES])
        self.group = group
        if sources:
            self.registry.register(Merged(sources))

    def answered(self, transport: str, outcome: str) -> None:
        self.tasks.labels(self.group, transport, outcome).inc()
