"""MemberCalls on a scripted bus and a virtual clock: replica choice, retries, hedging,
breakers, digests and deadlines, and the first attempt another process sent (InFlight), as
the fuser's collector hands it over on the one-way path."""

from __future__ import annotations

import asyncio
import random

import pytest
from prometheus_client import CollectorRegistry

from chorus.core.calls import choice
from chorus.core.calls.attempts import OUTRUN, Attempt, InFlight
from chorus.core.calls.breaker import State
from chorus.core.calls.client import CallCounters, CallPolicy, MemberCalls
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.context import INPUT_SHA256, CallContext, Priority
from chorus.core.errors import DataLoss, DeadlineExceeded, InvalidArgument, Unavailable
from chorus.pb import wire_pb2
from tests.support.fakes import (
    FakeReplica,
    FakeTransport,
    LoopClock,
    digest_of,
    elapsed,
    infer_body,
    run,
)

BODY = infer_body()
DIGEST = digest_of(BODY)


def _calls(
    bus: FakeTransport,
    policy: CallPolicy | None = None,
    book: ReplicaBook | None = None,
    registry: CollectorRegistry | None = None,
    chooser: str = "power_of_two",
) -> MemberCalls:
    return MemberCalls(
        bus, book or ReplicaBook(), choice.get(chooser), policy or CallPolicy(hedge=False),
        CallCounters("t", registry) if registry is not None else None,
        clock=LoopClock(), rng=random.Random(7),
    )  # fmt: skip


def _ctx(budget_s: float = 5.0) -> CallContext:
    return CallContext.start("t", Priority.NORMAL, budget_s)


def _measured(book: ReplicaBook, ms: float, n: int = 20) -> None:
    for _ in range(n):
        book.record_latency("m", ms)


def test_the_chosen_replica_answers_with_the_digest_sent_and_echoed() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "a", value=0.25))
        calls = _calls(bus)
        reply, ms = await calls.call("m", beats, BODY, DIGEST, _ctx(), {"X": "1"})
        assert reply.replica == "a" and reply.input_sha256 == DIGEST
        assert ms == pytest.approx(1.0)
        assert bus.to("m") == ["a"]
        assert bus.sent[0].headers[INPUT_SHA256] == DIGEST and bus.sent[0].headers["X"] == "1"
        assert calls.book.state("a").outstanding == 0

    run(main())


def test_no_replicas_known_goes_to_the_queue_group() -> None:
    async def main() -> None:
        bus = FakeTransport()
        bus.add(FakeReplica("m", "a"))
        reply, _ = await _calls(bus).call("m", [], BODY, DIGEST, _ctx())
        assert reply.replica == "a" and bus.to("m") == ["*"]

    run(main())


def test_a_failing_replica_is_retried_on_another_and_counted() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "bad", fail="UNAVAILABLE"), FakeReplica("m", "ok"))
        registry = CollectorRegistry()
        calls = _calls(bus, registry=registry)
        calls.book.state("ok").ewma_ms = 50.0  # the chooser prefers "bad" first
        report: list[Attempt] = []
        reply, _ = await calls.call("m", beats, BODY, DIGEST, _ctx(), report=report)
        assert reply.replica == "ok" and bus.to("m") == ["bad", "ok"]
        assert [(a.replica, a.code) for a in report] == [("bad", "UNAVAILABLE"), ("ok", "")]
        assert registry.get_sample_value("t_retries_total", {"model": "m"}) == 1
        assert calls.book.state("bad").breaker.failures == 1

    run(main())


def test_a_gone_replica_gets_no_responders_and_another_is_asked() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "gone", gone=True), FakeReplica("m", "ok"))
        calls = _calls(bus)
        calls.book.state("ok").ewma_ms = 50.0
        reply, _ = await calls.call("m", beats, BODY, DIGEST, _ctx())
        assert reply.replica == "ok" and bus.to("m") == ["gone", "ok"]
        assert elapsed() == pytest.approx(0.001)  # no responders costs no waiting

    run(main())


def test_a_silent_replica_costs_one_attempt_timeout() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "hung", silent=True), FakeReplica("m", "ok"))
        calls = _calls(bus, CallPolicy(attempt_timeout_s=0.2, hedge=False))
        calls.book.state("ok").ewma_ms = 50.0
        reply, ms = await calls.call("m", beats, BODY, DIGEST, _ctx())
        assert reply.replica == "ok"
        assert ms == pytest.approx(201.0)

    run(main())


def test_a_breaker_opens_keeps_calls_away_and_lets_one_probe_through_after_cooldown() -> None:
    async def main() -> None:
        bus = FakeTransport()
        hung = FakeReplica("m", "hung", silent=True, ewma_ms=0.001)
        beats = bus.add(hung, FakeReplica("m", "ok"))
        book = ReplicaBook(failures_to_open=2, cooldown_s=10.0)
        calls = _calls(bus, CallPolicy(attempt_timeout_s=0.2, hedge=False), book)
        for _ in range(6):
            await calls.call("m", beats, BODY, DIGEST, _ctx())
        assert hung.calls == 2 and book.state("hung").breaker.state is State.OPEN
        await asyncio.sleep(10.0)  # the cool-down, on the virtual clock
        hung.silent = False
        for _ in range(3):
            await calls.call("m", beats, BODY, DIGEST, _ctx())
        assert hung.calls >= 3 and book.state("hung").breaker.state is State.CLOSED

    run(main())


def test_a_reply_for_another_input_is_data_loss_and_not_retried() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "w", wrong_digest=True), FakeReplica("m", "ok"))
        calls = _calls(bus)
        calls.book.state("ok").ewma_ms = 50.0
        with pytest.raises(DataLoss, match="answered an input other than the one sent"):
            await calls.call("m", beats, BODY, DIGEST, _ctx())
        assert bus.to("m") == ["w"]
        assert calls.book.state("w").breaker.failures == 0

    run(main())


def test_bad_input_is_not_retried_and_keeps_the_members_words() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "a", fail="INVALID_ARGUMENT"), FakeReplica("m", "b"))
        calls = _calls(bus)
        calls.book.state("b").ewma_ms = 50.0
        with pytest.raises(InvalidArgument, match="model m: boom"):
            await calls.call("m", beats, BODY, DIGEST, _ctx())
        assert len(bus.sent) == 1

    run(main())


def test_the_deadline_bounds_every_attempt() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "a", silent=True), FakeReplica("m", "b", silent=True))
        calls = _calls(bus, CallPolicy(attempt_timeout_s=5.0, hedge=False))
        with pytest.raises(DeadlineExceeded, match=r"after 1 attempt\(s\)"):
            await calls.call("m", beats, BODY, DIGEST, _ctx(0.3))
        assert elapsed() == pytest.approx(0.3, abs=0.002)

    run(main())


def test_every_replica_failing_raises_the_last_error_after_max_attempts() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(*(FakeReplica("m", r, fail="UNAVAILABLE") for r in "abcd"))
        with pytest.raises(Unavailable, match="model m: boom"):
            await _calls(bus, CallPolicy(max_attempts=3)).call("m", beats, BODY, DIGEST, _ctx())
        assert len(set(bus.to("m"))) == 3  # three attempts, three different replicas

    run(main())


def test_a_request_late_past_the_p95_is_hedged_and_the_first_answer_wins() -> None:
    async def main() -> None:
        bus = FakeTransport()
        slow = FakeReplica("m", "slow", delay_s=1.0, ewma_ms=0.001)
        beats = bus.add(slow, FakeReplica("m", "fast", delay_s=0.005))
        book = ReplicaBook()
        _measured(book, 10.0)
        registry = CollectorRegistry()
        calls = _calls(bus, CallPolicy(hedge=True), book, registry)
        report: list[Attempt] = []
        reply, ms = await calls.call("m", beats, BODY, DIGEST, _ctx(), report=report)
        assert reply.replica == "fast" and bus.to("m") == ["slow", "fast"]
        assert ms == pytest.approx(15.0)  # hedged at the 10 ms p95, answered 5 ms later
        assert registry.get_sample_value("t_hedges_total", {"model": "m"}) == 1
        assert {(a.replica, a.code) for a in report} == {("fast", ""), ("slow", OUTRUN)}
        assert book.state("slow").ewma_ms > 10.0  # outrun: slow, not failed
        assert book.state("slow").breaker.failures == 0

    run(main())


def test_no_hedge_before_the_model_has_a_p95_or_with_hedging_off() -> None:
    async def main() -> None:
        for measured, hedge in ((False, True), (True, False)):
            bus = FakeTransport()
            beats = bus.add(
                FakeReplica("m", "slow", delay_s=0.5, ewma_ms=0.001), FakeReplica("m", "b")
            )
            book = ReplicaBook()
            if measured:
                _measured(book, 10.0)
            calls = _calls(bus, CallPolicy(hedge=hedge), book)
            reply, _ = await calls.call("m", beats, BODY, DIGEST, _ctx())
            assert reply.replica == "slow" and bus.to("m") == ["slow"]

    run(main())


def test_a_lone_replica_is_not_hedged_to_itself() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "only", delay_s=0.1))
        book = ReplicaBook()
        _measured(book, 10.0)
        reply, _ = await _calls(bus, CallPolicy(hedge=True), book).call(
            "m", beats, BODY, DIGEST, _ctx()
        )
        assert reply.replica == "only" and len(bus.sent) == 1

    run(main())


def test_record_applies_reported_attempts_as_the_callers_own() -> None:
    async def main() -> None:
        registry = CollectorRegistry()
        calls = _calls(FakeTransport(), book=ReplicaBook(failures_to_open=2), registry=registry)
        calls.record(Attempt("m", "a", 4.0))
        calls.record(Attempt("m", "b", 30.0, code="DEADLINE_EXCEEDED"))
        calls.record(Attempt("m", "b", 1.0, code="UNAVAILABLE"))
        calls.record(Attempt("m", "c", 8.0, code=OUTRUN))
        calls.record(Attempt("m", "d", 8.0, code="INVALID_ARGUMENT"))
        calls.record(Attempt("m", "", 2.0))
        book = calls.book
        assert book.state("a").ewma_ms == 4.0 and book.state("a").breaker.state is State.CLOSED
        assert book.state("b").breaker.state is State.OPEN and book.state("b").ewma_ms == 0.0
        assert book.state("c").ewma_ms == 8.0 and book.state("c").breaker.failures == 0
        assert book.state("d").breaker.failures == 0
        chosen = {"model": "m", "replica": "queue-group"}
        assert registry.get_sample_value("t_replica_requests_total", chosen) == 1
        circuit = {"model": "m", "replica": "b"}
        assert registry.get_sample_value("t_circuit_state", circuit) == State.OPEN.value
        closed = {"model": "m", "replica": "a"}  # shown once, then only when it changes
        assert registry.get_sample_value("t_circuit_state", closed) == State.CLOSED.value

    run(main())


def test_pick_without_a_probe_leaves_a_half_open_breaker_for_a_caller_that_hears_back() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "a"))
        calls = _calls(bus, book=ReplicaBook(failures_to_open=1, cooldown_s=1.0))
        calls.record(Attempt("m", "a", 1.0, code="UNAVAILABLE"))
        assert calls.pick(beats) is None  # open: the queue group instead
        await asyncio.sleep(1.0)
        assert calls.pick(beats, probe=False) is not None
        assert calls.pick(beats) is not None  # the probe was still there to take
        assert calls.pick(beats) is None  # and now it is taken

    run(main())


def test_attempts_round_trip_through_the_wire() -> None:
    a = Attempt("m", "r1", 12.5, "DEADLINE_EXCEEDED", "tok")
    assert Attempt.from_proto(wire_pb2.Attempt.FromString(a.to_proto().SerializeToString())) == a
    assert Attempt("m", "r", 1.0).answered and not a.answered


def _first(loop: asyncio.AbstractEventLoop, patience: float | None, call: str = "tok") -> InFlight:
    return InFlight(loop.create_future(), loop.time(), call, patience=patience)


def test_a_first_attempt_in_flight_that_answers_needs_no_request() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "a"))
        first = _first(asyncio.get_running_loop(), 0.05)
        later = asyncio.get_running_loop().call_later(
            0.01, first.answer.set_result, wire_pb2.InferReply(model="m", replica="r0")
        )
        first.replica = "r0"
        report: list[Attempt] = []
        reply, ms = await _calls(bus).call(
            "m", beats, BODY, DIGEST, _ctx(), policy=CallPolicy(), first=first, report=report
        )
        later.cancel()
        assert reply.replica == "r0" and ms == pytest.approx(10.0) and not bus.sent
        assert [(a.replica, a.code, a.call) for a in report] == [("r0", "", "tok")]
        assert report[0].latency_ms == pytest.approx(10.0)

    run(main())


def test_a_silent_first_attempt_is_hedged_after_its_patience_and_reported_outrun() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "b", delay_s=0.002))
        first = _first(asyncio.get_running_loop(), 0.05)
        report: list[Attempt] = []
        calls = _calls(bus)
        reply, ms = await calls.call(
            "m", beats, BODY, DIGEST, _ctx(), policy=CallPolicy(), first=first, report=report
        )
        assert reply.replica == "b" and ms == pytest.approx(52.0)
        assert sorted((a.replica, a.code, a.call) for a in report) == [
            ("", OUTRUN, "tok"),
            ("b", "", ""),
        ]
        # The first attempt is the sender's to apply: only ours went into this book.
        assert calls.book.state("b").ewma_ms == pytest.approx(2.0)

    run(main())


def test_a_failed_first_attempt_is_retried_at_once_elsewhere() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "r0"), FakeReplica("m", "b"))
        first = _first(asyncio.get_running_loop(), 1.0)
        first.replica = "r0"
        first.answer.set_exception(Unavailable("model m: boom"))
        reply, ms = await _calls(bus).call(
            "m", beats, BODY, DIGEST, _ctx(), policy=CallPolicy(), first=first
        )
        assert reply.replica == "b" and bus.to("m") == ["b"]  # not r0 again
        assert ms == pytest.approx(1.0)

    run(main())


def test_a_first_attempt_refused_as_bad_input_is_not_retried() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "b"))
        first = _first(asyncio.get_running_loop(), 1.0)
        first.answer.set_exception(InvalidArgument("model m: bad"))
        with pytest.raises(InvalidArgument):
            await _calls(bus).call(
                "m", beats, BODY, DIGEST, _ctx(), policy=CallPolicy(), first=first
            )
        assert not bus.sent

    run(main())


def test_with_no_replica_subscribed_the_silent_first_is_given_up_as_failed() -> None:
    async def main() -> None:
        bus = FakeTransport()
        first = _first(asyncio.get_running_loop(), 0.05)
        report: list[Attempt] = []
        with pytest.raises(Unavailable):
            await _calls(bus).call(
                "m", [], BODY, DIGEST, _ctx(), policy=CallPolicy(), first=first, report=report
            )
        assert elapsed() == pytest.approx(0.05)  # not the whole attempt timeout
        assert ("", "DEADLINE_EXCEEDED", "tok") in [(a.replica, a.code, a.call) for a in report]

    run(main())


def test_with_one_attempt_allowed_the_first_is_waited_out_to_its_timeout() -> None:
    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "b"))
        policy = CallPolicy(max_attempts=1, attempt_timeout_s=0.3)
        calls = _calls(bus)
        first = _first(
            asyncio.get_running_loop(), calls.patience("m", lambda m: beats, policy, _ctx())
        )
        with pytest.raises(DeadlineExceeded, match="no answer within 300 ms"):
            await calls.call("m", beats, BODY, DIGEST, _ctx(), policy=policy, first=first)
        assert not bus.sent

    run(main())


def test_patience_is_the_p95_or_an_estimate_and_longer_for_a_lone_replica() -> None:
    async def main() -> None:
        bus = FakeTransport()
        two = bus.add(FakeReplica("m", "a", ewma_ms=3.0), FakeReplica("m", "b", ewma_ms=2.0))
        policy = CallPolicy(attempt_timeout_s=2.0)
        calls = _calls(bus)
        # Unmeasured: four of the slowest heartbeat's service times, plus 5 ms.
        assert calls.patience("m", lambda m: two, policy, _ctx()) == pytest.approx(0.017)
        _measured(calls.book, 10.0)
        assert calls.patience("m", lambda m: two, policy, _ctx()) == pytest.approx(0.010)
        await asyncio.sleep(1.0)  # past the cached view
        alone = two[:1]
        assert calls.patience("m", lambda m: alone, policy, _ctx()) == pytest.approx(0.040)
        assert calls.patience("m", lambda m: two, CallPolicy(hedge=False), _ctx()) is None

    run(main())


def test_a_hedge_to_a_gone_replica_leaves_the_late_attempt_to_a_live_one_to_answer() -> None:
    """No responders on one replica's subject says that replica is gone, not every replica:
    the late attempt still answers. (Once it was given up as if no replica were subscribed,
    failing a task the live replica was about to answer.)"""

    async def main() -> None:
        bus = FakeTransport()
        beats = bus.add(FakeReplica("m", "slow", delay_s=0.1), FakeReplica("m", "gone", gone=True))
        calls = _calls(bus, CallPolicy(max_attempts=2, hedge=True, hedge_min_ms=10))
        _measured(calls.book, 10.0)
        calls.book.state("gone").ewma_ms = 50.0  # the chooser goes to "slow" first
        reply, ms = await calls.call("m", beats, BODY, DIGEST, _ctx())
        assert bus.to("m") == ["slow", "gone"]
        assert reply.replica == "slow" and ms == pytest.approx(100.0, abs=2)

    run(main())
