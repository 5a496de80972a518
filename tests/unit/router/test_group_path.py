"""The co-hosted path on a scripted bus and a virtual clock: which rosters a group holds, that
the whole task goes to one group replica in one message, and that a group replica that is
gone, fails or stays silent is retried or hedged on another like a model's replica."""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import replace

import numpy as np
import pytest

from chorus.core.calls import choice
from chorus.core.calls.client import CallPolicy
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.request import ERROR_CODE_HEADER, ERROR_HEADER
from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import InvalidArgument, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.pb import task_pb2, wire_pb2
from chorus.router.dispatch import Dispatcher, DispatchPolicy
from chorus.router.metrics import RouterMetrics
from chorus.router.paths import Members, Paths, StageTask
from chorus.router.paths.group import GroupPath
from chorus.router.roster import Roster
from tests.support.fakes import FakeMsg, FakeReplica, FakeTransport, LoopClock, elapsed, run

MEMBERS = ("a", "b", "c")
GROUP = "digits"


def _beat(model: str, group_replica: str = "", group: str = GROUP) -> Heartbeat:
    hb = FakeReplica(model, f"{group_replica or 'solo'}-{model}").heartbeat()
    if not group_replica:
        return hb
    return replace(hb, group=group, group_replica=group_replica)


def _roster(*replicas: str, alone: tuple[str, ...] = ()) -> Roster:
    beats = {m: [_beat(m, r) for r in replicas] for m in MEMBERS}
    for m in alone:
        beats[m].append(_beat(m))
    return Roster("classify/x", beats)


def test_a_group_holds_a_roster_only_where_one_replica_holds_every_member() -> None:
    found = _roster("g1", "g2").group
    assert found is not None
    name, beats = found
    assert name == GROUP
    assert [hb.replica for hb in beats] == ["g1", "g2"]
    assert _roster().group is None
    partial = Roster("classify/x", {"a": [_beat("a", "g1")], "b": [_beat("b", "g2")]})
    assert partial.group is None
    mixed = Roster("classify/x", {"a": [_beat("a", "g1")], "b": [_beat("b", "g1", "other")]})
    assert mixed.group is None
    assert _roster("g1", alone=("a",)).group == (GROUP, [replace(_beat("a", "g1"), replica="g1")])


class _GroupReplica:
    """One group replica on the bus: answers a task with every expected member fused."""

    def __init__(self, name: str, *, fail: str = "", silent: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.silent = silent
        self.calls: list[wire_pb2.FuseCall] = []

    async def answer(self, subject: str, payload: bytes, headers: dict[str, str]) -> FakeMsg:
        self.calls.append(wire_pb2.FuseCall.FromString(payload))
        await asyncio.sleep(0.001)
        if self.silent:
            await asyncio.get_running_loop().create_future()
        if self.fail:
            return FakeMsg(subject, b"", {ERROR_CODE_HEADER: self.fail, ERROR_HEADER: "boom"})
        call = self.calls[-1]
        p = np.array([[0.25, 0.75]], np.float32)
        fused = wire_pb2.FuseReply(policy="soft_vote", probabilities=to_tensor("p", p))
        fused.rows.add(label=1, confidence=0.75)
        for e in call.expected:
            fused.answers.add(
                model=e.model, version="1", replica=f"{self.name}-{e.model}",
                outputs=[to_tensor("scores", p)], latency_ms=1.0,
            )  # fmt: skip
        reply = wire_pb2.InferReply(
            model=f"group:{GROUP}", replica=self.name,
            input_sha256=hashlib.sha256(payload).hexdigest(), fused=fused,
        )  # fmt: skip
        return FakeMsg(subject, reply.SerializeToString())


def _path(bus: FakeTransport) -> GroupPath:
    metrics = RouterMetrics()
    policy = DispatchPolicy(calls=CallPolicy(max_attempts=3, attempt_timeout_s=0.5, hedge=True))
    dispatcher = Dispatcher(
        bus, ReplicaBook(), choice.get("power_of_two"), policy, metrics,
        clock=LoopClock(), rng=random.Random(3),
    )  # fmt: skip

    class _Nc:
        max_payload = bus.max_payload

    members = Members(
        _Nc(),  # type: ignore[arg-type]
        dispatcher, metrics, default_policy="soft_vote", default_conflict_policy="none",
        min_members=1,
    )  # fmt: skip
    return GroupPath(members)


def _task(roster: Roster, budget_s: float = 5.0) -> StageTask:
    x = to_tensor("x", np.zeros((1, 2), np.float32))
    return StageTask(
        roster, [x], "", task_pb2.ConflictPolicy(), task_pb2.Cascade(),
        CallContext.start("t1", Priority.NORMAL, budget_s), {},
    )  # fmt: skip


def _serve(bus: FakeTransport, *replicas: _GroupReplica) -> None:
    for r in replicas:
        bus.on(f"chorus.infer.group:{GROUP}.{r.name}", r.answer)


def test_the_whole_task_goes_to_one_group_replica_in_one_message() -> None:
    async def main() -> None:
        bus = FakeTransport()
        g1 = _GroupReplica("g1")
        _serve(bus, g1)
        done = await _path(bus).run(_task(_roster("g1")))
        assert [s.subject for s in bus.sent] == [f"chorus.infer.group:{GROUP}.g1"]
        call = g1.calls[0]
        assert [e.model for e in call.expected] == list(MEMBERS)
        assert [t.name for t in call.inputs] == ["x"]
        assert [m.model for m in done.result.members] == list(MEMBERS)
        assert {m.replica for m in done.result.members} == {f"g1-{m}" for m in MEMBERS}

    run(main())


@pytest.mark.parametrize("how", ["gone", "failing", "silent"])
def test_a_group_replica_that_is_gone_fails_or_is_silent_is_failed_over(how: str) -> None:
    async def main() -> None:
        bus = FakeTransport()
        bad = _GroupReplica(
            "g1", fail="UNAVAILABLE" if how == "failing" else "", silent=how == "silent"
        )
        good = _GroupReplica("g2")
        _serve(bus, good) if how == "gone" else _serve(bus, bad, good)
        path = _path(bus)
        for _ in range(4):
            done = await path.run(_task(_roster("g1", "g2")))
            assert {m.replica for m in done.result.members} == {f"g2-{m}" for m in MEMBERS}
        assert len(good.calls) == 4
        assert any(s.subject.endswith(".g1") for s in bus.sent), "g1 was never tried"
        assert elapsed() < 4 * 0.5 + 0.1

    run(main())


def test_no_group_replica_answering_fails_the_task_unavailable() -> None:
    async def main() -> None:
        bus = FakeTransport()
        with pytest.raises(Unavailable):
            await _path(bus).run(_task(_roster("g1")))

    run(main())


def test_paths_choose_the_group_only_where_it_holds_every_member() -> None:
    bus = FakeTransport()
    members = _path(bus).members
    paths = Paths(members, RouterMetrics(), None)
    assert paths.choose(_task(_roster("g1"))) is paths.group
    assert paths.choose(_task(_roster())) is paths.two_hop
    cascade = replace(_task(_roster("g1")), cascade=task_pb2.Cascade(threshold=0.9))
    assert paths.choose(cascade) is paths.cascade


def test_a_task_too_large_for_one_message_is_refused_naming_the_limit() -> None:
    async def main() -> None:
        bus = FakeTransport(max_payload=64)
        _serve(bus, _GroupReplica("g1"))
        with pytest.raises(InvalidArgument, match="64-byte message limit"):
            await _path(bus).run(_task(_roster("g1")))
        assert not bus.sent

    run(main())
