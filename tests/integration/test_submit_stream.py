"""SubmitStream on the demo mesh: many tasks over one call, each answered as it finishes with
the same answer a unary Submit gives, a bad task answered with its own error while the rest
go on, and a caller's deadline bounding the stream."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from chorus.client import AsyncTaskClient, DeadlineExceeded, NotFound, Task, decode
from chorus.core.codec import to_tensor
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.pb import task_pb2
from tests.support import CAPABILITY, request


def _labels(response: task_pb2.SubmitResponse) -> list[int]:
    return decode(response).labels.tolist()  # type: ignore[no-any-return]


async def test_a_stream_answers_every_task_as_submit_would(mesh: Mesh) -> None:
    tasks = [request(i) for i in range(40)]
    bad = task_pb2.SubmitRequest(
        capability=CAPABILITY, inputs=[to_tensor("input", np.zeros((1, 63), np.float32))]
    )
    unknown = Task("classify/cats", {"input": np.zeros((1, 64), np.float32)})
    sent = [*tasks[:20], bad, unknown, *tasks[20:]]
    async with AsyncTaskClient(mesh.router_target) as client:
        got = {r.task_id: r async for r in client.submit_stream(sent, timeout_s=60)}
        alone = [await client.stub.Submit(t, timeout=10) for t in tasks[:5]]
    assert len(got) == len(sent)
    assert len({k.rsplit("-", 1)[0] for k in got}) == 1  # "<stream id>-<place>", one stream
    by_place = {int(k.rsplit("-", 1)[1]): r for k, r in got.items()}
    assert sorted(by_place) == list(range(len(sent)))
    failed = {n: r.error for n, r in by_place.items() if not r.ok}
    assert failed.keys() == {20, 21}  # the bad task and the unknown capability
    bad_error = failed[20]
    assert bad_error is not None and bad_error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in bad_error.message and "64" in bad_error.message
    assert isinstance(failed[21], NotFound)
    for n, single in enumerate(alone):
        streamed = by_place[n].result
        assert streamed is not None
        assert streamed.labels.tolist() == _labels(single)
        assert sorted(streamed.members) == sorted(m.model for m in single.members)


async def test_the_callers_deadline_bounds_the_stream(mesh: Mesh) -> None:
    async def endless():  # type: ignore[no-untyped-def]
        i = 0
        while True:
            yield request(i)
            i += 1

    async with AsyncTaskClient(mesh.router_target) as client:
        with pytest.raises(DeadlineExceeded) as info:
            async for _ in client.submit_stream(endless(), timeout_s=1.0):
                pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_blocking_client_streams_too(mesh: Mesh) -> None:
    from chorus.client import TaskClient

    x = digits_split()
    tasks = [Task(CAPABILITY, {"input": x.x_test[i : i + 1]}, task_id=f"b-{i}") for i in range(6)]
    with TaskClient(mesh.router_target) as client:
        got = {r.task_id: r for r in client.submit_stream(tasks, timeout_s=30)}
    assert sorted(got) == [f"b-{i}" for i in range(6)]
    for i in range(6):
        result = got[f"b-{i}"].result
        assert result is not None and result.labels.tolist() == [x.y_test[i]]
