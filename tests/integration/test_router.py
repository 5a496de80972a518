"""The router as the seeds describe it, on real processes: load-aware replica choice, priority
under overload, failover when a replica is killed, and durable async tasks that survive the
router itself being killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from chorus.pb import task_pb2, task_pb2_grpc
from tests.support import DEMO, drive, request


@pytest.fixture(scope="module")
def two_replicas(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Every demo model twice: one replica as is, one slowed by 25 ms; plus a second router
    that leaves replica choice to the NATS queue group (the baseline)."""
    tmp = tmp_path_factory.mktemp("replicas")
    env = {"CHORUS_ROUTER_ATTEMPT_TIMEOUT_S": "0.5"}
    with (
        NatsServer(tmp / "js") as server,
        Mesh(model_repo, tmp / "mesh", models=DEMO, nats_url=server.url, extra_env=env) as mesh,
    ):
        for m in DEMO:
            mesh.spawn(f"{m}-slow", [*mesh.model_command(m), "--delay-ms", "25"])
        mesh.spawn(
            "router-qg",
            ["router", "--grpc-port", "0", "--nats-url", mesh.nats_url],
            env={"CHORUS_ROUTER_REPLICA_CHOICE": "queue_group", "CHORUS_ROUTER_HEDGE": "0"},
        )
        _wait_replicas(mesh, 2 * len(DEMO))
        yield mesh


def _wait_replicas(mesh: Mesh, n: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(mesh.router_target) as ch:
        stub = task_pb2_grpc.TaskServiceStub(ch)
        while time.monotonic() < deadline:
            models = stub.ListModels(task_pb2.ListModelsRequest(), timeout=5).models
            if sum(len(m.replicas) for m in models) >= n:
                return
            time.sleep(0.1)
    raise TimeoutError(f"fewer than {n} replicas alive")


async def test_load_aware_choice_prefers_the_fast_replica(two_replicas: Mesh) -> None:
    fast = {str(two_replicas.child(m).ready["replica"]) for m in DEMO}
    qg_target = str(two_replicas.child("router-qg").ready["grpc"])
    reqs = [request(i) for i in range(150)]
    await drive(two_replicas.router_target, reqs[:30], 4)  # warm the router's view
    p2c = await drive(two_replicas.router_target, reqs, 4)
    qg = await drive(qg_target, reqs, 4)
    answered = [m.replica for _, r in p2c for m in r.members]  # type: ignore[union-attr]
    share_fast = sum(r in fast for r in answered) / len(answered)
    p50_p2c = float(np.median([t for t, _ in p2c])) * 1000
    p50_qg = float(np.median([t for t, _ in qg])) * 1000
    print(f"\nfast replica share {share_fast:.1%}; p50 power-of-two {p50_p2c:.1f} ms, "
          f"queue group {p50_qg:.1f} ms")  # fmt: skip
    assert share_fast >= 0.8
    assert p50_p2c < p50_qg


async def test_sigkill_a_replica_during_a_burst(two_replicas: Mesh) -> None:
    reqs = [request(i, deadline_ms=3000) for i in range(240)]
    victim = two_replicas.child("forest")

    async def kill_soon() -> None:
        await asyncio.sleep(0.4)
        os.kill(victim.proc.pid, signal.SIGKILL)

    results, _ = await asyncio.gather(drive(two_replicas.router_target, reqs, 8), kill_soon())
    ok = [r for _, r in results if isinstance(r, task_pb2.SubmitResponse)]
    failed = [r for _, r in results if isinstance(r, grpc.RpcError)]
    slowest = max(t for t, _ in results)
    print(f"\n{len(ok)} succeeded, {len(failed)} failed, slowest {slowest * 1000:.0f} ms")
    assert victim.proc.wait(timeout=5) == -signal.SIGKILL
    assert slowest < 3.0 + 0.5, "a request outlived its deadline"
    for err in failed:
        assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert err.details()
    assert len(ok) >= 0.99 * len(reqs)
    # Every answered task still has all three members: forest answered from its other replica.
    assert all(len(r.members) == len(DEMO) for r in ok[-50:])


@pytest.fixture(scope="module")
def overloaded(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """One model, 20 ms per call, one slot; the router dispatches two tasks at a time."""
    tmp = tmp_path_factory.mktemp("overload")
    env = {"CHORUS_ROUTER_MAX_CONCURRENT_TASKS": "2", "CHORUS_ROUTER_HEDGE": "0"}
    with NatsServer(tmp / "js") as server, Mesh(
        model_repo, tmp / "mesh", models=["logreg"], nats_url=server.url, extra_env=env,
        model_args={"logreg": ["--delay-ms", "20"]},
    ) as mesh:  # fmt: skip
        yield mesh


async def test_critical_stays_fast_under_overload_and_batch_still_completes(
    overloaded: Mesh,
) -> None:
    crit, norm, batch = (
        task_pb2.PRIORITY_CRITICAL,
        task_pb2.PRIORITY_NORMAL,
        task_pb2.PRIORITY_BATCH,
    )
    mix = [norm] * 90 + [batch] * 20 + [crit] * 20
    order = np.random.default_rng(0).permutation(len(mix))
    reqs = [request(int(i), priority=mix[i], deadline_ms=30000) for i in order]
    results = await drive(overloaded.router_target, reqs, len(reqs), timeout=40)
    by: dict[int, list[float]] = {crit: [], norm: [], batch: []}
    for (t, r), req in zip(results, reqs, strict=True):
        assert isinstance(r, task_pb2.SubmitResponse), r
        by[req.priority].append(t)
    p99_crit = float(np.percentile(by[crit], 99))
    p50_norm = float(np.percentile(by[norm], 50))
    print(f"\ncritical p99 {p99_crit * 1000:.0f} ms, normal p50 {p50_norm * 1000:.0f} ms, "
          f"batch max {max(by[batch]) * 1000:.0f} ms")  # fmt: skip
    assert p99_crit < p50_norm
    assert len(by[batch]) == 20


def test_full_router_queue_names_it(model_repo: Path, tmp_path: Path) -> None:
    env = {"CHORUS_ROUTER_MAX_CONCURRENT_TASKS": "1", "CHORUS_ROUTER_QUEUE_LIMIT": "2"}
    with NatsServer(tmp_path / "js") as server, Mesh(
        model_repo, tmp_path / "mesh", models=["logreg"], nats_url=server.url, extra_env=env,
        model_args={"logreg": ["--delay-ms", "100"]},
    ) as mesh:  # fmt: skip
        results = asyncio.run(drive(mesh.router_target, [request(i) for i in range(8)], 8))
    errors = [r for _, r in results if isinstance(r, grpc.RpcError)]
    assert errors
    for err in errors:
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "router: queue 'normal' is full" in err.details()
