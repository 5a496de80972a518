"""A new fusion strategy and a new conflict policy, each one class and a `register` call,
written here in one module: the fuser fuses with them, stacks tasks for the one that says it
may be stacked, and the router's question (send the inputs?) is answered from what they
declare, with no name of theirs written anywhere else."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import replace

import numpy as np
import pytest

from chorus.core import needs as declared
from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import InvalidArgument
from chorus.core.needs import Needs
from chorus.fuser import policies, strategies
from chorus.fuser.batch import FuseBatcher
from chorus.fuser.fusion import Tools, fuse
from chorus.fuser.policies.base import ActsOnConflicts, Case, Outcome
from chorus.fuser.strategies import Fused, MemberScores
from chorus.fuser.strategies.base import agreement, check_members
from chorus.pb import task_pb2, wire_pb2

CTX = CallContext.start("t-new", Priority.NORMAL, 5.0)


class VetoVote:
    """Each class scores the least probability any member gives it (one member's doubt is a
    veto), renormalised per row."""

    name = "veto_vote"
    needs = Needs(stackable=True)

    def fuse(self, members: Sequence[MemberScores]) -> Fused:
        rows, _ = check_members(members)
        pooled = np.min(np.stack([m.probabilities for m in members]), axis=0).astype(np.float64)
        pooled /= pooled.sum(axis=1, keepdims=True)
        labels = np.argmax(pooled, axis=1)
        confidence = pooled[np.arange(rows), labels]
        rules = [f"veto_vote: highest least probability ({c:.3f})" for c in confidence]
        return Fused(pooled.astype(np.float32), labels, confidence, agreement(members, labels),
                     rules)  # fmt: skip


class SurestMember(ActsOnConflicts):
    """A conflicted row takes the answer of the member surest of its own vote."""

    name = "surest_member"
    needs = Needs()

    async def decide(self, case: Case, out: Outcome, rows: list[int]) -> Outcome:
        labels = out.fused.labels.copy()
        for r in rows:
            surest = max(case.members, key=lambda m: float(m.probabilities[r].max()))
            labels[r] = int(surest.votes[r])
            out.status[r] = "resolved"
            out.rules[r] = f"surest_member: {surest.model} decided {labels[r]}"
        out.fused = replace(out.fused, labels=labels)
        return out


class Forwarding(SurestMember):
    name = "surest_member_forwarding"
    needs = Needs(forwards_inputs=True)


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registers them in copies of the registries, so no other test sees them."""
    for module, table in (
        (strategies, "STRATEGIES"),
        (policies, "POLICIES"),
        (declared, "STRATEGIES"),
        (declared, "CONFLICT_POLICIES"),
    ):
        monkeypatch.setattr(module, table, dict(getattr(module, table)))
    strategies.register(VetoVote())
    policies.register(SurestMember())
    policies.register(Forwarding())
    yield


def _call(conflict: str = "", rows: int = 2) -> wire_pb2.FuseCall:
    call = wire_pb2.FuseCall(
        policy="veto_vote", labels=["x", "y", "z"], capability="toy", task_id="t-new",
        conflict=task_pb2.ConflictPolicy(name=conflict),
    )  # fmt: skip
    # Row 0: all agree on 0. Row 1: a and b lean to 1, c is sure of 2.
    answers = {
        "a": [[0.98, 0.01, 0.01], [0.05, 0.55, 0.40]],
        "b": [[0.96, 0.02, 0.02], [0.05, 0.50, 0.45]],
        "c": [[0.94, 0.03, 0.03], [0.02, 0.08, 0.90]],
    }
    for name, p in answers.items():
        call.members.add(model=name, probabilities=to_tensor("p", np.array(p[:rows], np.float32)))
    return call


async def test_a_registered_strategy_is_selected_by_name() -> None:
    reply, _ = await fuse(_call(), CTX, Tools())
    assert reply.policy == "veto_vote"
    assert [r.label for r in reply.rows] == [0, 2]
    assert reply.rows[0].rule.startswith("veto_vote: highest least probability")
    assert "veto_vote" in strategies.names(regression=False)


async def test_a_registered_conflict_policy_settles_the_conflicted_rows() -> None:
    reply, out = await fuse(_call("surest_member"), CTX, Tools())
    assert reply.conflict_policy == "surest_member"
    assert out.status == ["agreed", "resolved"]
    assert reply.rows[1].rule == "surest_member: c decided 2"


async def test_the_batcher_stacks_what_declares_itself_stackable() -> None:
    batcher = FuseBatcher(Tools())
    calls = [_call(rows=1), _call(rows=2), _call(rows=1)]
    stacked = await asyncio.gather(*(batcher.fuse(c, CTX, together=True) for c in calls))
    alone = [await fuse(c, CTX, Tools()) for c in calls]
    assert batcher.passes == 1
    for (s, _), (a, _) in zip(stacked, alone, strict=True):
        # Same answers; the conflict pass's float64 margins may differ in the last bit (a
        # matrix product over more rows), as they do for the built-in votes on these rows.
        assert [(r.label, r.status, r.rule) for r in s.rows] == [
            (r.label, r.status, r.rule) for r in a.rows
        ]
        assert [r.margin for r in s.rows] == pytest.approx([r.margin for r in a.rows])
    # A policy that does not say it may be stacked is fused task by task.
    one_by_one = FuseBatcher(Tools())
    await asyncio.gather(*(one_by_one.fuse(_call("surest_member"), CTX, together=True)
                           for _ in range(3)))  # fmt: skip
    assert one_by_one.passes == 0


def test_the_router_reads_their_needs_from_the_core() -> None:
    assert declared.strategy("veto_vote") == Needs(stackable=True)
    assert not declared.sends_inputs("veto_vote", "surest_member")
    assert declared.sends_inputs("veto_vote", "surest_member_forwarding")


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered already"):
        strategies.register(VetoVote())
    with pytest.raises(ValueError, match="declared with"):
        declared.declare(declared.STRATEGIES, "soft_vote", Needs(inputs=True))


def test_the_unknown_name_error_lists_every_registered_strategy() -> None:
    with pytest.raises(InvalidArgument) as err:
        strategies.get("tea_leaves")
    for name in (*declared.STRATEGIES, "stacking", "gated", "dawid_skene", "veto_vote"):
        assert repr(name) in err.value.message


def test_every_built_in_carries_its_core_declaration() -> None:
    """The fuser's strategies and policies and the router's view of them are one table."""
    registered = {**strategies.STRATEGIES}
    del registered["veto_vote"]
    assert set(registered) == set(declared.STRATEGIES) - {"veto_vote"}
    for name, strategy in registered.items():
        assert strategy.needs is declared.STRATEGIES[name]
    built_in = {n: p for n, p in policies.POLICIES.items() if not n.startswith("surest_member")}
    assert set(built_in) == {n for n in declared.CONFLICT_POLICIES if not n.startswith("surest")}
    for name, policy in built_in.items():
        assert policy.needs is declared.CONFLICT_POLICIES[name]
