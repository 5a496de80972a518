"""The router's stage paths: one place chooses among them, and request checks run alone."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np
import pytest

from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import InvalidArgument
from chorus.core.heartbeat import Heartbeat
from chorus.core.spec import TensorSpec
from chorus.pb import task_pb2
from chorus.router.paths import CascadePath, Members, OneWayPath, Paths, StageTask, TwoHop
from chorus.router.roster import Roster
from chorus.router.validate import Limits, check_cascade


def _hb(model: str, heads: dict[str, dict[str, Any]] | None = None) -> Heartbeat:
    return Heartbeat(
        model=model, version="1", replica=f"{model}-0", capabilities=("classify/x",),
        inputs=(TensorSpec("x", "FP32", (-1, 2)),),
        outputs=(TensorSpec("scores", "FP32", (-1, 2)),),
        labels=("a", "b"), scores_output="scores", device="cpu", heads=heads or {},
    )  # fmt: skip


def _paths(one_way: bool) -> Paths:
    members = Members(
        cast(Any, None), cast(Any, None), cast(Any, None),
        default_policy="soft_vote", default_conflict_policy="none", min_members=1,
    )  # fmt: skip
    return Paths(members, cast(Any, None), cast(Any, object()) if one_way else None)


def _task(roster: Roster, *, threshold: float = 0.0, shared: bool = False) -> StageTask:
    return StageTask(
        roster, [], "", task_pb2.ConflictPolicy(), task_pb2.Cascade(threshold=threshold),
        CallContext.start("t", Priority.NORMAL, 1.0), {}, {} if shared else None,
    )  # fmt: skip


ROSTER = Roster("classify/x", {"a": [_hb("a")], "b": [_hb("b")]})


def test_a_cascade_threshold_chooses_the_cascade() -> None:
    assert isinstance(_paths(True).choose(_task(ROSTER, threshold=0.6)), CascadePath)


def test_single_stages_go_one_way_where_it_is_on() -> None:
    assert isinstance(_paths(True).choose(_task(ROSTER)), OneWayPath)
    assert isinstance(_paths(False).choose(_task(ROSTER)), TwoHop)


def test_pipeline_stages_and_multi_task_members_go_two_hop() -> None:
    assert isinstance(_paths(True).choose(_task(ROSTER, shared=True)), TwoHop)
    multi = Roster("classify/x", {"m": [_hb("m", {"classify/x": {"labels": ["a", "b"]}})]})
    assert isinstance(_paths(True).choose(_task(multi)), TwoHop)


def test_inputs_are_checked_against_the_members_specs() -> None:
    limits = Limits(default_budget_s=1.0, max_rows=4)
    limits.check_inputs([to_tensor("x", np.zeros((4, 2), np.float32))], ROSTER)
    with pytest.raises(InvalidArgument, match="5 rows exceed the router's max_rows of 4"):
        limits.check_inputs([to_tensor("x", np.zeros((5, 2), np.float32))], ROSTER)
    with pytest.raises(InvalidArgument, match=r"inputs: \['y'\] taken by no model"):
        limits.check_inputs(
            [to_tensor("x", np.zeros((1, 2), np.float32)), to_tensor("y", np.zeros((1, 2)))],
            ROSTER,
        )


def test_deadlines_beyond_the_limit_are_refused() -> None:
    limits = Limits(default_budget_s=1.0, max_rows=4, max_deadline_s=2.0)
    ctx = limits.context(task_pb2.SubmitRequest(deadline_ms=1500), Priority.NORMAL, 0.5)
    assert ctx.remaining_s() <= 0.5
    with pytest.raises(InvalidArgument, match="beyond the router's limit of 2000 ms"):
        limits.context(task_pb2.SubmitRequest(deadline_ms=2500), Priority.NORMAL, None)


def test_a_regression_cascade_is_refused() -> None:
    hb = _hb("r")
    roster = Roster("regress/x", {"r": [replace(hb, output_kind="regression")]})
    check_cascade(task_pb2.Cascade(threshold=0.5), ROSTER)
    check_cascade(task_pb2.Cascade(), roster)
    with pytest.raises(InvalidArgument, match="cascades stop on a classifier's confidence"):
        check_cascade(task_pb2.Cascade(threshold=0.5), roster)
