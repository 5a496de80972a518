"""Durable async tasks: accepted at once, de-duplicated, watched to the end, and never lost,
not even when the router running them is killed."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.core.codec import to_tensor
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from chorus.pb import task_pb2

CAPABILITY = "classify/digits"
DONE, FAILED = task_pb2.TASK_STATUS_DONE, task_pb2.TASK_STATUS_FAILED


def task(rows: slice) -> task_pb2.SubmitRequest:
    x = digits_split().x_test[rows]
    return task_pb2.SubmitRequest(capability=CAPABILITY, inputs=[to_tensor("input", x)])


def wait_done(
    client: TaskClient, ids: list[str], timeout_s: float
) -> dict[str, task_pb2.TaskResult]:
    results: dict[str, task_pb2.TaskResult] = {}
    deadline = time.monotonic() + timeout_s
    while len(results) < len(ids) and time.monotonic() < deadline:
        for i in ids:
            if i in results:
                continue
            try:
                r = client.stub.GetResult(task_pb2.GetResultRequest(task_id=i), timeout=5)
            except grpc.RpcError:
                continue  # the router is restarting
            if r.status in (DONE, FAILED):
                results[i] = r
        time.sleep(0.1)
    return results


def wait_running(client: TaskClient, ids: list[str], timeout_s: float) -> None:
    """Returns while a task is mid-call: with 300 ms per call, a kill now interrupts it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for i in ids:
            r = client.stub.GetResult(task_pb2.GetResultRequest(task_id=i), timeout=5)
            if r.status == task_pb2.TASK_STATUS_RUNNING:
                return
    raise AssertionError("no task was seen running")


def test_submit_async_dedupes_and_results_arrive(client: TaskClient) -> None:
    req = task_pb2.SubmitAsyncRequest(task=task(slice(0, 5)), idempotency_key="order-42")
    first = client.stub.SubmitAsync(req, timeout=10)
    again = client.stub.SubmitAsync(req, timeout=10)
    assert not first.duplicate and again.duplicate
    assert again.task_id == first.task_id
    updates = list(
        client.stub.WatchResult(task_pb2.GetResultRequest(task_id=first.task_id), timeout=20)
    )
    assert updates[-1].status == DONE
    result = updates[-1].response
    labels = np.frombuffer(result.outputs[0].raw, dtype=np.int64)
    assert labels.tolist() == digits_split().y_test[:5].tolist()
    got = client.stub.GetResult(task_pb2.GetResultRequest(task_id=first.task_id), timeout=5)
    assert got.status == DONE and got.attempts == 1


def test_async_errors_are_clear(client: TaskClient) -> None:
    with pytest.raises(grpc.RpcError) as info:
        client.stub.GetResult(task_pb2.GetResultRequest(task_id="never-was"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no async task 'never-was'" in info.value.details()
    bad = task_pb2.SubmitAsyncRequest(task=task_pb2.SubmitRequest(capability=CAPABILITY))
    with pytest.raises(grpc.RpcError) as info:
        client.stub.SubmitAsync(bad, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs: empty" in info.value.details()


def test_killed_router_loses_no_accepted_task(model_repo: Path, tmp_path: Path) -> None:
    # Joined calls would finish all 60 before the kill; this test is about redelivery.
    env = {"CHORUS_ROUTER_ACK_WAIT_S": "2", "CHORUS_ROUTER_COALESCE_ROWS": "0"}
    with NatsServer(tmp_path / "js") as server, Mesh(
        model_repo, tmp_path / "mesh", models=["logreg"], nats_url=server.url, extra_env=env,
        model_args={"logreg": ["--delay-ms", "300"]},
    ) as mesh, TaskClient(mesh.router_target) as client:  # fmt: skip
        ids = [
            client.stub.SubmitAsync(
                task_pb2.SubmitAsyncRequest(task=task(slice(i, i + 1))), timeout=10
            ).task_id
            for i in range(60)
        ]
        wait_running(client, ids, timeout_s=10)
        mesh.restart("router", kill=True)
        results = wait_done(client, ids, timeout_s=40)
    lost = [i for i in ids if i not in results]
    print(f"\naccepted {len(ids)}, done {len(results)}, lost {len(lost)}, "
          f"delivered more than once {sum(r.attempts > 1 for r in results.values())}")  # fmt: skip
    assert not lost
    assert all(r.status == DONE for r in results.values())
    assert any(r.attempts > 1 for r in results.values()), "the kill should have interrupted a task"
