"""Prometheus metrics of one fuser replica.

The default fusion policy's series start at 0 (every outcome, agreed and conflicted rows), and
a model's on its first heartbeat, so queries read 0 before the first task rather than nothing.
Another policy's series appear on its first use."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chorus.core.calls.client import CallCounters
from chorus.core.heartbeat import Heartbeat
from chorus.core.metrics import (
    LATENCY_BUCKETS_S,
    OUTCOMES,
    Children,
    FollowedLabels,
    start_at_zero,
)
from chorus.core.wire import DEFAULT_POLICY

COLLECTED_OUTCOMES = ("ok", "retried", "missing")
NO_CONFLICT_POLICY = "none"
"""The router's default conflict policy: rows end agreed or conflicted."""


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
        start_at_zero(self.requests, *[(DEFAULT_POLICY, o) for o in OUTCOMES])
        for per_policy in (self.latency, self.agreement, self.conflicts):
            start_at_zero(per_policy, (DEFAULT_POLICY,))
        start_at_zero(
            self.decisions,
            *[(DEFAULT_POLICY, NO_CONFLICT_POLICY, s) for s in ("agreed", "conflicted")],
        )
        self._models: set[str] = set()
        self._breakers = FollowedLabels(self.calls.circuit)
        self._child = Children()

    def fused(
        self,
        policy: str,
        conflict_policy: str,
        seconds: float,
        agreement: Iterable[float],
        conflicted: int,
        statuses: Iterable[str],
        capability: str,
        weights: dict[str, float],
    ) -> None:
        """One task fused: its outcome, latency, each row's agreement and decision, and the
        weights its members had."""
        self._child(self.requests, policy, "ok").inc()
        self._child(self.latency, policy).observe(seconds)
        for a in agreement:
            self._child(self.agreement, policy).observe(a)
        self._child(self.conflicts, policy).inc(conflicted)
        for status in statuses:
            self._child(self.decisions, policy, conflict_policy, status).inc()
        for model, weight in weights.items():
            self._child(self.weights, capability, model).set(weight)

    def live_replicas(self, live: Iterable[Heartbeat]) -> None:
        """The replicas live now: each one's breaker reads closed (0) until it changes, and
        one whose heartbeats stopped leaves the breaker gauge."""
        self._breakers.follow({(hb.model, hb.replica) for hb in live})

    def saw_model(self, model: str) -> None:
        """Start a model's series at 0 (answers collected, retries, hedges); cheap to call on
        every heartbeat."""
        if model in self._models:
            return
        self._models.add(model)
        start_at_zero(self.collected, *[(model, o) for o in COLLECTED_OUTCOMES])
        start_at_zero(self.calls.retries, (model,))
        start_at_zero(self.calls.hedges, (model,))
