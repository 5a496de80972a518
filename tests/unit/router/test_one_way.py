"""Both ends of the one-way path on one scripted bus and a virtual clock: the router's OneWay
sends the task to a fuser replica and each member its share with that fuser's collect
subject as the reply target; the fuser's Collector gathers them (asking again where one
lags); the attempts it reports feed the router's breakers through MemberCalls.record."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from chorus.core import subjects
from chorus.core.calls import choice
from chorus.core.calls.attempts import Attempt
from chorus.core.calls.breaker import State
from chorus.core.calls.client import CallPolicy, MemberCalls
from chorus.core.calls.payload import Payload
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.request import ERROR_CODE_HEADER, ERROR_HEADER
from chorus.core.codec import from_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import ChorusError, FailedPrecondition
from chorus.core.heartbeat import Heartbeat
from chorus.fuser.collect import Collector
from chorus.pb import wire_pb2
from chorus.router.one_way import FUSER_TTL_S, FuserBook, OneWay
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
POLICY = CallPolicy(max_attempts=3, attempt_timeout_s=0.5, hedge=True)


def _calls(bus: FakeTransport, book: ReplicaBook | None = None) -> MemberCalls:
    return MemberCalls(
        bus, book or ReplicaBook(), choice.get("power_of_two"), POLICY,
        clock=LoopClock(), rng=random.Random(5),
    )  # fmt: skip


async def _router(
    bus: FakeTransport, book: ReplicaBook | None = None, fuser: str = FUSER
) -> tuple[OneWay, MemberCalls]:
    fusers = FuserBook(clock=LoopClock())
    await fusers.on_heartbeat(FakeMsg(subjects.FUSER_HEARTBEATS, fuser.encode()))
    calls = _calls(bus, book)
    return OneWay(bus, calls, fusers), calls


def _fuser(bus: FakeTransport, beats: list[Heartbeat]) -> Collector:
    """A fuser replica: collects on its subject and answers with what it collected."""
    found = Collector(_calls(bus), lambda model: [b for b in beats if b.model == model])
    bus.subscribe(subjects.collect(FUSER), found.on_answer)

    async def fuse(subject: str, payload: bytes, headers: dict[str, str]) -> FakeMsg:
        call = wire_pb2.FuseCall.FromString(payload)
        ctx = CallContext.from_headers(headers, default_budget_s=5.0)
        try:
            collected = await found.collect(call, ctx)
        except ChorusError as err:
            return FakeMsg(
                subject, b"", {ERROR_CODE_HEADER: err.code_name, ERROR_HEADER: err.message}
            )
        reply = wire_pb2.FuseReply(policy="soft_vote")
        collected.report(reply)
        return FakeMsg(subject, reply.SerializeToString())

    bus.on(subjects.fuse_replica(FUSER), fuse)
    return found


def _task(models: list[str], min_members: int = 1) -> tuple[dict[str, Payload], wire_pb2.FuseCall]:
    payload = Payload.of(infer_body(2))
    return dict.fromkeys(models, payload), wire_pb2.FuseCall(
        capability="c", min_members=min_members
    )


def _ctx() -> CallContext:
    return CallContext.start("t", Priority.NORMAL, 5.0)


def test_members_answer_the_fuser_and_the_router_learns_from_its_attempts() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("a", "ra", value=0.25), FakeReplica("b", "rb", value=0.75))
        _fuser(bus, beats)
        one_way, calls = await _router(bus)
        payloads, call = _task(["a", "b"])
        ran = await one_way.run({"a": beats[:1], "b": beats[1:]}, payloads, call, _ctx())
        assert ran is not None
        fan, reply = ran
        assert set(fan.replies) == {"a", "b"} and not fan.errors
        np.testing.assert_array_equal(
            from_tensor(fan.replies["b"].outputs[0]), np.full((2, 2), 0.75)
        )
        # One body, sent once to the fuser and hashed once; members got it with its digest.
        assert len(call.bodies) == 1
        assert {e.input_sha256 for e in call.expected} == {digest_of(payloads["a"].body)}
        assert call.bodies[0] == payloads["a"].body
        members = [s for s in bus.sent if s.subject.startswith("chorus.infer.")]
        assert {s.reply.split(".")[2] for s in members} == {FUSER}
        assert {(a.model, a.replica, a.code) for a in reply.attempts} == {
            ("a", "ra", ""), ("b", "rb", "")
        }  # fmt: skip
        assert calls.book.state("ra").ewma_ms == pytest.approx(reply.answers[0].latency_ms)
        await asyncio.sleep(0)  # the member calls' slots are freed as they are cancelled
        assert calls.book.state("ra").outstanding == 0
        assert not one_way._sent_to and not one_way._answered

    run(main())


def test_a_member_silent_at_the_routers_replica_is_asked_again_by_the_fuser() -> None:
    async def main() -> None:
        bus = FakeTransport()
        hung = FakeReplica("a", "hung", silent=True, ewma_ms=2.0)
        beats = bus.add(hung, FakeReplica("a", "ok", ewma_ms=1.0))
        _fuser(bus, beats)
        book = ReplicaBook(failures_to_open=1)
        book.state("ok").ewma_ms = 50.0  # the router sends to "hung", the fuser then to "ok"
        one_way, _ = await _router(bus, book)
        payloads, call = _task(["a"])
        ran = await one_way.run({"a": beats}, payloads, call, _ctx())
        assert ran is not None and ran[0].replies["a"].replica == "ok"
        assert bus.to("a") == ["hung", "ok"]
        assert elapsed() < 0.1  # the fuser's patience, not the 0.5 s attempt timeout
        # The fuser could not name the silent replica; the router knew where it sent it.
        # Outrun after 4 x 2 ms + 5 ms of patience and the 1 ms "ok" took: slow, not failed.
        assert book.state("hung").ewma_ms == pytest.approx(14.0)
        assert book.state("hung").breaker.state is State.CLOSED

    run(main())


def test_failures_the_fuser_reports_open_the_routers_breakers() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("a", "ra"))

        async def fuse(subject: str, payload: bytes, headers: dict[str, str]) -> FakeMsg:
            call = wire_pb2.FuseCall.FromString(payload)
            reply = wire_pb2.FuseReply()
            reply.missing["a"].code = "UNAVAILABLE"
            reply.missing["a"].message = "model a: stopping: the model service is stopping"
            tok = call.expected[0].call
            reply.attempts.append(Attempt("a", "", 3.0, "UNAVAILABLE", tok).to_proto())
            return FakeMsg(subject, reply.SerializeToString())

        bus.on(subjects.fuse_replica(FUSER), fuse)
        book = ReplicaBook(failures_to_open=1)
        one_way, _ = await _router(bus, book)
        payloads, call = _task(["a"])
        ran = await one_way.run({"a": beats}, payloads, call, _ctx())
        assert ran is not None
        assert ran[0].errors["a"].code_name == "UNAVAILABLE"
        assert ran[0].errors["a"].message == "model a: stopping: the model service is stopping"
        assert book.state("ra").breaker.state is State.OPEN

    run(main())


def test_no_live_fuser_leaves_the_task_to_the_two_hop_path() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("a", "ra"))
        one_way, _ = await _router(bus)
        payloads, call = _task(["a"])
        await asyncio.sleep(FUSER_TTL_S + 0.1)
        assert await one_way.run({"a": beats}, payloads, call, _ctx()) is None
        assert not bus.sent

    run(main())


def test_a_fuser_gone_costs_the_attempt_and_is_forgotten() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("a", "ra"))
        one_way, _ = await _router(bus, fuser="gone1")
        payloads, call = _task(["a"])
        assert await one_way.run({"a": beats}, payloads, call, _ctx()) is None
        assert one_way.fusers.pick() is None

    run(main())


def test_a_task_the_fuser_refuses_raises_its_error() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("a", "ra"))

        async def refuse(subject: str, payload: bytes, headers: dict[str, str]) -> FakeMsg:
            return FakeMsg(
                subject, b"", {ERROR_CODE_HEADER: "FAILED_PRECONDITION", ERROR_HEADER: "no arbiter"}
            )

        bus.on(subjects.fuse_replica(FUSER), refuse)
        one_way, _ = await _router(bus)
        payloads, call = _task(["a"])
        with pytest.raises(FailedPrecondition, match="no arbiter"):
            await one_way.run({"a": beats}, payloads, call, _ctx())

    run(main())
