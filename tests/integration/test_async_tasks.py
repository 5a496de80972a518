"""Durable async tasks: accepted at once, de-duplicated, watched to the end, and never lost,
not even when the router running them is killed."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from chorus.client import (
    AsyncTaskClient,
    InvalidArgument,
    NotFound,
    State,
    TaskClient,
    TaskState,
    Unavailable,
)
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer

CAPABILITY = "classify/digits"


def wait_done(client: TaskClient, ids: list[str], timeout_s: float) -> dict[str, TaskState]:
    results: dict[str, TaskState] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < len(ids) and time.monotonic() < deadline:
        for i in ids:
            if i in results:
                continue
            try:
                r = client.result(i, timeout_s=5)
            except Unavailable:
                continue  # the router is restarting
            if r.finished:
                results[i] = r
        time.sleep(0.1)
    return results


def wait_running(client: TaskClient, ids: list[str], timeout_s: float) -> None:
    """Returns while a task is mid-call: with 300 ms per call, a kill now interrupts it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for i in ids:
            if client.result(i, timeout_s=5).state is State.RUNNING:
                return
    raise AssertionError("no task was seen running")


def test_submit_async_dedupes_and_results_arrive(client: TaskClient) -> None:
    x = digits_split().x_test[:5]
    first = client.submit_async(CAPABILITY, {"input": x}, idempotency_key="order-42")
    again = client.submit_async(CAPABILITY, {"input": x}, idempotency_key="order-42")
    assert not first.duplicate and again.duplicate
    assert again.task_id == first.task_id
    updates = list(client.watch(first.task_id, timeout_s=20))
    assert updates[-1].state is State.DONE
    assert updates[-1].result is not None
    assert updates[-1].result.labels.tolist() == digits_split().y_test[:5].tolist()
    got = client.result(first.task_id)
    assert got.state is State.DONE and got.attempts == 1
    assert client.wait(first.task_id).labels.tolist() == got.unwrap().labels.tolist()


async def test_the_asyncio_client_submits_async_watches_and_waits(mesh: Mesh) -> None:
    split = digits_split()
    async with AsyncTaskClient(mesh.router_target) as client:
        assert await client.health() == "SERVING"
        assert await client.health("chorus.v1.TaskService") == "SERVING"
        accepted = await client.submit_async(CAPABILITY, {"input": split.x_test[5:9]},
                                             priority="batch", policy="soft_vote")  # fmt: skip
        states = [s.state async for s in client.watch(accepted.task_id, timeout_s=20)]
        result = await client.wait(accepted.task_id)
        now = await client.result(accepted.task_id)
    assert states[-1] is State.DONE and set(states) <= {State.PENDING, State.RUNNING, State.DONE}
    assert result.labels.tolist() == split.y_test[5:9].tolist()
    assert result.explanation.policy == "soft_vote"
    assert now.finished and now.unwrap().task_id == accepted.task_id


def test_async_errors_are_clear(client: TaskClient) -> None:
    with pytest.raises(NotFound) as info:
        client.result("never-was", timeout_s=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no async task 'never-was'" in info.value.details()
    with pytest.raises(InvalidArgument) as bad:
        client.submit_async(CAPABILITY, {}, timeout_s=5)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs: empty" in bad.value.details()


def test_killed_router_loses_no_accepted_task(model_repo: Path, tmp_path: Path) -> None:
    # Joined calls would finish all 60 before the kill; this test is about redelivery.
    env = {"CHORUS_ROUTER_ACK_WAIT_S": "2", "CHORUS_ROUTER_COALESCE_ROWS": "0"}
    with NatsServer(tmp_path / "js") as server, Mesh(
        model_repo, tmp_path / "mesh", models=["logreg"], nats_url=server.url, extra_env=env,
        model_args={"logreg": ["--delay-ms", "300"]},
    ) as mesh, TaskClient(mesh.router_target) as client:  # fmt: skip
        x = digits_split().x_test
        ids = [client.submit_async(CAPABILITY, {"input": x[i : i + 1]}).task_id for i in range(60)]
        wait_running(client, ids, timeout_s=10)
        mesh.restart("router", kill=True)
        results = wait_done(client, ids, timeout_s=40)
    lost = [i for i in ids if i not in results]
    print(f"\naccepted {len(ids)}, done {len(results)}, lost {len(lost)}, "
          f"delivered more than once {sum(r.attempts > 1 for r in results.values())}")  # fmt: skip
    assert not lost
    assert all(r.state is State.DONE for r in results.values())
    assert any(r.attempts > 1 for r in results.values()), "the kill should have interrupted a task"
