"""Gated fusion: the pure strategy on hand-made inputs, and the exported gate end to end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from threadpoolctl import threadpool_limits

from chorus.core.errors import InvalidArgument
from chorus.demo.build import build_demo
from chorus.demo.build_gate import GATE_CAPABILITY, NAME, build_gate_model
from chorus.demo.datasets import digits_split
from chorus.demo.members import MEMBERS
from chorus.fuser.strategies.base import MemberScores
from chorus.fuser.strategies.gated import gate_input, gated_fuse
from chorus.fuser.strategies.soft_vote import SoftVote
from chorus.services import repository


def _members() -> list[MemberScores]:
    a = np.array([[0.9, 0.1], [0.6, 0.4]], dtype=np.float32)
    b = np.array([[0.2, 0.8], [0.3, 0.7]], dtype=np.float32)
    return [MemberScores("a", a), MemberScores("b", b)]


def test_equal_gate_weights_are_the_soft_vote() -> None:
    members = _members()
    out = gated_fuse(members, np.ones((2, 2)))
    soft = SoftVote().fuse(members)
    np.testing.assert_allclose(out.probabilities, soft.probabilities, atol=1e-7)
    assert out.labels.tolist() == soft.labels.tolist() == [0, 1]
    assert out.rules == ["gated: weights a 0.50, b 0.50"] * 2


def test_weights_favouring_one_member_flip_the_answer() -> None:
    members = _members()
    # Row 0: plain mean (0.55, 0.45) says 0; trusting b says 1. Row 1: trusting a says 0.
    out = gated_fuse(members, np.array([[0.1, 0.9], [0.9, 0.1]]))
    assert out.labels.tolist() == [1, 0]
    np.testing.assert_allclose(out.probabilities[0], [0.27, 0.73], atol=1e-6)
    np.testing.assert_allclose(out.probabilities[1], [0.57, 0.43], atol=1e-6)
    np.testing.assert_allclose(out.confidence, [0.73, 0.57], atol=1e-6)
    np.testing.assert_allclose(out.agreement, [0.5, 0.5])
    assert out.rules == ["gated: weights b 0.90, a 0.10", "gated: weights a 0.90, b 0.10"]
    assert out.probabilities.dtype == np.float32


def test_floor_keeps_every_member_in_play() -> None:
    members = _members()
    out = gated_fuse(members, np.array([[0.0, 1.0], [0.0, 0.0]]))
    # Row 0: weights (0.05, 1) / 1.05; row 1: both floored, so equal weights.
    w = np.array([0.05, 1.0]) / 1.05
    expected = w[0] * np.array([0.9, 0.1]) + w[1] * np.array([0.2, 0.8])
    np.testing.assert_allclose(out.probabilities[0], expected, atol=1e-6)
    np.testing.assert_allclose(out.probabilities[1], [0.45, 0.55], atol=1e-6)
    assert out.rules[0] == "gated: weights b 0.95, a 0.05"
    # Without a floor the gate can silence a member; a row of zeros falls back to equal.
    bare = gated_fuse(members, np.array([[0.0, 1.0], [0.0, 0.0]]), floor=0.0)
    np.testing.assert_allclose(bare.probabilities[0], [0.2, 0.8], atol=1e-7)
    np.testing.assert_allclose(bare.probabilities[1], [0.45, 0.55], atol=1e-6)


def test_ties_go_to_the_lowest_class() -> None:
    p = np.array([[0.5, 0.5]], dtype=np.float32)
    out = gated_fuse([MemberScores("a", p), MemberScores("b", p[:, ::-1])], np.ones((1, 2)))
    assert out.labels.tolist() == [0]


@pytest.mark.parametrize(
    ("weights", "floor", "field"),
    [
        (np.ones((3, 2)), 0.05, "gate_weights"),  # rows
        (np.ones((2, 3)), 0.05, "gate_weights"),  # members
        (np.ones(2), 0.05, "gate_weights"),  # not 2-d
        (np.array([[1.0, np.nan], [1.0, 1.0]]), 0.05, "gate_weights"),
        (np.array([[1.0, -0.1], [1.0, 1.0]]), 0.05, "gate_weights"),
        (np.array([["a", "b"], ["c", "d"]]), 0.05, "gate_weights"),
        (np.ones((2, 2)), -0.1, "floor"),
        (np.ones((2, 2)), float("nan"), "floor"),
    ],
)
def test_bad_input_names_the_field(weights: np.ndarray, floor: float, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field):
        gated_fuse(_members(), weights, floor)


def test_members_must_match() -> None:
    a, b = _members()
    short = MemberScores("b", b.probabilities[:1])
    with pytest.raises(InvalidArgument, match=r"members\['b'\]"):
        gated_fuse([a, short], np.ones((2, 2)))
    with pytest.raises(InvalidArgument, match="members"):
        gated_fuse([], np.ones((0, 0)))


def test_gate_input_layout() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    p = [np.full((2, 2), i, dtype=np.float32) for i in (1, 2)]
    assert gate_input(x, p).tolist() == [[0, 1, 2, 1, 1, 2, 2], [3, 4, 5, 1, 1, 2, 2]]
    with pytest.raises(InvalidArgument, match=r"member_probabilities\[1\]"):
        gate_input(x, [p[0], p[1][:1]])


@pytest.fixture(scope="module")
def gate_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("gate_models")
    with threadpool_limits(limits=1):  # BLAS threads only contend on this small data
        build_demo(root, names=list(MEMBERS))
        assert build_gate_model(root) is not None
    yield root


def _session(root: Path, name: str) -> ort.InferenceSession:
    path = repository.load(root, name).onnx_path
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_gate_beats_soft_vote_on_held_out_digits(gate_repo: Path) -> None:
    manifest = repository.load(gate_repo, NAME).manifest
    assert manifest.capabilities == (GATE_CAPABILITY,)
    assert manifest.members == manifest.labels == tuple(MEMBERS)
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("input", "FP32", (-1, 94))]
    assert [(t.name, t.shape) for t in manifest.outputs] == [("probabilities", (-1, 3))]
    assert build_gate_model(gate_repo) is None  # there already, not forced

    split = digits_split()
    x, y = split.x_test, split.y_test
    probs = [
        _session(gate_repo, n).run(["probabilities"], {"input": x})[0] for n in manifest.members
    ]
    weights = _session(gate_repo, NAME).run(["probabilities"], {"input": gate_input(x, probs)})[0]
    assert weights.shape == (len(y), 3) and weights.dtype == np.float32
    assert np.all((weights >= 0) & (weights <= 1))

    members = [MemberScores(n, p) for n, p in zip(manifest.members, probs, strict=True)]
    gated = float(np.mean(gated_fuse(members, weights).labels == y))
    soft = float(np.mean(SoftVote().fuse(members).labels == y))
    best = max(float(np.mean(p.argmax(axis=1) == y)) for p in probs)
    print(f"\nheld-out digits ({len(y)} rows): gated {gated:.4f}, soft vote {soft:.4f}, "
          f"best member {best:.4f}")  # fmt: skip
    assert gated >= soft
    # The manifest's metric came from sklearn's members; ONNX float32 may move a row.
    assert abs(manifest.metrics["holdout_accuracy"] - gated) <= 2 / len(y)
