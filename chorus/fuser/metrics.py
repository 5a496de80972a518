"""Prometheus metrics of one fuser replica."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chorus.core.calls.client import CallCounters
from chorus.core.metrics import LATENCY_BUCKETS_S


class FuserMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.calls = CallCounters("chorus_fuser", self.registry)
        self.collected = Counter(
            "chorus_fuser_collected_answers",
            "Member answers received directly on the one-way path, by model and outcome "
            "(ok, retried: answered by another replica, missing)",
            ["model", "outcome"],
            registry=self.registry,
        )
        """The negotiation, arbiter and stacking calls to members."""
        self.requests = Counter(
            "chorus_fuser_requests",
            "Fusion requests by policy and outcome",
            ["policy", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "chorus_fuser_fuse_seconds",
            "Time to fuse one request",
            ["policy"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.stacked = Histogram(
            "chorus_fuser_stacked_tasks",
            "Tasks fused together in one stacked pass (their members answered together)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.agreement = Histogram(
            "chorus_fuser_agreement_ratio",
            "Share of members agreeing with the fused answer, per row",
            ["policy"],
            buckets=(0.0, 0.25, 0.34, 0.5, 0.67, 0.75, 0.99, 1.0),
            registry=self.registry,
        )
        self.decisions = Counter(
            "chorus_fuser_decisions",
            "Rows by fusion policy, conflict policy and how they ended",
            ["policy", "conflict_policy", "status"],
            registry=self.registry,
        )
        self.weights = Gauge(
            "chorus_fuser_model_weight",
            "Current weight of each member, as learned from feedback",
            ["capability", "model"],
            registry=self.registry,
        )
        self.conflicts = Counter(
            "chorus_fuser_conflicts",
            "Rows on which the members did not all agree",
            ["policy"],
            registry=self.registry,
        )
