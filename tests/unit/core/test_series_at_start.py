"""Series exist before traffic: what the services' metrics export from their start and from a
model's first heartbeat, at 0; no `_created` series; a gone replica's breaker leaves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from chorus.core.heartbeat import Heartbeat
from chorus.core.metrics import ERROR_OUTCOMES, OUTCOMES
from chorus.core.spec import TensorSpec
from chorus.fuser.metrics import FuserMetrics
from chorus.router.metrics import RouterMetrics
from chorus.services.metrics import ModelMetrics


def _beat(model: str, replica: str) -> Heartbeat:
    return Heartbeat(
        model=model, version="1", replica=replica, capabilities=("classify/digits", "stack:x"),
        inputs=(TensorSpec("input", "FP32", (-1, 64)),), outputs=(), labels=(),
        scores_output="probabilities", device="cpu", interval_s=1.0,
    )  # fmt: skip


def _samples(registry: CollectorRegistry) -> list[str]:
    return [ln for ln in generate_latest(registry).decode().splitlines() if not ln.startswith("#")]


def test_no_created_series() -> None:
    for registry in (RouterMetrics().registry, FuserMetrics().registry, ModelMetrics("m").registry):
        lines = _samples(registry)
        assert lines and not [ln for ln in lines if "_created" in ln.split("{")[0]]


def test_outcomes_are_every_error_family() -> None:
    assert OUTCOMES[0] == "ok" and "unavailable" in ERROR_OUTCOMES
    assert "deadline_exceeded" in ERROR_OUTCOMES and "internal" in ERROR_OUTCOMES


def test_router_series_start_at_zero_with_a_models_first_heartbeat() -> None:
    m = RouterMetrics()
    read = m.registry.get_sample_value
    for p in ("critical", "normal", "batch"):
        assert read("chorus_router_in_flight", {"priority": p}) == 0
        assert read("chorus_router_async_backlog", {"priority": p}) == 0
    assert read("chorus_router_review_backlog") == 0
    assert read("chorus_router_tasks_total", {"capability": "classify/digits",
                "priority": "normal", "outcome": "ok"}) is None  # fmt: skip

    m.saw_model("mlp", ("classify/digits", "stack:classify/digits"))
    for p in ("critical", "normal", "batch"):
        for o in OUTCOMES:
            labels = {"capability": "classify/digits", "priority": p, "outcome": o}
            assert read("chorus_router_tasks_total", labels) == 0
    assert read("chorus_router_tasks_total", {"capability": "stack:classify/digits",
                "priority": "normal", "outcome": "ok"}) is None  # fmt: skip
    for name in ("chorus_router_member_waiting", "chorus_router_live_replicas",
                 "chorus_router_retries_total", "chorus_router_hedges_total",
                 "chorus_router_member_seconds_count"):  # fmt: skip
        assert read(name, {"model": "mlp"}) == 0, name
    for o in ERROR_OUTCOMES:
        assert read("chorus_router_member_errors_total", {"model": "mlp", "outcome": o}) == 0
    # Seen again, a count is not reset.
    m.tasks.labels("classify/digits", "normal", "ok").inc(3)
    m.saw_model("mlp", ("classify/digits",))
    labels = {"capability": "classify/digits", "priority": "normal", "outcome": "ok"}
    assert read("chorus_router_tasks_total", labels) == 3


def test_breakers_follow_the_live_replicas() -> None:
    for metrics, name in (
        (RouterMetrics(), "chorus_router_circuit_state"),
        (FuserMetrics(), "chorus_fuser_circuit_state"),
    ):
        read = metrics.registry.get_sample_value
        a, b = _beat("forest", "a"), _beat("forest", "b")
        metrics.live_replicas([a, b])
        assert read(name, {"model": "forest", "replica": "a"}) == 0
        circuit = metrics.calls.circuit if isinstance(metrics, FuserMetrics) else metrics.circuit
        circuit.labels("forest", "b").set(1)  # b's breaker opens
        metrics.live_replicas([a, b])
        assert read(name, {"model": "forest", "replica": "b"}) == 1, "an open breaker stays"
        metrics.live_replicas([a])  # b went silent
        assert read(name, {"model": "forest", "replica": "b"}) is None
        assert read(name, {"model": "forest", "replica": "a"}) == 0


def test_model_and_fuser_series_start_at_zero() -> None:
    model = ModelMetrics("mlp").registry.get_sample_value
    for t in ("nats", "grpc"):
        for o in OUTCOMES:
            labels = {"model": "mlp", "transport": t, "outcome": o}
            assert model("chorus_model_requests_total", labels) == 0
    assert model("chorus_model_in_flight", {"model": "mlp"}) == 0
    assert model("chorus_model_batch_size_count", {"model": "mlp"}) == 0
    for p in ("critical", "normal", "batch"):
        assert model("chorus_model_queue_depth", {"model": "mlp", "priority": p}) == 0

    f = FuserMetrics()
    fuser = f.registry.get_sample_value
    assert fuser("chorus_fuser_requests_total", {"policy": "soft_vote", "outcome": "ok"}) == 0
    assert fuser("chorus_fuser_conflicts_total", {"policy": "soft_vote"}) == 0
    assert fuser("chorus_fuser_stacked_tasks_count") == 0
    f.saw_model("mlp")
    for o in ("ok", "retried", "missing"):
        assert fuser("chorus_fuser_collected_answers_total", {"model": "mlp", "outcome": o}) == 0
    assert fuser("chorus_fuser_retries_total", {"model": "mlp"}) == 0
