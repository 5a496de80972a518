"""The held-out digits through the whole mesh: router -> 3 model services -> fuser -> router."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from chorus.client import TaskClient
from chorus.demo.datasets import digits_split
from chorus.services import repository
from tests.support import DEMO

CAPABILITY = "classify/digits"


def _direct(model_repo: Path, name: str) -> ort.InferenceSession:
    path = repository.load(model_repo, name).onnx_path
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("policy", ["soft_vote", "majority_vote"])
def test_held_out_digits_end_to_end(client: TaskClient, model_repo: Path, policy: str) -> None:
    split = digits_split()
    x, y = split.x_test, split.y_test
    sessions = {name: _direct(model_repo, name) for name in DEMO}
    # Mostly one digit per task, as applications send them, plus a few multi-row tasks.
    bounds = list(range(0, 400)) + list(range(400, len(x), 35)) + [len(x)]
    fused, member_labels = [], {name: [] for name in DEMO}
    for lo, hi in itertools.pairwise(bounds):
        batch = x[lo:hi]
        result = client.submit(CAPABILITY, {"input": batch}, policy=policy)
        assert result.labels.shape == (len(batch),)
        assert result.probabilities.shape == (len(batch), 10)
        assert set(result.members) == set(DEMO), result.response.explanation.missing
        assert len(result.response.explanation.rows) == len(batch)
        for name, outs in result.members.items():
            want_label, want_probs = sessions[name].run(
                ["label", "probabilities"], {"input": batch}
            )
            np.testing.assert_array_equal(outs["label"], want_label)
            np.testing.assert_allclose(outs["probabilities"], want_probs, rtol=1e-5, atol=1e-7)
            member_labels[name].append(outs["label"])
        fused.append(result.labels)

    y_fused = np.concatenate(fused)
    assert len(y_fused) == len(y)
    accuracy = {name: float(np.mean(np.concatenate(v) == y)) for name, v in member_labels.items()}
    fused_acc = float(np.mean(y_fused == y))
    best = max(accuracy.values())
    print(f"\n{policy}: members {accuracy}, fused {fused_acc:.4f}, best single {best:.4f}")
    assert fused_acc >= best - 0.01


def test_explanation_names_members_votes_and_rule(client: TaskClient) -> None:
    x = digits_split().x_test[:3]
    result = client.submit(CAPABILITY, {"input": x}, policy="majority_vote")
    exp = result.response.explanation
    assert exp.policy == "majority_vote"
    assert sorted(exp.members) == sorted(DEMO)
    assert not exp.missing
    for row, label in zip(exp.rows, result.labels, strict=True):
        assert set(row.votes) == set(DEMO)
        assert row.label == label
        assert row.rule.startswith("majority_vote: ")
        agree = sum(v == row.label for v in row.votes.values()) / len(DEMO)
        assert row.agreement == pytest.approx(agree)
    assert list(result.response.labels) == [str(d) for d in range(10)]
    assert {m.version for m in result.response.members} == {"1"}


def test_list_models_shows_the_live_mesh(client: TaskClient) -> None:
    listed = client.list_models(CAPABILITY).models
    assert sorted(m.name for m in listed) == sorted(DEMO)
    for m in listed:
        assert len(m.replicas) == 1
        assert m.inputs[0].name == "input" and list(m.inputs[0].shape) == [-1, 64]
        assert list(m.devices) == ["cpu"] or list(m.devices) == ["cuda"]
    assert client.list_models("classify/none").models == []
