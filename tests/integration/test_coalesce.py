"""Joined member calls: concurrent tasks' rows ride one call and come back to the right task.

The unit tests drive the Coalescer with a send function that stands in for a member (it
doubles its input); the mesh test checks real answers under load against one-by-one answers.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from chorus.client import TaskClient, TaskResult
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import DataLoss, DeadlineExceeded, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.demo.datasets import digits_split
from chorus.demo.members import MEMBERS
from chorus.launch.mesh import Mesh
from chorus.pb import wire_pb2
from chorus.router.coalesce import Coalescer
from tests.support import scrape, total

DEMO = list(MEMBERS)

REPLICA = Heartbeat(
    model="m", version="1", replica="m-1", capabilities=("c",), inputs=(), outputs=(),
    labels=(), scores_output="y", device="cpu",
)  # fmt: skip


def _body(x: np.ndarray) -> bytes:
    return wire_pb2.InferCall(inputs=[to_tensor("x", x)]).SerializeToString()


def _ask(
    coalescer: Coalescer, body: bytes, ctx: CallContext
) -> Awaitable[tuple[wire_pb2.InferReply, float]]:
    return coalescer.call("m", [REPLICA], body, hashlib.sha256(body).hexdigest(), ctx)


class Doubler:
    """A member that answers y = 2x after `delay_s`, recording the rows of each call."""

    def __init__(self, delay_s: float = 0.01, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.tasks: list[int] = []
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(
        self,
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        tasks: list[tuple[str, int]],
    ) -> tuple[wire_pb2.InferReply, float]:
        assert digest == hashlib.sha256(body).hexdigest()
        x = from_tensor(wire_pb2.InferCall.FromString(body).inputs[0])
        self.tasks.append(len(tasks))
        self.calls.append(x.shape[0])
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise Unavailable("model m: gone")
        return wire_pb2.InferReply(model=model, outputs=[to_tensor("y", x * 2)]), 1.0


async def test_waiting_calls_are_joined_and_answers_split_back_by_rows() -> None:
    send = Doubler()
    waiting: list[int] = []
    coalescer = Coalescer(send, waiting=lambda model, change: waiting.append(change))
    ctx = CallContext.start("t", Priority.NORMAL, 10.0)
    xs = [np.full((n, 3), i, dtype=np.float32) for i, n in enumerate([1, 2, 1, 3, 1])]
    answers = await asyncio.gather(*(_ask(coalescer, _body(x), ctx) for x in xs))
    assert send.calls == [1, 7]  # the first alone, the four that waited together
    assert send.tasks == [1, 4]
    assert waiting == [1, 1, 1, 1, -4]
    for x, (reply, _) in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(from_tensor(reply.outputs[0]), x * 2)


async def test_a_lone_call_goes_at_once_and_zero_rows_turns_joining_off() -> None:
    for coalescer in (Coalescer(Doubler()), Coalescer(Doubler(), max_rows=0)):
        ctx = CallContext.start("t", Priority.NORMAL, 10.0)
        reply, _ = await _ask(coalescer, _body(np.ones((2, 3), np.float32)), ctx)
        assert from_tensor(reply.outputs[0]).tolist() == [[2.0] * 3] * 2
    off = Doubler()
    ctx = CallContext.start("t", Priority.NORMAL, 10.0)
    await asyncio.gather(
        *(
            _ask(Coalescer(off, max_rows=0), _body(np.ones((1, 3), np.float32)), ctx)
            for _ in range(4)
        )
    )
    assert off.calls == [1, 1, 1, 1]


async def test_only_like_calls_join_and_a_failure_reaches_every_joined_task() -> None:
    send = Doubler(fail=True)
    coalescer = Coalescer(send, max_rows=4)
    normal = CallContext.start("t", Priority.NORMAL, 10.0)
    batch = CallContext.start("t", Priority.BATCH, 10.0)
    calls = [
        _ask(coalescer, _body(np.ones((1, 3), np.float32)), normal),
        _ask(coalescer, _body(np.ones((2, 3), np.float32)), normal),
        _ask(coalescer, _body(np.ones((2, 3), np.float32)), normal),
        _ask(coalescer, _body(np.ones((1, 5), np.float32)), normal),
        _ask(coalescer, _body(np.ones((1, 3), np.float32)), batch),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    # [1] alone; [2, 2] within 4 rows; other shapes and priorities in lanes of their own.
    assert sorted(send.calls) == [1, 1, 1, 4]


async def test_a_reply_with_the_wrong_rows_is_data_loss() -> None:
    async def short(
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        tasks: list[tuple[str, int]],
    ) -> tuple[wire_pb2.InferReply, float]:
        await asyncio.sleep(0.01)
        return wire_pb2.InferReply(model=model, outputs=[to_tensor("y", np.ones((1, 3)))]), 1.0

    coalescer = Coalescer(short)
    ctx = CallContext.start("t", Priority.NORMAL, 10.0)
    results = await asyncio.gather(
        *(_ask(coalescer, _body(np.ones((1, 3), np.float32)), ctx) for _ in range(3)),
        return_exceptions=True,
    )
    assert not isinstance(results[0], BaseException)
    assert all(isinstance(r, DataLoss) for r in results[1:])
    assert "not the 2 rows it was sent" in str(results[1])


@pytest.fixture(scope="module")
def joining_mesh(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with Mesh(
        model_repo,
        tmp_path_factory.mktemp("coalesce"),
        models=DEMO,
        extra_env={"CHORUS_ROUTER_COALESCE_ROWS": "256"},
    ) as running:
        yield running


def test_concurrent_tasks_on_the_mesh_get_their_own_answers(joining_mesh: Mesh) -> None:
    mesh = joining_mesh
    client = TaskClient(mesh.router_target)
    x = digits_split().x_test[:48]
    alone = [client.submit("classify/digits", {"input": x[i : i + 1]}) for i in range(len(x))]
    router = str(mesh.child("router").ready["metrics"])
    before = scrape(router)

    def one(i: int) -> TaskResult:
        return client.submit("classify/digits", {"input": x[i : i + 1]})

    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(one, range(len(x))))
    after = scrape(router)
    for a, t in zip(alone, together, strict=True):
        # Rows computed in a batch may differ in the last float bits from rows alone.
        np.testing.assert_allclose(t.probabilities, a.probabilities, rtol=1e-5, atol=1e-7)
        assert t.labels.tolist() == a.labels.tolist()
    calls = total(after, "chorus_router_member_call_tasks_count") - total(
        before, "chorus_router_member_call_tasks_count"
    )
    tasks = total(after, "chorus_router_member_call_tasks_sum") - total(
        before, "chorus_router_member_call_tasks_sum"
    )
    client.close()
    assert tasks >= 3 * len(x)
    assert calls < tasks, "under load some calls should have carried several tasks"
    assert total(after, "chorus_router_member_waiting") == 0  # all answered, none left waiting


async def test_a_task_whose_deadline_passes_while_joined_fails_alone() -> None:
    send = Doubler(delay_s=0.05)
    coalescer = Coalescer(send)
    long = CallContext.start("long", Priority.NORMAL, 10.0)
    short = CallContext.start("short", Priority.NORMAL, 0.02)
    one = _body(np.ones((1, 3), np.float32))
    results = await asyncio.gather(
        _ask(coalescer, one, long),
        _ask(coalescer, one, short),
        _ask(coalescer, one, long),
        return_exceptions=True,
    )
    assert isinstance(results[1], DeadlineExceeded)
    assert "task short's deadline passed while its call waited" in str(results[1])
    for r in (results[0], results[2]):
        assert not isinstance(r, BaseException)
        assert from_tensor(r[0].outputs[0]).tolist() == [[2.0] * 3]
