"""Conformal sets and intervals on the fused answer: the threshold agrees with mapie's split
conformal predictors, 90% sets cover 88-92% of held-out rows on digits (the demo's ONNX
members) and breast cancer, 90% intervals likewise on diabetes, and the policy flags, hands
on or refuses as it should. In-process: the fuser's own fusion code, no NATS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mapie.classification import SplitConformalClassifier
from mapie.regression import SplitConformalRegressor
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from chorus.cli.trust_report import cancer_members, diabetes_members
from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import FailedPrecondition, InvalidArgument
from chorus.demo.datasets import LABELS, digits_split
from chorus.fuser.conformal import intervals, label_sets, nonconformity, threshold
from chorus.fuser.fusion import Tools, fuse
from chorus.pb import task_pb2, wire_pb2
from chorus.services import repository
from chorus.services.runtime import OnnxModel

CTX = CallContext.start("t", Priority.NORMAL, 60.0)
SPLITS = 100
"""Random calibration/evaluation splits averaged: one split of a few hundred rows scatters
by about 2 points around the promise."""


class _Given(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """A prefit classifier whose input already is the fused probabilities."""

    def __init__(self, classes: int = 2) -> None:
        self.classes = classes

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Given:
        self.classes_ = np.arange(self.classes)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).argmax(axis=1)


class _GivenValue(RegressorMixin, BaseEstimator):  # type: ignore[misc]
    def fit(self, x: np.ndarray, y: np.ndarray) -> _GivenValue:
        self.n_features_in_ = 1
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[:, 0]


def _call(
    members: dict[str, np.ndarray], policy: str = "", **conflict: object
) -> wire_pb2.FuseCall:
    kind = "regression" if next(iter(members.values())).ndim == 1 else "probabilities"
    c = wire_pb2.FuseCall(capability="cap", task_id="t", policy=policy,
                          conflict=task_pb2.ConflictPolicy(**conflict))  # type: ignore[arg-type]  # fmt: skip
    for name, scores in members.items():
        c.members.add(model=name, output_kind=kind,
                      probabilities=to_tensor("s", scores.astype(np.float32)))  # fmt: skip
    return c


async def _fused(members: dict[str, np.ndarray], policy: str = "") -> np.ndarray:
    _, out = await fuse(_call(members, policy), CTX, Tools())
    return np.asarray(out.fused.probabilities, dtype=np.float64)


def _coverage(fused: np.ndarray, truth: np.ndarray, regression: bool, seed: int = 0) -> float:
    """Mean empirical coverage at 90% over SPLITS random half/half splits of the rows."""
    rng = np.random.default_rng(seed)
    covered = []
    for _ in range(SPLITS):
        order = rng.permutation(len(truth))
        cal, ev = order[: len(order) // 2], order[len(order) // 2 :]
        q = threshold(nonconformity(fused[cal], truth[cal], regression), 0.9)
        if regression:
            lo, hi = intervals(fused[ev], q)
            covered.append(np.mean((lo[:, 0] <= truth[ev]) & (truth[ev] <= hi[:, 0])))
        else:
            sets = label_sets(fused[ev], q)
            covered.append(np.mean([t in s for t, s in zip(truth[ev], sets, strict=True)]))
    return float(np.mean(covered))


def _cancer_members() -> tuple[dict[str, np.ndarray], np.ndarray]:
    data = cancer_members()
    return data.members, data.truth


def _diabetes_members() -> tuple[dict[str, np.ndarray], np.ndarray]:
    data = diabetes_members()
    return data.members, data.truth


async def test_sets_and_intervals_equal_mapies() -> None:
    members, y = _cancer_members()
    fused = await _fused(members)
    cal, ev = slice(0, 140), slice(140, None)
    q = threshold(nonconformity(fused[cal], y[cal], False), 0.9)
    theirs = SplitConformalClassifier(_Given(2).fit(fused, y), confidence_level=0.9,
                                      conformity_score="lac", prefit=True)  # fmt: skip
    theirs.conformalize(fused[cal], y[cal])
    _, their_sets = theirs.predict_set(fused[ev])
    assert label_sets(fused[ev], q) == [np.flatnonzero(s[:, 0]).tolist() for s in their_sets]

    values, truth = _diabetes_members()
    fused_v = await _fused(values)
    q = threshold(nonconformity(fused_v[:110], truth[:110], True), 0.9)
    reg = SplitConformalRegressor(_GivenValue().fit(fused_v, truth), confidence_level=0.9,
                                  conformity_score="absolute", prefit=True)  # fmt: skip
    reg.conformalize(fused_v[:110], truth[:110])
    _, bounds = reg.predict_interval(fused_v[110:])
    lo, hi = intervals(fused_v[110:], q)
    np.testing.assert_allclose(lo[:, 0], bounds[:, 0, 0], rtol=1e-9)
    np.testing.assert_allclose(hi[:, 0], bounds[:, 1, 0], rtol=1e-9)


async def test_ninety_percent_sets_cover_88_to_92_percent_of_digits(model_repo: Path) -> None:
    split = digits_split()
    members = {}
    for name in ("logreg", "forest", "mlp"):
        model = OnnxModel(repository.load(model_repo, name))
        try:
            members[name] = model.run({"input": split.x_test}).outputs["probabilities"]
        finally:
            model.close()
    fused = await _fused(members)
    assert 0.88 <= _coverage(fused, split.y_test, regression=False) <= 0.92
    assert len(LABELS) == fused.shape[1]


async def test_ninety_percent_sets_cover_88_to_92_percent_of_cancer_rows() -> None:
    members, y = _cancer_members()
    assert 0.88 <= _coverage(await _fused(members, "soft_vote"), y, regression=False) <= 0.92
    # Three members' vote shares take four values, so scores tie and coverage errs high:
    # the promise is a floor, met with room to spare.
    assert 0.9 <= _coverage(await _fused(members, "majority_vote"), y, regression=False) <= 0.95


@pytest.mark.parametrize("policy", ["weighted_mean", "median"])
async def test_ninety_percent_intervals_cover_88_to_92_percent_of_diabetes_rows(
    policy: str,
) -> None:
    values, truth = _diabetes_members()
    assert 0.88 <= _coverage(await _fused(values, policy), truth, regression=True) <= 0.92


async def test_the_policy_answers_sets_flags_the_ambiguous_and_hands_them_on() -> None:
    members = {
        "a": np.array([[0.95, 0.05], [0.6, 0.4], [0.2, 0.8]]),
        "b": np.array([[0.9, 0.1], [0.4, 0.6], [0.1, 0.9]]),
    }
    calibration = np.linspace(0.0, 0.6, 99)  # q at 90% is 0.545: a label needs p >= 0.455
    tools = Tools(conformal=lambda cap, strategy: calibration if strategy == "soft_vote" else None)
    reply, out = await fuse(_call(members, name="conformal", coverage=0.9), CTX, tools)
    q = threshold(calibration, 0.9)
    assert [list(r.prediction_set) for r in reply.rows] == label_sets(out.fused.probabilities, q)
    assert [r.status for r in reply.rows] == [
        "agreed" if len(r.prediction_set) == 1 else "conflicted" for r in reply.rows
    ]
    assert reply.rows[1].status == "conflicted" and list(reply.rows[1].prediction_set) == [0, 1]
    assert reply.coverage == 0.9 and reply.calibration_rows == 99
    assert "conformal 90% over 99 rows: set [0, 1]" in reply.rows[1].rule

    class Arbiter:
        async def scores(self, model, inputs, *, scores_output, augment, ctx):  # type: ignore[no-untyped-def]
            return np.tile([0.0, 1.0], (next(iter(inputs.values())).shape[0], 1))

    tools.client, tools.arbiter = Arbiter(), lambda cap: "judge"  # type: ignore[assignment]
    call = _call(members, name="conformal", then="arbiter")
    call.inputs.append(to_tensor("x", np.zeros((3, 2), np.float32)))
    reply, _ = await fuse(call, CTX, tools)
    assert reply.rows[1].status == "resolved" and reply.rows[1].label == 1

    with pytest.raises(FailedPrecondition, match="no calibration for 'cap' fused by 'borda'"):
        await fuse(_call(members, "borda", name="conformal"), CTX, tools)
    with pytest.raises(InvalidArgument, match=r"conflict\.coverage"):
        await fuse(_call(members, name="conformal", coverage=1.5), CTX, tools)
    with pytest.raises(InvalidArgument, match=r"conflict\.then"):
        await fuse(_call(members, name="conformal", then="vote"), CTX, tools)


def test_too_few_rows_for_the_coverage_give_every_label() -> None:
    assert threshold(np.array([0.1, 0.2]), 0.9) == np.inf
    assert label_sets(np.array([[0.9, 0.1]]), np.inf) == [[0, 1]]
