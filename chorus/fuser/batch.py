"""Tasks whose members answered together are fused together.

A joined member call answers many tasks in one message, so their collections finish in the
same turn of the event loop (the collector says which tasks had a joined answer; only those
wait for the turn to end). Every classification strategy and the first conflict pass work
row by row, and a one-row task pays the whole fixed cost of numpy's calls; stacking the
waiting tasks' rows and fusing them once costs little more than fusing one. Only tasks that
would be fused alike are stacked: the same capability, strategy, labels and members (in the
same order, with the same weight, temperature, kind and priority), classification, and a
strategy and conflict policy that declare themselves `stackable` (row by row from the scores
alone: the plain voting strategies, and flagging conflicts; the others may ask members
again, per task). Everything else,
and every task that fails a check, goes through `fusion.fuse` alone, with the same errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from chorus.core.codec import from_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import ChorusError
from chorus.core.wire import DEFAULT_POLICY
from chorus.fuser import kinds, policies, strategies
from chorus.fuser.conflict import ConflictReport
from chorus.fuser.fusion import Tools, decode_members, fuse, reply_for
from chorus.fuser.policies import Case, Outcome, Settings
from chorus.fuser.strategies import Fused, FusionStrategy, MemberScores
from chorus.fuser.strategies.base import check_members
from chorus.pb import wire_pb2

MAX_ROWS = 1024
"""Rows one stacked pass may carry: a group that would pass it is fused at once, and the
tasks after it start a new group."""

Done = tuple[wire_pb2.FuseReply, Outcome]


@dataclass
class _Waiting:
    call: wire_pb2.FuseCall
    members: list[MemberScores]
    rows: int
    done: asyncio.Future[Done]


@dataclass
class _Group:
    strategy: FusionStrategy
    policy: str
    waiting: list[_Waiting] = field(default_factory=list)
    rows: int = 0


class FuseBatcher:
    def __init__(
        self,
        tools: Tools,
        observe: Callable[[int], None] | None = None,
        *,
        enabled: bool = True,
    ) -> None:
        self.tools = tools
        self.observe = observe
        self.enabled = enabled
        self._groups: dict[Hashable, _Group] = {}
        self._flush_at: asyncio.Handle | None = None
        self.passes = 0
        """Stacked passes run, for tests and metrics: tasks fused / passes is the gain."""

    async def fuse(self, call: wire_pb2.FuseCall, ctx: CallContext, *, together: bool) -> Done:
        """Fuses `call`; with `together` (its members answered in a joined call, so other
        tasks are finishing in this same turn) it waits for the end of the turn to be fused
        with them. Alone, it never waits: a lone task pays nothing for stacking."""
        found = self._stackable(call) if self.enabled and together else None
        if found is None:
            return await fuse(call, ctx, self.tools)
        key, members, strategy, policy = found
        rows = members[0].probabilities.shape[0]
        group = self._groups.get(key)
        if group is None or group.rows + rows > MAX_ROWS:
            if group is not None:
                self._run(group)
            group = self._groups[key] = _Group(strategy, policy)
        done: asyncio.Future[Done] = asyncio.get_running_loop().create_future()
        group.waiting.append(_Waiting(call, members, rows, done))
        group.rows += rows
        if self._flush_at is None:
            self._flush_at = asyncio.get_running_loop().call_soon(self._flush)
        return await done

    def _stackable(
        self, call: wire_pb2.FuseCall
    ) -> tuple[Hashable, list[MemberScores], FusionStrategy, str] | None:
        """The group key, decoded members, strategy and conflict policy of a task that can be
        stacked, else None (the task then goes alone, and any error it has is raised there)."""
        policy = policies.POLICIES.get(call.conflict.name or "none")
        if policy is None or not policy.needs.stackable or not call.members:
            return None
        if any(m.output_kind == kinds.REGRESSION for m in call.members):
            return None
        name = call.policy or DEFAULT_POLICY
        strategy = strategies.scores_only(name)
        if strategy is None or not strategy.needs.stackable:
            return None
        try:
            members = decode_members(
                call,
                self.tools.weights(call.capability),
                self.tools.temperatures(call.capability),
            )
            _, classes = check_members(members)
            for t in call.inputs:
                from_tensor(t)
        except ChorusError:
            return None
        if call.labels and len(call.labels) != classes:
            return None
        key = (
            call.capability,
            name,
            policy.name,
            tuple(call.labels),
            classes,
            tuple((m.model, m.weight, m.temperature, m.output_kind, m.priority) for m in members),
        )
        return key, members, strategy, policy.name

    def _flush(self) -> None:
        self._flush_at = None
        groups, self._groups = self._groups, {}
        for group in groups.values():
            self._run(group)

    def _run(self, group: _Group) -> None:
        waiting = group.waiting
        try:
            outcome = self._fuse_stacked(group.strategy, [w.members for w in waiting])
        except Exception as exc:
            for w in waiting:
                if not w.done.done():
                    w.done.set_exception(exc)
            return
        self.passes += 1
        if self.observe is not None:
            self.observe(len(waiting))
        start = 0
        for w in waiting:
            part = rows_of(outcome, start, start + w.rows, w.members)
            start += w.rows
            if not w.done.done():
                w.done.set_result((reply_for(group.strategy.name, group.policy, part), part))

    def _fuse_stacked(
        self, strategy: FusionStrategy, tasks: Sequence[list[MemberScores]]
    ) -> Outcome:
        first = tasks[0]
        members = [
            MemberScores(
                m.model,
                np.concatenate([t[i].probabilities for t in tasks]) if len(tasks) > 1
                else m.probabilities,
                m.weight,
                m.version,
                m.priority,
                m.output_kind,
                m.temperature,
            )
            for i, m in enumerate(first)
        ]  # fmt: skip
        fused = strategy.fuse(members)
        return policies.base.first_pass(
            Case(
                capability="",
                members=members,
                inputs={},
                scores_outputs={},
                fuse=_unused,
                thresholds=self.tools.thresholds,
                settings=Settings(),
                ctx=CallContext("", Priority.NORMAL, 0),
                strategy=strategy.name,
            ),
            fused,
        )


async def _unused(members: Sequence[MemberScores]) -> Fused:
    raise AssertionError("the first conflict pass never fuses again")


def rows_of(outcome: Outcome, start: int, stop: int, members: list[MemberScores]) -> Outcome:
    """Rows start..stop of a stacked first-pass outcome, as one task's own, with its own
    members (their versions are the ones that answered it)."""
    f, r = outcome.fused, outcome.report
    rows = slice(start, stop)

    def cut(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    return Outcome(
        fused=Fused(
            f.probabilities[rows], f.labels[rows], f.confidence[rows], f.agreement[rows],
            f.rules[rows],
        ),
        members=members,
        report=ConflictReport(
            r.conflicted[rows], r.reasons[rows], r.thresholds,
            margin=cut(r.margin), entropy=cut(r.entropy), vote_margin=cut(r.vote_margin),
        ),
        status=outcome.status[rows],
        rules=outcome.rules[rows],
        rounds=outcome.rounds[rows],
    )  # fmt: skip
