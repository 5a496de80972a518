"""The fuser's calls to members (negotiation, arbiter, stacking) go through the core's
MemberCalls, as the router's do: a replica that hangs is retried on another and its breaker
opens, a reply for another input is refused, and the task's deadline bounds it all. The
replicas are plain NATS responders on a real nats-server: what a model service answers is
all the client sees."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import numpy as np
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry

from chorus.core import subjects
from chorus.core.calls import choice
from chorus.core.calls.breaker import State
from chorus.core.calls.client import CallCounters, CallPolicy, MemberCalls
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.transport import NatsTransport
from chorus.core.codec import to_tensor
from chorus.core.context import INPUT_SHA256, CallContext, Priority
from chorus.core.errors import DataLoss, DeadlineExceeded
from chorus.core.heartbeat import Heartbeat
from chorus.core.spec import TensorSpec
from chorus.fuser.members import NatsMembers
from chorus.launch.natsserver import NatsServer
from chorus.pb import wire_pb2

SCORES = np.array([[0.25, 0.75]], np.float32)


def _beat(replica: str) -> Heartbeat:
    """The hung replica announces a tiny service time, so the chooser prefers it until its
    breaker opens (an untried replica is otherwise assumed to take 1 ms, slower than loopback)."""
    return Heartbeat(
        model="m", version="1", replica=replica, capabilities=("classify/x",),
        inputs=(TensorSpec("x", "FP32", (-1, 2)),),
        outputs=(TensorSpec("scores", "FP32", (-1, 2)),),
        labels=("a", "b"), scores_output="scores", device="cpu",
        ewma_ms=0.001 if replica == "hung" else 0.0,
    )  # fmt: skip


@pytest.fixture
async def nc(tmp_path: Path) -> AsyncIterator[Client]:
    with NatsServer(tmp_path / "js") as server:
        client = await nats.connect(server.url)
        try:
            yield client
        finally:
            await client.close()


async def _replica(nc: Client, name: str, behaviour: str, seen: list[str]) -> None:
    async def answer(msg: Msg) -> None:
        seen.append(name)
        if behaviour == "hang":
            return
        digest = (msg.headers or {}).get(INPUT_SHA256, "")
        if behaviour == "other input":
            digest = hashlib.sha256(b"something else").hexdigest()
        reply = wire_pb2.InferReply(model="m", replica=name, input_sha256=digest)
        reply.outputs.append(to_tensor("scores", SCORES))
        await msg.respond(reply.SerializeToString())

    await nc.subscribe(subjects.infer_replica("m", name), cb=answer)


def _members(
    nc: Client,
    book: ReplicaBook,
    replicas: list[str],
    attempt_s: float = 0.2,
    metrics: CallCounters | None = None,
) -> NatsMembers:
    policy = CallPolicy(attempt_timeout_s=attempt_s, hedge=False)
    calls = MemberCalls(NatsTransport(nc), book, choice.get("power_of_two"), policy, metrics)
    return NatsMembers(calls, lambda model: [_beat(r) for r in replicas])


async def _ask(members: NatsMembers, budget_s: float = 5.0) -> np.ndarray:
    ctx = CallContext.start("t", Priority.NORMAL, budget_s)
    x = {"x": np.zeros((1, 2), np.float32)}
    return await members.scores("m", x, scores_output="scores", augment=False, ctx=ctx)


async def test_a_hung_replica_is_retried_elsewhere_and_its_breaker_opens(nc: Client) -> None:
    seen: list[str] = []
    await _replica(nc, "hung", "hang", seen)
    await _replica(nc, "well", "answer", seen)
    await nc.flush()
    book = ReplicaBook(failures_to_open=2, cooldown_s=60)
    registry = CollectorRegistry()
    members = _members(nc, book, ["hung", "well"], metrics=CallCounters("chorus_fuser", registry))
    for _ in range(8):
        np.testing.assert_array_equal(await _ask(members), SCORES)
    assert seen.count("hung") == 2  # tried until its breaker opened after two failures
    assert book.state("hung").breaker.state is State.OPEN
    before = seen.count("hung")
    for _ in range(4):
        await _ask(members)
    assert seen.count("hung") == before  # an open breaker keeps calls away
    # What the fuser exports for its own member calls.
    assert registry.get_sample_value("chorus_fuser_retries_total", {"model": "m"}) == 2
    circuit = {"model": "m", "replica": "hung"}
    assert registry.get_sample_value("chorus_fuser_circuit_state", circuit) == State.OPEN.value


async def test_a_reply_for_another_input_is_refused(nc: Client) -> None:
    await _replica(nc, "wrong", "other input", [])
    await nc.flush()
    with pytest.raises(DataLoss, match="answered an input other than the one sent"):
        await _ask(_members(nc, ReplicaBook(), ["wrong"]))


async def test_the_deadline_bounds_every_attempt(nc: Client) -> None:
    await _replica(nc, "a", "hang", [])
    await _replica(nc, "b", "hang", [])
    await nc.flush()
    # Three attempts of 5 s each would take 15 s; the task has 0.3 s.
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeadlineExceeded):
        await _ask(_members(nc, ReplicaBook(), ["a", "b"], attempt_s=5.0), budget_s=0.3)
    assert asyncio.get_running_loop().time() - started < 5.0
