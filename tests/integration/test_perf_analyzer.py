"""Triton's perf_analyzer (tritonclient wheel) loads a real model service over KServe v2 gRPC.

perf_analyzer reads ModelMetadata and Triton's ModelConfig before it sends load; the service
runs with its dynamic batcher on, so the config has max_batch_size 8 and `-b 2` sends two rows
per request. The service's own counters must see every request perf_analyzer reports.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chorus.bench import perfanalyzer
from chorus.demo.build import build_demo
from chorus.launch.mesh import Mesh

MODEL = "logreg"
SHORT_RUN: dict[str, Any] = {
    "concurrency": 2,
    "measurement_ms": 500,
    "batch_size": 2,
    "max_trials": 10,
    # 2 cores shared by client and server: accept up to 2x between the last three windows.
    "stability_percent": 100.0,
    "timeout_s": 60.0,
}


@pytest.fixture(scope="module")
def perf_analyzer() -> None:
    reason = perfanalyzer.unavailable_reason()
    if reason is not None:
        pytest.skip(f"perf_analyzer cannot run here: {reason}")


@pytest.fixture(scope="module")
def service(nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One logreg model service (no router, no fuser): its gRPC and metrics addresses.

    Its own one-model repository: a few seconds, where the shared one builds every demo model.
    """
    repo = tmp_path_factory.mktemp("perf-models")
    build_demo(repo, names=[MODEL])
    mesh = Mesh(repo, tmp_path_factory.mktemp("perf"), models=[MODEL], nats_url=nats_url)
    try:
        child = mesh.spawn(MODEL, mesh.model_command(MODEL), env={"CHORUS_MODEL_MAX_BATCH": "8"})
        yield {"grpc": str(child.ready["grpc"]), "metrics": str(child.ready["metrics"])}
    finally:
        mesh.stop()


def _grpc_requests(metrics: str) -> dict[str, float]:
    """chorus_model_requests_total for transport="grpc", by outcome."""
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "chorus_model_requests_total" and s.labels.get("transport") == "grpc"
    }


def _run_and_check(target: str, metrics: str) -> perfanalyzer.PerfResult:
    before = _grpc_requests(metrics)
    result = perfanalyzer.run(MODEL, target, **SHORT_RUN)
    after = _grpc_requests(metrics)
    ok = after.get("ok", 0.0) - before.get("ok", 0.0)
    failed = {k: v - before.get(k, 0.0) for k, v in after.items() if k != "ok"}

    assert result.concurrency == 2
    assert result.throughput_infer_per_s > 0
    assert 0 < result.p50_us <= result.p90_us <= result.p95_us <= result.p99_us
    assert result.request_count is not None and result.request_count > 0
    # Warm-up and unstable windows are sent too, so the service counts at least the reported.
    assert ok >= result.request_count, result.output
    assert not any(failed.values()), failed
    return result


@pytest.mark.usefixtures("perf_analyzer")
def test_perf_analyzer_completes_a_short_run_against_the_model_service(
    service: dict[str, str],
) -> None:
    _run_and_check(service["grpc"], service["metrics"])
