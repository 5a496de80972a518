"""Prometheus metrics of one router replica."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chorus.metrics import LATENCY_BUCKETS_S


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
        self.member_errors = Counter(
            "chorus_router_member_errors",
            "Member requests that failed, by model and gRPC status",
            ["model", "outcome"],
            registry=self.registry,
        )
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
