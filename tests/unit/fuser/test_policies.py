"""Conflict policies on hand-made batches, with a fake member client standing in for NATS."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import FailedPrecondition, InvalidArgument
from chorus.core.subjects import kv_key
from chorus.fuser.fusion import Tools, fuse
from chorus.fuser.weights import hedge
from chorus.pb import task_pb2, wire_pb2

CTX = CallContext.start("t-7", Priority.CRITICAL, 5.0)
# Row 0: all agree on 0. Row 1: a 2-1 split (a, b say 1; c says 2, unsure).
A = [[0.98, 0.01, 0.01], [0.02, 0.96, 0.02]]
B = [[0.96, 0.02, 0.02], [0.04, 0.92, 0.04]]
C = [[0.94, 0.03, 0.03], [0.1, 0.3, 0.6]]


class FakeMembers:
    """Answers as the named model would on a second look; records who was asked what."""

    def __init__(self, answers: dict[str, list[list[float]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int, bool, Priority]] = []

    async def scores(self, model, inputs, *, scores_output, augment, ctx):  # type: ignore[no-untyped-def]
        rows = next(iter(inputs.values())).shape[0]
        self.calls.append((model, rows, augment, ctx.priority))
        return np.array(self.answers[model][:rows], dtype=np.float32)


def call(policy: task_pb2.ConflictPolicy, strategy: str = "soft_vote") -> wire_pb2.FuseCall:
    c = wire_pb2.FuseCall(
        policy=strategy, labels=["x", "y", "z"], capability="toy", task_id="t-7",
        conflict=policy, inputs=[to_tensor("input", np.arange(4, dtype=np.float32).reshape(2, 2))],
    )  # fmt: skip
    for name, p in (("a", A), ("b", B), ("c", C)):
        c.members.add(model=name, probabilities=to_tensor("p", np.array(p, np.float32)))
    return c


async def test_no_policy_flags_the_split_row_only() -> None:
    reply, out = await fuse(call(task_pb2.ConflictPolicy()), CTX, Tools())
    assert out.status == ["agreed", "conflicted"]
    assert [r.label for r in reply.rows] == [0, 1]
    assert "conflicted: " in reply.rows[1].rule
    assert "vote margin 0.333 < 0.340" in reply.rows[1].rule
    assert reply.conflict_policy == "none"
    assert dict(reply.weights) == {"a": 1.0, "b": 1.0, "c": 1.0}


async def test_quorum_of_three_leaves_the_split_unresolved() -> None:
    reply, out = await fuse(call(task_pb2.ConflictPolicy(name="quorum", quorum=3)), CTX, Tools())
    assert out.status == ["agreed", "unresolved"]
    assert [r.label for r in reply.rows] == [0, -1]
    assert reply.rows[1].rule == "quorum: only 2 of 3 members back 1; 3 needed"


async def test_quorum_default_majority_accepts_two_of_three() -> None:
    _, out = await fuse(call(task_pb2.ConflictPolicy(name="quorum")), CTX, Tools())
    assert out.status == ["agreed", "resolved"]
    assert out.rules[1] == "quorum: 2 of 3 members back 1 (2 needed)"


async def test_negotiation_asks_only_the_unsure_dissenter_and_it_concedes() -> None:
    members = FakeMembers({"c": [[0.02, 0.96, 0.02]]})
    policy = task_pb2.ConflictPolicy(name="negotiate", max_rounds=3, concede_below=0.9)
    reply, out = await fuse(call(policy), CTX, Tools(client=members))
    assert members.calls == [("c", 1, True, Priority.CRITICAL)]  # one row, augmented, same priority
    assert out.status == ["agreed", "resolved"]
    assert reply.rows[1].round == 1
    assert reply.rows[1].rule.startswith("negotiate: consensus in round 1 (c conceded)")
    assert dict(reply.rows[1].votes) == {"a": 1, "b": 1, "c": 1}


async def test_negotiation_stops_after_max_rounds_when_nobody_moves() -> None:
    members = FakeMembers({"c": [[0.1, 0.3, 0.6]]})
    policy = task_pb2.ConflictPolicy(name="negotiate", max_rounds=2)
    reply, out = await fuse(call(policy), CTX, Tools(client=members))
    assert len(members.calls) == 2
    assert out.status[1] == "conflicted"
    assert reply.rows[1].rule.startswith("negotiate: no consensus after 2 rounds (nobody conceded)")


async def test_a_sure_dissenter_is_not_asked() -> None:
    members = FakeMembers({})
    policy = task_pb2.ConflictPolicy(name="negotiate", concede_below=0.5)
    _, out = await fuse(call(policy), CTX, Tools(client=members))
    assert members.calls == []
    assert out.status[1] == "conflicted"


async def test_arbiter_decides_conflicted_rows_only() -> None:
    members = FakeMembers({"judge": [[0.05, 0.05, 0.9]]})
    policy = task_pb2.ConflictPolicy(name="arbiter", arbiter="judge")
    reply, out = await fuse(call(policy), CTX, Tools(client=members))
    assert members.calls == [("judge", 1, False, Priority.CRITICAL)]
    assert [r.label for r in reply.rows] == [0, 2]
    assert out.rules[1] == "arbiter: judge decided 2 (0.90)"


async def test_arbiter_needs_an_arbiter() -> None:
    with pytest.raises(FailedPrecondition, match="no arbiter model for 'toy'"):
        await fuse(
            call(task_pb2.ConflictPolicy(name="arbiter")), CTX, Tools(client=FakeMembers({}))
        )


async def test_escalation_sends_the_evidence_and_marks_needs_review() -> None:
    sent: list[wire_pb2.ReviewCase] = []

    async def review(case: wire_pb2.ReviewCase) -> None:
        sent.append(case)

    reply, out = await fuse(
        call(task_pb2.ConflictPolicy(name="escalate")), CTX, Tools(review=review)
    )
    assert out.status == ["agreed", "needs_review"]
    (case,) = sent
    assert case.task_id == "t-7" and list(case.review_rows) == [1]
    assert [m.model for m in case.members] == ["a", "b", "c"]
    assert case.inputs[0].name == "input"
    assert reply.rows[1].label == 1  # provisional answer kept, status says it is not final


async def test_unknown_policy_and_missing_inputs() -> None:
    with pytest.raises(InvalidArgument, match=r"conflict.name: unknown conflict policy 'coin'"):
        await fuse(call(task_pb2.ConflictPolicy(name="coin")), CTX, Tools())
    c = call(task_pb2.ConflictPolicy(name="arbiter", arbiter="judge"))
    del c.inputs[:]
    with pytest.raises(InvalidArgument, match="inputs: conflict policy 'arbiter' needs"):
        await fuse(c, CTX, Tools(client=FakeMembers({})))


async def test_learned_weights_apply_when_the_wire_weight_is_zero() -> None:
    tools = Tools(weights=lambda cap: {"c": 8.0} if cap == "toy" else {})
    reply, _ = await fuse(call(task_pb2.ConflictPolicy()), CTX, tools)
    assert dict(reply.weights) == {"a": 1.0, "b": 1.0, "c": 8.0}
    # row 1: (a + b + 8c) / 10 = [0.086, 0.428, 0.486]: c, trusted eight times as much, wins
    assert reply.rows[1].label == 2


def test_hedge_punishes_loss_and_keeps_mean_one() -> None:
    new = hedge({"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 1.0}, eta=1.0, floor=0.0)
    assert new["b"] / new["a"] == pytest.approx(np.exp(-1.0))
    assert sum(new.values()) / 2 == pytest.approx(1.0)
    floored = hedge({"a": 1.0, "b": 1e-9}, {"b": 1.0}, floor=0.05)
    assert floored["b"] == 0.05


def test_kv_keys_are_valid_and_distinct() -> None:
    assert kv_key("classify/digits") == "classify/digits"
    assert kv_key("classify/digits+caption") == "classify/digits=2bcaption"
    assert kv_key("a b") != kv_key("a_b")
