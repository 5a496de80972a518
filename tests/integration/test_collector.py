"""The fuser's collector on a real nats-server, with the test answering as the members would
(a member's reply is all the collector sees): a joined call's answer is cut by rows for each
task, an answer that comes before its task waits for it, and an answer with the wrong rows
fails each task it carried as data loss."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import numpy as np
import pytest
from nats.aio.client import Client

from chorus.core import subjects
from chorus.core.calls import choice
from chorus.core.calls.client import CallPolicy, MemberCalls
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.transport import NatsTransport
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import ChorusError
from chorus.fuser.collect import Collector
from chorus.launch.natsserver import NatsServer
from chorus.pb import wire_pb2

FUSER = "f1"


@pytest.fixture
async def collector(tmp_path: Path) -> AsyncIterator[tuple[Client, Collector]]:
    with NatsServer(tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        calls = MemberCalls(
            NatsTransport(nc), ReplicaBook(), choice.get("power_of_two"), CallPolicy()
        )
        found = Collector(calls, lambda model: [])
        await nc.subscribe(subjects.collect(FUSER), cb=found.on_answer)
        await nc.flush()
        yield nc, found
        await nc.close()


def _task(token: str, rows: int) -> wire_pb2.FuseCall:
    body = wire_pb2.InferCall(
        inputs=[to_tensor("input", np.zeros((rows, 4), np.float32))]
    ).SerializeToString()
    call = wire_pb2.FuseCall(
        capability="c", bodies=[body], wait_ms=2000, max_attempts=1, attempt_timeout_ms=2000
    )
    call.expected.add(
        model="m", call=token, body=0, input_sha256=hashlib.sha256(body).hexdigest(),
        scores_output="probabilities",
    )  # fmt: skip
    return call


async def _answer(nc: Client, call: str, scores: np.ndarray) -> None:
    reply = wire_pb2.InferReply(
        model="m", version="1", replica="r1", outputs=[to_tensor("probabilities", scores)]
    )
    await nc.publish(subjects.collect(FUSER, f"r1.{call}"), reply.SerializeToString())
    await nc.flush()


async def test_a_joined_answer_is_cut_by_rows_and_an_early_one_waits_for_its_task(
    collector: tuple[Client, Collector],
) -> None:
    nc, found = collector
    scores = np.arange(6, dtype=np.float32).reshape(3, 2)
    await _answer(nc, "=a1-1_b2-2", scores)  # before either task arrives
    await asyncio.sleep(0.05)
    ctx = CallContext.start("t", Priority.NORMAL, 5.0)
    first, second = _task("a1", 1), _task("b2", 2)
    got = await asyncio.gather(found.collect(first, ctx), found.collect(second, ctx))
    one, two = (c.task.members[0].probabilities for c in got)
    np.testing.assert_array_equal(from_tensor(one), scores[:1])
    np.testing.assert_array_equal(from_tensor(two), scores[1:])
    for collected in got:
        assert [(a.model, a.replica, a.code) for a in collected.attempts] == [("m", "r1", "")]
        assert not collected.missing
        assert collected.joined  # so the fuser stacks the two tasks' rows


async def test_a_task_answered_alone_is_not_joined(collector: tuple[Client, Collector]) -> None:
    nc, found = collector
    ctx = CallContext.start("t", Priority.NORMAL, 5.0)
    call = _task("e5", 2)
    waiting = asyncio.ensure_future(found.collect(call, ctx))
    await asyncio.sleep(0.05)
    await _answer(nc, "e5", np.ones((2, 2), np.float32))
    collected = await waiting
    assert not collected.joined and not collected.missing
    probabilities = collected.task.members[0].probabilities
    np.testing.assert_array_equal(from_tensor(probabilities), np.ones((2, 2)))


async def test_a_joined_answer_with_the_wrong_rows_fails_each_task(
    collector: tuple[Client, Collector],
) -> None:
    nc, found = collector
    ctx = CallContext.start("t", Priority.NORMAL, 5.0)
    first, second = _task("c3", 1), _task("d4", 2)
    waiting = asyncio.gather(
        found.collect(first, ctx), found.collect(second, ctx), return_exceptions=True
    )
    await asyncio.sleep(0.05)
    await _answer(nc, "=c3-1_d4-2", np.zeros((2, 2), np.float32))
    results = await waiting
    for r in results:
        assert isinstance(r, ChorusError)
        assert "not the 3 rows it was sent" in r.message
