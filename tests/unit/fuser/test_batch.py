"""Tasks fused in one stacked pass get exactly the reply each would get alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import ChorusError, InvalidArgument
from chorus.fuser import batch
from chorus.fuser.batch import FuseBatcher
from chorus.fuser.fusion import Tools, fuse
from chorus.fuser.strategies import STRATEGIES
from chorus.pb import task_pb2, wire_pb2

CTX = CallContext.start("t", Priority.NORMAL, 30.0)
STACKED = sorted(n for n, s in STRATEGIES.items() if s.needs.stackable)
"""The strategies that declare themselves stackable: the six plain classification votes."""
MODELS = ("logreg", "forest", "mlp")


def _call(
    rng: np.random.Generator,
    rows: int,
    policy: str = "soft_vote",
    *,
    capability: str = "classify/digits",
    weight: float = 0.0,
    conflict: str = "",
) -> wire_pb2.FuseCall:
    call = wire_pb2.FuseCall(
        capability=capability,
        policy=policy,
        labels=[str(i) for i in range(4)],
        conflict=task_pb2.ConflictPolicy(name=conflict),
    )
    truth = np.eye(4)[rng.integers(0, 4, size=rows)]
    sure = (np.arange(rows) % 2 == 0)[:, None]  # even rows agree, odd rows are anyone's
    for model in MODELS:
        noise = rng.dirichlet(np.ones(4), size=rows)
        p = np.where(sure, 0.8 * truth + 0.2 * noise, noise).astype(np.float32)
        call.members.add(
            model=model, version=f"v{rows}", probabilities=to_tensor("probabilities", p),
            weight=weight,
        )  # fmt: skip
    return call


def _bytes(reply: wire_pb2.FuseReply) -> bytes:
    return reply.SerializeToString(deterministic=True)


@pytest.mark.parametrize("policy", STACKED)
async def test_stacked_replies_equal_each_task_fused_alone(policy: str) -> None:
    rng = np.random.default_rng(7)
    calls = [_call(rng, rows, policy) for rows in (1, 3, 1, 2, 5, 1)]
    alone = [await fuse(wire_pb2.FuseCall.FromString(c.SerializeToString()), CTX, Tools())
             for c in calls]  # fmt: skip
    batcher = FuseBatcher(Tools())
    stacked = await asyncio.gather(*(batcher.fuse(c, CTX, together=True) for c in calls))
    assert batcher.passes == 1
    assert [_bytes(r) for r, _ in stacked] == [_bytes(r) for r, _ in alone]
    statuses = {row.status for r, _ in stacked for row in r.rows}
    if policy == "soft_vote":
        assert statuses == {"agreed", "conflicted"}  # both kinds of row were cut right
    for (r, outcome), call in zip(stacked, calls, strict=True):
        rows = call.members[0].probabilities.shape[0]
        assert len(r.rows) == outcome.fused.labels.shape[0] == rows
        assert [m.version for m in outcome.members] == [m.version for m in call.members]


async def test_tasks_fused_differently_are_not_stacked_together() -> None:
    rng = np.random.default_rng(1)
    calls = [
        _call(rng, 1),
        _call(rng, 1, capability="classify/other"),
        _call(rng, 1, weight=2.0),
        _call(rng, 1, "majority_vote"),
        _call(rng, 1),
    ]
    observed: list[int] = []
    batcher = FuseBatcher(Tools(), observe=observed.append)
    stacked = await asyncio.gather(*(batcher.fuse(c, CTX, together=True) for c in calls))
    assert sorted(observed) == [1, 1, 1, 2]
    alone = [await fuse(c, CTX, Tools()) for c in calls]
    assert [_bytes(r) for r, _ in stacked] == [_bytes(r) for r, _ in alone]


async def test_a_bad_task_fails_alone_and_the_others_are_fused() -> None:
    rng = np.random.default_rng(2)
    good = [_call(rng, 2), _call(rng, 1)]
    bad = _call(rng, 1)
    p = np.array([[np.nan, 0.5, 0.25, 0.25]], np.float32)
    bad.members[1].probabilities.CopyFrom(to_tensor("probabilities", p))
    short = _call(rng, 1)
    del short.labels[-1]
    batcher = FuseBatcher(Tools())
    results = await asyncio.gather(
        batcher.fuse(good[0], CTX, together=True), batcher.fuse(bad, CTX, together=True),
        batcher.fuse(short, CTX, together=True), batcher.fuse(good[1], CTX, together=True),
        return_exceptions=True,
    )  # fmt: skip
    assert batcher.passes == 1
    assert isinstance(results[1], InvalidArgument) and "forest" in results[1].message
    assert isinstance(results[2], ChorusError) and "labels" in results[2].message
    for got, call in ((results[0], good[0]), (results[3], good[1])):
        assert isinstance(got, tuple)
        assert _bytes(got[0]) == _bytes((await fuse(call, CTX, Tools()))[0])


async def test_a_conflict_policy_that_acts_runs_each_task_alone() -> None:
    rng = np.random.default_rng(3)
    calls = [_call(rng, 2, conflict="quorum"), _call(rng, 1, conflict="quorum")]
    batcher = FuseBatcher(Tools())
    stacked = await asyncio.gather(*(batcher.fuse(c, CTX, together=True) for c in calls))
    assert batcher.passes == 0
    assert all(r.conflict_policy == "quorum" for r, _ in stacked)


@pytest.mark.parametrize(("enabled", "together"), [(False, True), (True, False)])
async def test_off_or_not_together_every_task_is_fused_alone(enabled: bool, together: bool) -> None:
    rng = np.random.default_rng(4)
    calls = [_call(rng, 1), _call(rng, 2)]
    batcher = FuseBatcher(Tools(), enabled=enabled)
    stacked = await asyncio.gather(*(batcher.fuse(c, CTX, together=together) for c in calls))
    assert batcher.passes == 0
    alone = [await fuse(c, CTX, Tools()) for c in calls]
    assert [_bytes(r) for r, _ in stacked] == [_bytes(r) for r, _ in alone]


async def test_a_group_past_max_rows_is_fused_at_once_and_the_rest_start_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch, "MAX_ROWS", 4)
    rng = np.random.default_rng(5)
    calls = [_call(rng, rows) for rows in (2, 2, 3, 1)]
    observed: list[int] = []
    batcher = FuseBatcher(Tools(), observe=observed.append)
    stacked = await asyncio.gather(*(batcher.fuse(c, CTX, together=True) for c in calls))
    assert observed == [2, 2]
    alone = [await fuse(c, CTX, Tools()) for c in calls]
    assert [_bytes(r) for r, _ in stacked] == [_bytes(r) for r, _ in alone]
