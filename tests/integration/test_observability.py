"""Under real load, every metric the dashboard and the autoscalers read exists and moves, and
the KEDA/HPA formula fed with scraped in-flight values scales up, then back down when idle."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.core import subjects
from chorus.core.heartbeat import Heartbeat
from chorus.core.spec import TensorSpec
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from chorus.planner.autoscale import prometheus_scaling
from tests.support import DEMO, scrape, total
from tests.support.k8s_refs import referenced_metric_names, scaled_objects

SLOW = "forest"
MOVING_SUFFIXES = ("_total", "_count", "_sum", "_bucket")
ON_FAULTS_ONLY = re.compile(r"chorus_(router|fuser)_(retries|hedges|one_way_fallbacks)_total")
"""Counters a healthy load leaves at 0 (a slow or failed attempt, a fuser gone): they must be
exported; tests/unit/calls/test_member_calls.py and tests/integration/test_one_way.py make
them move."""


@pytest.fixture(scope="module")
def slow_mesh(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh of its own (own NATS), with one member slowed so that load queues up on it."""
    tmp = tmp_path_factory.mktemp("observability")
    with (
        NatsServer(tmp / "js") as server,
        Mesh(
            model_repo, tmp / "mesh", models=DEMO, nats_url=server.url,
            model_args={SLOW: ["--delay-ms", "40"]},
        ) as mesh,
    ):  # fmt: skip
        yield mesh


def _load(
    target: str, clients: int, seconds: float, errors: list[BaseException] | None = None
) -> list[int]:
    """Closed-loop callers; a caller whose task fails stops, and its error goes to `errors`
    (a test that needs the load to last must check it, or it measures idle callers)."""
    done = [0] * clients
    stop = time.monotonic() + seconds
    x = {"input": np.zeros((1, 64), np.float32)}

    def run(i: int) -> None:
        with TaskClient(target) as client:
            while time.monotonic() < stop:
                try:
                    client.submit("classify/digits", x, timeout_s=10)
                except Exception as exc:
                    if errors is not None:
                        errors.append(exc)
                    return
                done[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done


async def _announce_ghost(url: str) -> None:
    """A replica that announces itself and never answers: member errors must show."""
    ghost = Heartbeat(
        model="ghost", version="1", replica="ghost-0", capabilities=("classify/digits",),
        inputs=(TensorSpec("input", "FP32", (-1, 64)),), outputs=(), labels=(),
        scores_output="probabilities", device="cpu", interval_s=1.0,
    )  # fmt: skip
    nc = await nats.connect(url)
    await nc.publish(subjects.heartbeat("ghost"), ghost.to_json())
    await nc.flush()
    await nc.close()


async def test_every_referenced_metric_exists_and_moves(slow_mesh: Mesh) -> None:
    services = {c.name: str(c.ready["metrics"]) for c in slow_mesh.children}
    before = {s: scrape(a) for s, a in services.items()}
    await _announce_ghost(slow_mesh.nats_url)
    sampled: dict[str, float] = {}
    loader = threading.Thread(target=_load, args=(slow_mesh.router_target, 8, 2.0))
    loader.start()
    time.sleep(0.5)
    # A gauge: sampled through the load, since one scrape can fall between two calls.
    seen = [0.0]
    while loader.is_alive():
        seen.append(total(scrape(services[SLOW]), "chorus_model_in_flight"))
        time.sleep(0.05)
    sampled["chorus_model_in_flight"] = max(seen)
    loader.join()
    after = {s: scrape(a) for s, a in services.items()}

    # The GPU panels' metrics come from NVML, on models that run on CUDA only.
    on_cuda = any(
        n == "chorus_model_info" and dict(labels).get("provider") == "CUDAExecutionProvider"
        for samples in after.values()
        for n, labels in samples
    )
    missing, still = [], []
    for name in sorted(referenced_metric_names()):
        if name.startswith("chorus_model_gpu_") and not on_cuda:
            continue
        present = [s for s in services if any(n == name for n, _ in after[s])]
        if not present:
            missing.append(name)
            continue
        if name.endswith(MOVING_SUFFIXES) and not ON_FAULTS_ONLY.fullmatch(name):
            delta = sum(total(after[s], name) - total(before[s], name) for s in present)
            if delta <= 0:
                still.append(name)
    assert not missing, f"referenced but never exported: {missing}"
    assert not still, f"did not move under load: {still}"
    assert sampled["chorus_model_in_flight"] > 0
    assert total(after["router"], "chorus_router_live_replicas") >= len(DEMO)


def _wait_for_ghost_to_expire(router_metrics: str, timeout_s: float = 15.0) -> None:
    """A silent replica still in the registry holds every task it is picked for until the
    fuser gives up on it, so demand waits there instead of on the slow member's slots."""
    stop = time.monotonic() + timeout_s
    while time.monotonic() < stop:
        if total(scrape(router_metrics), "chorus_router_live_replicas", model="ghost") == 0:
            return
        time.sleep(0.2)
    raise AssertionError("the ghost replica's heartbeat never expired in the router")


def _demand(model_metrics: str, router_metrics: str) -> tuple[float, float]:
    """The slow model's tasks in flight, and those plus the tasks waiting for its slot in the
    router: what the KEDA rule reads per replica."""
    in_flight = total(scrape(model_metrics), "chorus_model_in_flight")
    return in_flight, in_flight + total(
        scrape(router_metrics), "chorus_router_member_waiting", model=SLOW
    )


def test_scaling_formula_rises_under_load_and_falls_when_idle(slow_mesh: Mesh) -> None:
    router = str(slow_mesh.child("router").ready["metrics"])
    _wait_for_ghost_to_expire(router)
    rule = prometheus_scaling(
        next(o for o in scaled_objects() if o["spec"]["scaleTargetRef"]["name"].endswith(SLOW))
    )
    metrics = str(slow_mesh.child(SLOW).ready["metrics"])
    assert "chorus_router_member_waiting" in rule.query
    values: list[float] = []
    errors: list[BaseException] = []
    loader = threading.Thread(target=_load, args=(slow_mesh.router_target, 16, 2.5, errors))
    loader.start()
    time.sleep(0.8)
    # The rule's demand: in flight on the model plus waiting for its slot in the router, over
    # its one replica. Joined calls make in-flight alternate between a big and a small call
    # every service time or so; a fixed sampling period can lock onto one phase, a random one
    # cannot.
    rng = np.random.default_rng(7)
    on_model: list[float] = []
    while loader.is_alive():
        in_flight, demand = _demand(metrics, router)
        on_model.append(in_flight)
        values.append(demand)
        time.sleep(rng.uniform(0.01, 0.07))
    loader.join()
    busy = float(np.mean(values))
    time.sleep(0.3)
    _, idle = _demand(metrics, router)

    replicas = rule.min_replicas
    scaled_up = rule.desired_replicas(replicas, busy)
    scaled_down = rule.desired_replicas(scaled_up, idle)
    print(
        f"\ndemand busy {busy:.1f} (in flight on the model {np.mean(on_model):.1f}) -> "
        f"{scaled_up} replicas; idle {idle} -> {scaled_down}"
    )
    assert not errors, f"{len(errors)} callers stopped early; the first: {errors[0]!r}"
    assert busy > rule.target_value
    assert busy > np.mean(on_model), "the router's queue for the model adds to its demand"
    assert scaled_up > replicas
    assert idle == 0
    assert scaled_down == rule.min_replicas
