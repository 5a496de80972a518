"""The group's merged scrape: every registry's families once each, valid exposition text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from chorus.group.metrics import GroupMetrics


def _member(model: str, up: float) -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("chorus_model_requests", "r", ["model"], registry=registry).labels(model).inc(3)
    Gauge("chorus_model_nats_connected", "n", registry=registry).set(up)
    return registry


def test_families_two_registries_share_are_written_once_with_each_series_once() -> None:
    in_flight = [2.0]
    metrics = GroupMetrics("digits", lambda: in_flight[0], [_member("a", 1), _member("b", 0)])
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert text.count("# TYPE chorus_model_requests_total counter") == 1
    totals = {
        s.labels["model"]: s.value
        for s in families["chorus_model_requests"].samples
        if s.name.endswith("_total")
    }
    assert totals == {"a": 3.0, "b": 3.0}
    (up,) = families["chorus_model_nats_connected"].samples
    assert up.value == 1.0  # the first registry's
    (group,) = families["chorus_group_tasks_in_flight"].samples
    assert (group.labels, group.value) == ({"group": "digits"}, 2.0)
    in_flight[0] = 5.0
    again = generate_latest(metrics.registry).decode()
    assert 'chorus_group_tasks_in_flight{group="digits"} 5.0' in again
