"""The fuser's collector on a scripted bus and a virtual clock: answers on its collect subject
(early, joined, wrong), and members that lag or fail asked again through MemberCalls."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from chorus.core import subjects
from chorus.core.calls import choice
from chorus.core.calls.attempts import OUTRUN
from chorus.core.calls.client import CallPolicy, MemberCalls
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import ChorusError, DeadlineExceeded, InvalidArgument
from chorus.core.heartbeat import Heartbeat
from chorus.fuser.collect import Collector
from chorus.pb import wire_pb2
from tests.support.fakes import (
    FakeMsg,
    FakeReplica,
    FakeTransport,
    LoopClock,
    digest_of,
    elapsed,
    infer_body,
    run,
)

FUSER = "f1"


def _collector(bus: FakeTransport, beats: list[Heartbeat] | None = None) -> Collector:
    calls = MemberCalls(
        bus, ReplicaBook(), choice.get("power_of_two"), CallPolicy(),
        clock=LoopClock(), rng=random.Random(3),
    )  # fmt: skip
    found = Collector(calls, lambda model: list(beats or []))
    bus.subscribe(subjects.collect(FUSER), found.on_answer)
    return found


def _task(
    token: str, rows: int = 1, *, models: tuple[str, ...] = ("m",), **kw: object
) -> wire_pb2.FuseCall:
    body = infer_body(rows)
    settings: dict[str, object] = {
        "wait_ms": 3000, "max_attempts": 3, "attempt_timeout_ms": 2000, "hedge": True, **kw
    }  # fmt: skip
    call = wire_pb2.FuseCall(capability="c", bodies=[body], **settings)  # type: ignore[arg-type]
    for model in models:
        call.expected.add(
            model=model, call=f"{token}{model}", body=0, input_sha256=digest_of(body),
            scores_output="scores",
        )  # fmt: skip
    return call


def _ctx() -> CallContext:
    return CallContext.start("t", Priority.NORMAL, 5.0)


async def _answer(
    bus: FakeTransport, call: str, scores: np.ndarray, replica: str = "r1", model: str = "m"
) -> None:
    reply = wire_pb2.InferReply(
        model=model, version="1", replica=replica, outputs=[to_tensor("scores", scores)]
    )
    await bus.deliver(
        FakeMsg(subjects.collect(FUSER, f"{replica}.{call}"), reply.SerializeToString())
    )


def test_a_joined_answer_is_cut_by_rows_and_an_early_one_waits_for_its_task() -> None:
    async def main() -> None:
        bus = FakeTransport()
        found = _collector(bus)
        scores = np.arange(6, dtype=np.float32).reshape(3, 2)
        await _answer(bus, "=a1m-1_b2m-2", scores)  # before either task arrives
        first, second = _task("a1", 1), _task("b2", 2)
        got = await asyncio.gather(found.collect(first, _ctx()), found.collect(second, _ctx()))
        one, two = (c.task.members[0].probabilities for c in got)
        np.testing.assert_array_equal(from_tensor(one), scores[:1])
        np.testing.assert_array_equal(from_tensor(two), scores[1:])
        for collected in got:
            assert [(a.model, a.replica, a.code) for a in collected.attempts] == [("m", "r1", "")]
            assert not collected.missing and collected.joined
        assert not bus.sent and elapsed() == 0.0

    run(main())


def test_a_lone_answer_after_its_task_is_taken_and_reported() -> None:
    async def main() -> None:
        bus = FakeTransport()
        found = _collector(bus)
        call = _task("e5", 2)
        asyncio.get_running_loop().call_later(
            0.003, lambda: asyncio.ensure_future(_answer(bus, "e5m", np.ones((2, 2), np.float32)))
        )
        collected = await found.collect(call, _ctx())
        assert not collected.joined and not collected.missing
        (answer,) = collected.answers
        assert answer.replica == "r1" and answer.latency_ms == pytest.approx(3.0)
        reply = wire_pb2.FuseReply()
        collected.report(reply)
        assert [(a.replica, a.call) for a in reply.attempts] == [("r1", "e5m")]

    run(main())


def test_a_joined_answer_with_the_wrong_rows_fails_each_task() -> None:
    async def main() -> None:
        bus = FakeTransport()
        found = _collector(bus)
        first, second = _task("c3", 1, max_attempts=1), _task("d4", 2, max_attempts=1)
        waiting = asyncio.gather(
            found.collect(first, _ctx()), found.collect(second, _ctx()), return_exceptions=True
        )
        await asyncio.sleep(0.001)
        await _answer(bus, "=c3m-1_d4m-2", np.zeros((2, 2), np.float32))
        for r in await waiting:
            assert isinstance(r, ChorusError)
            assert "not the 3 rows it was sent" in r.message

    run(main())


def test_a_silent_member_is_asked_on_another_replica_after_its_patience() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "r2", delay_s=0.002, value=0.75))
        found = _collector(bus, beats)
        collected = await found.collect(_task("s1"), _ctx())
        np.testing.assert_array_equal(
            from_tensor(collected.task.members[0].probabilities), np.full((1, 2), 0.75, np.float32)
        )
        assert bus.to("m") == ["r2"] and not collected.missing
        assert sorted((a.replica, a.code, a.call) for a in collected.attempts) == [
            ("", OUTRUN, "s1m"),  # the router's attempt: the router knows where it went
            ("r2", "", ""),
        ]
        # Unmeasured and alone: 4 x 0 ms service + 5 ms of patience, then 2 ms to answer.
        assert collected.answers[0].latency_ms == pytest.approx(7.0)
        assert collected.outcomes() == {"m": "retried"}  # not the router's attempt

    run(main())


def test_a_hedge_the_routers_attempt_outran_leaves_the_member_counted_ok() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "r2", delay_s=0.010, value=0.5))
        found = _collector(bus, beats)
        first = np.ones((1, 2), np.float32)
        asyncio.get_running_loop().call_later(
            0.006, lambda: asyncio.ensure_future(_answer(bus, "h1m", first))
        )
        collected = await found.collect(_task("h1"), _ctx())
        assert bus.to("m") == ["r2"]  # hedged at 5 ms; the router's attempt answered at 6
        assert sorted((a.replica, a.code, a.call) for a in collected.attempts) == [
            ("r1", "", "h1m"),  # the router's, answered from r1
            ("r2", OUTRUN, ""),
        ]
        np.testing.assert_array_equal(from_tensor(collected.task.members[0].probabilities), first)
        assert collected.outcomes() == {"m": "ok"}

    run(main())


def test_a_member_that_failed_at_the_router_replica_is_retried_elsewhere() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "r1"), FakeReplica("m", "r2"))
        found = _collector(bus, beats)
        failed = FakeMsg(
            subjects.collect(FUSER, "r1.u1m"), b"",
            {"Nats-Service-Error-Code": "UNAVAILABLE", "Nats-Service-Error": "stopping"},
        )  # fmt: skip
        await bus.deliver(failed)
        collected = await found.collect(_task("u1"), _ctx())
        assert bus.to("m") == ["r2"]  # not r1 again
        assert ("r1", "UNAVAILABLE") in [(a.replica, a.code) for a in collected.attempts]

    run(main())


def test_a_member_past_the_wait_is_named_missing_and_too_few_fail_the_task() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("slow", "r9", silent=True))
        found = _collector(bus, beats)
        call = _task("w1", models=("m", "slow"), wait_ms=600, min_members=1)
        asyncio.get_running_loop().call_later(
            0.001, lambda: asyncio.ensure_future(_answer(bus, "w1m", np.ones((1, 2), np.float32)))
        )
        collected = await found.collect(call, _ctx())
        assert elapsed() == pytest.approx(0.6)
        slow = collected.missing["slow"]
        assert isinstance(slow, DeadlineExceeded) and "no answer within" in slow.message
        assert collected.outcomes() == {"m": "ok", "slow": "missing"}
        reply = wire_pb2.FuseReply()
        collected.report(reply)
        assert reply.missing["slow"].code == "DEADLINE_EXCEEDED"
        assert reply.missing["slow"].message == slow.message
        strict = _task("w2", models=("slow",), wait_ms=300)
        with pytest.raises(DeadlineExceeded, match="0 member"):
            await found.collect(strict, _ctx())

    run(main())


def test_an_answer_for_another_input_is_missing_as_data_loss() -> None:
    async def main() -> None:
        bus = FakeTransport()
        found = _collector(bus)
        reply = wire_pb2.InferReply(model="m", replica="r1", input_sha256="0" * 64)
        await bus.deliver(FakeMsg(subjects.collect(FUSER, "r1.x1m"), reply.SerializeToString()))
        call = _task("x1", models=("m",), min_members=1)
        with pytest.raises(ChorusError, match="answered an input other than the one sent"):
            await found.collect(call, _ctx())
        assert not bus.sent  # a corrupt reply is not the replica's lateness: no retry

    run(main())


def test_a_body_index_past_the_bodies_sent_is_refused() -> None:
    async def main() -> None:
        found = _collector(FakeTransport())
        call = _task("b1")
        call.expected[0].body = 3
        with pytest.raises(InvalidArgument, match="past the 1 bodies sent"):
            await found.collect(call, _ctx())

    run(main())


def test_inputs_left_in_the_bodies_are_read_back_once_each() -> None:
    async def main() -> None:
        bus = FakeTransport()
        found = _collector(bus)
        x = to_tensor("x", np.ones((1, 2), np.float32))
        caption = to_tensor("caption", np.zeros((1, 3), np.float32))
        both = wire_pb2.InferCall(inputs=[x, caption]).SerializeToString()
        call = _task("i1", models=("m", "n"), inputs_in_bodies=True)
        call.bodies.append(both)
        call.expected[1].body = 1
        call.expected[1].input_sha256 = digest_of(both)
        await _answer(bus, "i1m", np.ones((1, 2), np.float32))
        await _answer(bus, "i1n", np.ones((1, 2), np.float32), model="n")
        sent = call.SerializeToString()
        task = (await found.collect(call, _ctx())).task
        assert [t.name for t in task.inputs] == ["x", "caption"]
        np.testing.assert_array_equal(from_tensor(task.inputs[1]), np.zeros((1, 3)))
        assert [m.model for m in task.members] == ["m", "n"]
        assert not task.bodies and not task.expected
        assert call.SerializeToString() == sent, "the call as received is left as it came"

    run(main())
