"""Prometheus metrics of one router replica."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chorus.core.calls.client import CallCounters
from chorus.core.metrics import LATENCY_BUCKETS_S


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
