"""The mesh on a three-node JetStream cluster: every stream and bucket keeps three replicas,
one with fewer is raised, and a node lost or frozen under mixed sync and async load loses no
accepted async task, answers at least 99% of sync tasks (the rest clear errors) and serves
sync tasks again within 10 s. Counts and recovery times are printed (pytest -m faults -s)
and recorded in tests/integration/faults/README.md."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import nats
import pytest
from nats.js.api import StreamConfig

from chorus.core.jetstream import ensure_bucket, ensure_stream, servers
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsCluster
from chorus.pb import task_pb2, task_pb2_grpc
from tests.support import request
from tests.support.soak import SOAK_S, SOAK_TIMEOUT, soak

pytestmark = pytest.mark.faults
CLEAR = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


@pytest.fixture
def cluster_mesh(model_repo: Path, tmp_path: Path) -> Iterator[tuple[NatsCluster, Mesh]]:
    with NatsCluster(tmp_path / "nats") as cluster:
        # The default 2 s attempt timeout (not the replica tests' 0.5 s): the faults here
        # are NATS nodes, and a call must outlast a client's move to another node.
        env = {"CHORUS_ROUTER_ACK_WAIT_S": "3"}
        with Mesh(model_repo, tmp_path / "mesh", models=["logreg", "mlp"], nats_url=cluster.url,
                  extra_env=env) as mesh:  # fmt: skip
            yield cluster, mesh


async def _replicas(url: str, streams: list[str]) -> dict[str, int]:
    nc = await nats.connect(servers=servers(url))
    try:
        js = nc.jetstream()
        return {s: int((await js.stream_info(s)).config.num_replicas or 1) for s in streams}
    finally:
        await nc.close()


async def test_streams_and_buckets_keep_three_replicas(
    cluster_mesh: tuple[NatsCluster, Mesh],
) -> None:
    cluster, mesh = cluster_mesh
    async with grpc.aio.insecure_channel(mesh.router_target) as ch:
        listed = await task_pb2_grpc.TaskServiceStub(ch).ListModels(
            task_pb2.ListModelsRequest(), timeout=5
        )
    assert listed.jetstream_replicas == 3
    streams = ["KV_chorus_weights", "KV_chorus_fused_tasks", "KV_chorus_conformal",
               "KV_chorus_reliability", "CHORUS_REVIEW"]  # fmt: skip
    nc = await nats.connect(servers=servers(cluster.url))
    try:
        js = nc.jetstream()
        names = [n async for n in _stream_names(js)]
        streams += [n for n in names if n.startswith("CHORUS_TASKS") or n == "KV_chorus_results"]
        assert any(n.startswith("CHORUS_TASKS") for n in streams), names
        # Made with one copy (as on a single server), then met by a service that wants three.
        await js.add_stream(StreamConfig(name="OLD", subjects=["old.>"], num_replicas=1))
        await js.create_key_value(bucket="old_bucket", replicas=1)
        await ensure_stream(js, StreamConfig(name="OLD", subjects=["old.>"]), 3)
        await ensure_bucket(js, "old_bucket", 3)
    finally:
        await nc.close()
    found = await _replicas(cluster.url, [*streams, "OLD", "KV_old_bucket"])
    assert found == {s: 3 for s in found}


async def _stream_names(js: nats.js.JetStreamContext):  # type: ignore[no-untyped-def]
    for info in await js.streams_info():
        yield info.config.name


async def _recovery_s(stub: task_pb2_grpc.TaskServiceStub, since: float) -> float:
    """Seconds from `since` until a sync task started after it is answered (each try has
    0.5 s: a call whose reply died with a node is given up on its attempt timeout)."""
    while time.monotonic() - since < 30:
        try:
            await stub.Submit(request(0, deadline_ms=500), timeout=2)
            return time.monotonic() - since
        except grpc.RpcError:
            await asyncio.sleep(0.05)
    return float("inf")


async def _async_recovery_s(stub: task_pb2_grpc.TaskServiceStub, since: float) -> float:
    """Seconds from `since` until an async task submitted after it is stored, run and its
    result written: every JetStream write path has a leader again."""
    probe = task_pb2.SubmitAsyncRequest(
        task=request(1, priority=task_pb2.PRIORITY_CRITICAL), idempotency_key=f"probe-{since}"
    )
    while time.monotonic() - since < 30:
        try:
            task_id = (await stub.SubmitAsync(probe, timeout=10)).task_id
            r = await stub.GetResult(task_pb2.GetResultRequest(task_id=task_id), timeout=3)
            if r.status == task_pb2.TASK_STATUS_DONE:
                return time.monotonic() - since
        except grpc.RpcError:
            pass
        await asyncio.sleep(0.05)
    return float("inf")


async def _under_load(mesh: Mesh, fault: str, act, undo=None, hold_s: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    """The soak's load (six sync clients, an async submitter that resends refused submits
    with the same key) from 1 s before the fault until 6 s after it is undone."""
    recovery: list[float] = []
    async with grpc.aio.insecure_channel(mesh.router_target) as ch:
        stub = task_pb2_grpc.TaskServiceStub(ch)

        async def fault_then_probe() -> None:
            await asyncio.sleep(1.0)
            at = time.monotonic()
            await asyncio.to_thread(act)

            async def undo_later() -> None:
                if undo is not None:
                    await asyncio.sleep(hold_s)
                    await asyncio.to_thread(undo)

            *found, _ = await asyncio.gather(
                _recovery_s(stub, at), _async_recovery_s(stub, at), undo_later()
            )
            recovery.extend(found)

        counts, ids, pending = await soak(
            mesh.router_target, 1.0 + hold_s + 6.0, fault_then_probe(), label=fault
        )
    sync_total = sum(v for k, v in counts.items() if k.startswith("sync"))
    unclear = [k for k in counts if k.startswith("sync ") and k != "sync ok"
               and k.removeprefix("sync ") not in CLEAR]  # fmt: skip
    print(f"{fault}: sync answered {counts['sync ok']} of {sync_total}; async accepted "
          f"{len(ids)}, lost {len(pending)}; "
          f"serving again: sync {recovery[0]:.2f} s, async {recovery[1]:.2f} s")  # fmt: skip
    assert not unclear
    assert counts["sync ok"] / sync_total >= 0.99
    assert ids and not pending
    assert recovery[0] < 10.0
    # An async task waits on JetStream's Raft elections (4-8 s here); margin for slow CI.
    assert recovery[1] < 15.0


async def test_sigkill_the_jetstream_meta_leader(cluster_mesh: tuple[NatsCluster, Mesh]) -> None:
    cluster, mesh = cluster_mesh
    leader = cluster.node(cluster.meta_leader())
    await _under_load(mesh, "SIGKILL the meta leader", leader.kill)


async def test_sigkill_the_task_streams_leader(cluster_mesh: tuple[NatsCluster, Mesh]) -> None:
    cluster, mesh = cluster_mesh
    nc = await nats.connect(servers=servers(cluster.url))
    try:
        info = await nc.jetstream().stream_info("CHORUS_TASKS_NORMAL")
    finally:
        await nc.close()
    assert info.cluster is not None and info.cluster.leader
    await _under_load(
        mesh, "SIGKILL the task stream's leader", cluster.node(info.cluster.leader).kill
    )


async def test_sigstop_a_node_past_the_election_timeout(
    cluster_mesh: tuple[NatsCluster, Mesh],
) -> None:
    cluster, mesh = cluster_mesh
    victim = cluster.node(cluster.meta_leader())
    pid = victim.pid
    assert pid is not None
    # 10 s: past nats-server's Raft election timeout (its leaders were re-elected 4-8 s
    # after a loss here), so the other two elect new leaders while this one is frozen.
    await _under_load(mesh, "SIGSTOP the meta leader for 10 s",
                      lambda: os.kill(pid, signal.SIGSTOP),
                      lambda: os.kill(pid, signal.SIGCONT), hold_s=10.0)  # fmt: skip


async def test_a_node_back_with_an_empty_disk_catches_up(
    cluster_mesh: tuple[NatsCluster, Mesh], tmp_path: Path
) -> None:
    cluster, mesh = cluster_mesh
    victim = cluster.servers[1]

    def wipe_and_restart() -> None:
        victim.kill()
        shutil.rmtree(victim.store_dir)
        victim.start()

    await _under_load(mesh, "a node restarted with an empty disk", wipe_and_restart)
    # The wiped node holds the task stream again, caught up from the others.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        nc = await nats.connect(victim.url)
        try:
            info = await nc.jetstream().stream_info("CHORUS_TASKS_NORMAL")
        finally:
            await nc.close()
        names = {info.cluster.leader, *(r.name for r in info.cluster.replicas or [])}  # type: ignore[union-attr]
        if "node1" in names and all(r.current for r in info.cluster.replicas or []):  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.5)
    assert "node1" in names, names
    assert Counter(r.current for r in info.cluster.replicas or [])[False] == 0  # type: ignore[union-attr]


@SOAK_TIMEOUT
async def test_soak_on_the_cluster_a_node_killed_and_restarted_midway(
    cluster_mesh: tuple[NatsCluster, Mesh],
) -> None:
    """CHORUS_SOAK_S=300 for the recorded five-minute run (10 s at least, in CI)."""
    cluster, mesh = cluster_mesh
    seconds = max(SOAK_S, 10.0)
    victim = cluster.node(cluster.meta_leader())

    async def kill_then_restart() -> None:
        await asyncio.sleep(seconds / 2)
        await asyncio.to_thread(victim.kill)
        await asyncio.sleep(min(10.0, seconds / 4))
        await asyncio.to_thread(victim.start)

    counts, ids, pending = await soak(mesh.router_target, seconds, kill_then_restart())
    sync_total = sum(v for k, v in counts.items() if k.startswith("sync"))
    unclear = [k for k in counts if k.startswith("sync ") and k != "sync ok"
               and k.removeprefix("sync ") not in CLEAR]  # fmt: skip
    assert not unclear
    assert counts["sync ok"] / sync_total >= 0.99
    assert ids and not pending
