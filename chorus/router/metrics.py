"""Prometheus metrics of one router replica.

Every labelled series starts at 0 as soon as its label values are known (priorities at once;
a model and its capabilities on its first heartbeat; a pipeline when loaded), so the
dashboard, the autoscalers and the alerts read 0 before the first task rather than nothing."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chorus.core.calls.client import CallCounters
from chorus.core.context import Priority
from chorus.core.heartbeat import Heartbeat
from chorus.core.metrics import (
    ERROR_OUTCOMES,
    LATENCY_BUCKETS_S,
    OUTCOMES,
    FollowedLabels,
    start_at_zero,
)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.tasks = Counter(
            "chorus_router_tasks",
            "Tasks by capability, priority and outcome",
            ["capability", "priority", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chorus_router_task_seconds",
            "End-to-end task time inside the router",
            ["capability"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.queue = Gauge(
            "chorus_router_queue_depth",
            "Tasks waiting for a dispatch slot, by priority",
            ["priority"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "chorus_router_in_flight",
            "Tasks being worked on, by priority",
            ["priority"],
            registry=self.registry,
        )
        self.member_latency = Histogram(
            "chorus_router_member_seconds",
            "Round trip to one member model over NATS",
            ["model"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.call_tasks = Histogram(
            "chorus_router_member_call_tasks",
            "Tasks one NATS call to a member carried (several when calls are joined under load)",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.member_waiting = Gauge(
            "chorus_router_member_waiting",
            "Tasks waiting in the router for a model's next joined call",
            ["model"],
            registry=self.registry,
        )
        self.member_errors = Counter(
            "chorus_router_member_errors",
            "Member requests that failed, by model and gRPC status",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.one_way_fallbacks = Counter(
            "chorus_router_one_way_fallbacks",
            "One-way tasks sent again over the two-hop path: no fuser live, or the one asked gone",
            registry=self.registry,
        )
        calls = CallCounters("chorus_router", self.registry)
        self.retries, self.hedges = calls.retries, calls.hedges
        self.chosen, self.circuit = calls.chosen, calls.circuit
        self.replicas = Gauge(
            "chorus_router_live_replicas",
            "Replicas whose heartbeats are current",
            ["model"],
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "chorus_router_heartbeats",
            "Heartbeats received",
            ["model"],
            registry=self.registry,
        )
        self.async_backlog = Gauge(
            "chorus_router_async_backlog",
            "Async tasks in JetStream not yet taken by any router, by priority "
            "(read from the shared consumer every few seconds; the same on every router)",
            ["priority"],
            registry=self.registry,
        )
        self.review_backlog = Gauge(
            "chorus_router_review_backlog",
            "Review cases (rows the fuser escalated) no reviewer has answered yet "
            "(read from JetStream every few seconds; the same on every router)",
            registry=self.registry,
        )
        priorities = [(p.label,) for p in Priority]
        start_at_zero(self.in_flight, *priorities)
        start_at_zero(self.async_backlog, *priorities)
        self._models: set[str] = set()
        self._capabilities: set[str] = set()
        self._breakers = FollowedLabels(self.circuit)

    def live_replicas(self, live: Iterable[Heartbeat]) -> None:
        """The replicas live now: each one's breaker reads closed (0) until it changes, and
        one whose heartbeats stopped leaves the breaker gauge."""
        self._breakers.follow({(hb.model, hb.replica) for hb in live})

    def saw_model(self, model: str, capabilities: tuple[str, ...] = ()) -> None:
        """Start a model's series (and its capabilities') at 0; cheap to call on every
        heartbeat."""
        if model not in self._models:
            self._models.add(model)
            one = [(model,)]
            for per_model in (
                self.member_latency, self.call_tasks, self.member_waiting, self.replicas,
                self.heartbeats, self.retries, self.hedges,
            ):  # fmt: skip
                start_at_zero(per_model, *one)
            start_at_zero(self.member_errors, *[(model, o) for o in ERROR_OUTCOMES])
        for capability in capabilities:
            if ":" not in capability:  # "stack:…", "arbiter:…": roles, not task capabilities
                self.saw_capability(capability)

    def saw_capability(self, capability: str) -> None:
        """Start a capability's (or "pipeline:<name>"'s) task counts and latency at 0, for
        every priority and outcome."""
        if capability in self._capabilities:
            return
        self._capabilities.add(capability)
        start_at_zero(self.latency, (capability,))
        start_at_zero(self.tasks, *[(capability, p.label, o) for p in Priority for o in OUTCOMES])
