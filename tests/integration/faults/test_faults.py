"""Fault injection on real processes. Each scenario counts the tasks it sent (accepted), those
answered (completed), those refused with a clear gRPC error (failed) and those never answered
(lost), prints the counts, and holds them to the goals: no lost task, and at least 99.9% sync
success with failover when one of several replicas dies.

    pytest -m faults -s          # this suite alone, with its counts
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from chorus.client import State, TaskClient, TaskError
from chorus.launch.mesh import Child, Mesh
from chorus.launch.natsserver import NatsServer
from tests.support import X, drive, request

pytestmark = pytest.mark.faults
FAST_FAILOVER = {"CHORUS_ROUTER_ATTEMPT_TIMEOUT_S": "0.5"}
MEMBERS = ["logreg", "forest", "mlp"]
GROUP = {"digits": MEMBERS}
"""The co-hosted shape: the digits members and a fuser in `chorus serve group` processes."""
GROUP_REPLICAS = {"group:digits": 2}
SHAPES = ["distributed", "cohosted"]


def report(name: str, results: list) -> Counter[str]:  # type: ignore[type-arg]
    counts: Counter[str] = Counter(accepted=len(results))
    for _, r in results:
        if r is None:
            counts["lost"] += 1
        elif isinstance(r, grpc.RpcError):
            counts["failed"] += 1
            counts[f"failed {r.code().name}"] += 1
            assert r.details(), "an error without a message"
        else:
            counts["completed"] += 1
    print(f"\n{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return counts


@pytest.fixture
def mesh_factory(model_repo: Path, tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    stack: list[tuple[NatsServer, Mesh]] = []

    def make(models: list[str], env: dict[str, str] | None = None, **kw) -> tuple[NatsServer, Mesh]:  # type: ignore[no-untyped-def]
        n = len(stack)
        server = NatsServer(tmp_path / f"js{n}").start()
        mesh = Mesh(model_repo, tmp_path / f"mesh{n}", models=models, nats_url=server.url,
                    extra_env={**FAST_FAILOVER, **(env or {})}, **kw).start()  # fmt: skip
        stack.append((server, mesh))
        return server, mesh

    yield make
    for server, mesh in reversed(stack):
        mesh.stop()
        server.stop()


def _second_replica(mesh: Mesh, model: str, *flags: str) -> None:
    mesh.spawn(f"{model}-b", [*mesh.model_command(model), *flags])
    deadline = time.monotonic() + 20
    with TaskClient(mesh.router_target) as c:
        while sum(len(m.replicas) for m in c.list_models().models) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _victim(mesh_factory, shape: str) -> tuple[Mesh, Child]:  # type: ignore[no-untyped-def]
    """A mesh serving the task from two replicas, and the one to hurt: two forest replicas
    (distributed), or two group replicas holding the digits members (co-hosted)."""
    if shape == "cohosted":
        _, mesh = mesh_factory(MEMBERS, groups=GROUP, replicas=GROUP_REPLICAS)
        return mesh, mesh.child("group-digits-1")
    _, mesh = mesh_factory(["forest"])
    _second_replica(mesh, "forest")
    return mesh, mesh.child("forest-b")


def _whole_from_one_group(shape: str, results: list) -> None:  # type: ignore[type-arg]
    """Co-hosted, every answer came from one group replica (its members' replicas share its
    name), never assembled from two."""
    if shape != "cohosted":
        return
    for _, r in results:
        if not isinstance(r, grpc.RpcError):
            groups = {m.replica.rsplit("-", 1)[0] for m in r.members}
            assert len(groups) == 1 and groups.pop().startswith("digits-"), r.members


@pytest.mark.parametrize("shape", SHAPES)
async def test_sigkill_a_replica_under_load(mesh_factory, shape: str) -> None:  # type: ignore[no-untyped-def]
    mesh, victim = _victim(mesh_factory, shape)

    async def kill() -> None:
        await asyncio.sleep(0.5)
        os.kill(victim.proc.pid, signal.SIGKILL)

    reqs = [request(i, deadline_ms=3000) for i in range(400)]
    results, _ = await asyncio.gather(drive(mesh.router_target, reqs, 8), kill())
    counts = report(f"{shape}: replica SIGKILL", results)
    assert counts["lost"] == 0
    assert counts["completed"] / counts["accepted"] >= 0.999
    _whole_from_one_group(shape, results)


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_hung_replica_is_routed_around(mesh_factory, shape: str) -> None:  # type: ignore[no-untyped-def]
    mesh, victim = _victim(mesh_factory, shape)

    async def hang() -> None:
        await asyncio.sleep(0.5)
        os.kill(victim.proc.pid, signal.SIGSTOP)

    reqs = [request(i, deadline_ms=3000) for i in range(300)]
    try:
        results, _ = await asyncio.gather(drive(mesh.router_target, reqs, 8), hang())
    finally:
        os.kill(victim.proc.pid, signal.SIGCONT)
    counts = report(f"{shape}: replica hangs (SIGSTOP)", results)
    assert counts["lost"] == 0
    assert counts["completed"] / counts["accepted"] >= 0.999
    assert max(t for t, _ in results) < 3.5
    _whole_from_one_group(shape, results)


async def test_a_fuser_killed_mid_task(mesh_factory) -> None:  # type: ignore[no-untyped-def]
    _, mesh = mesh_factory(["logreg"], fusers=2)
    victim = mesh.child("fuser-0")

    async def kill() -> None:
        await asyncio.sleep(0.5)
        os.kill(victim.proc.pid, signal.SIGKILL)

    reqs = [request(i, deadline_ms=3000) for i in range(300)]
    results, _ = await asyncio.gather(drive(mesh.router_target, reqs, 8), kill())
    counts = report("fuser SIGKILL", results)
    assert counts["lost"] == 0
    assert counts["completed"] / counts["accepted"] >= 0.999


async def test_network_delay_on_one_replica(mesh_factory) -> None:  # type: ignore[no-untyped-def]
    _, mesh = mesh_factory(["forest"])
    _second_replica(mesh, "forest", "--delay-ms", "200")
    reqs = [request(i, deadline_ms=3000) for i in range(200)]
    results = await drive(mesh.router_target, reqs, 4)
    counts = report("200 ms delay on one replica", results)
    slow = str(mesh.child("forest-b").ready["replica"])
    on_slow = sum(m.replica == slow for _, r in results for m in r.members)  # type: ignore[union-attr]
    print(f"  calls on the delayed replica: {on_slow} of {len(results)}")
    assert counts["completed"] == counts["accepted"]
    assert on_slow / len(results) < 0.1


@pytest.mark.parametrize("shape", SHAPES)
def test_nats_restart_loses_no_durable_task(mesh_factory, shape: str) -> None:  # type: ignore[no-untyped-def]
    env = {"CHORUS_ROUTER_ACK_WAIT_S": "3"}
    if shape == "cohosted":
        server, mesh = mesh_factory(MEMBERS, env=env, groups=GROUP)
    else:
        server, mesh = mesh_factory(
            ["logreg"], env=env, model_args={"logreg": ["--delay-ms", "20"]}
        )
    with TaskClient(mesh.router_target) as client:
        ids = [client.submit_async("classify/digits", {"input": X[:1]}).task_id for _ in range(80)]
        server.stop()  # JetStream keeps everything on disk
        outage: Counter[str] = Counter()
        for _ in range(5):
            try:
                client.submit(
                    "classify/digits", {"input": np.zeros((1, 64), np.float32)}, timeout_s=2
                )
                outage["completed"] += 1
            except grpc.RpcError as err:
                outage[err.code().name] += 1
                assert err.details()
        server.start()
        done: dict[str, State] = {}
        deadline = time.monotonic() + 60
        while len(done) < len(ids) and time.monotonic() < deadline:
            for i in ids:
                if i not in done:
                    try:
                        r = client.result(i, timeout_s=5)
                    except TaskError:
                        continue
                    if r.finished:
                        done[i] = r.state
                        if r.state is not State.DONE:
                            print(f"\n  {i}: {r.state.name}: {r.error}")
            time.sleep(0.2)
    lost = len(ids) - len(done)
    completed = sum(s is State.DONE for s in done.values())
    failed = len(done) - completed
    print(f"\nnats-server restart ({shape}): accepted {len(ids)} async, completed {completed}, "
          f"failed {failed}, lost {lost}; sync during the outage {dict(outage)}")  # fmt: skip
    assert lost == 0
    assert completed == len(ids)
