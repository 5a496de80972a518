"""A multi-task network that emits logits, served and fused end to end as a user would: a
six-column linear network made here with onnx.helper, its manifest written by hand with three
heads (two softmax groups and one sigmoid logit), `chorus up --repository`, `chorus submit
--json` per capability. Each head's fused probabilities must equal a softmax of its own
columns computed here from the model's raw output, so a head that is not softmaxed, softmaxed
over the wrong columns, or softmaxed or tempered twice (model, then fuser) fails."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from scipy.special import expit

from chorus.launch.natsserver import free_port
from tests.support.onnx_graphs import linear

CHORUS = [sys.executable, "-m", "chorus.cli"]
ROWS = 24
COLOUR = ("red", "green", "blue")
SIZE = ("small", "large")
FLAG = ("no", "yes")
WARM = 2.0
"""net_warm's temperature: its head divides the logits by it once, and only once."""


@dataclass
class Served:
    router: str
    x: Path
    logits: np.ndarray
    """The network's raw output on `x`, [ROWS, 6], run here with ONNX Runtime."""


def _write(root: Path, name: str, manifest: dict[str, Any]) -> Path:
    folder = root / name / "1"
    folder.mkdir(parents=True)
    linear(folder / "model.onnx", softmax=False, classes=6, features=4)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("heads")
    repo = root / "repo"
    onnx_file = _write(repo, "net", {
        "capabilities": ["classify/colour", "classify/size", "classify/flag"],
        "output_kind": "logits", "scores_output": "scores",
        "heads": {
            "classify/colour": {"columns": [0, 1, 2], "labels": list(COLOUR)},  # kind: logits
            "classify/size": {"columns": [3, 4], "labels": list(SIZE), "kind": "logits"},
            "classify/flag": {"columns": [5], "labels": list(FLAG), "kind": "binary_logit"},
        },
    })  # fmt: skip
    _write(repo, "net_warm", {
        "capabilities": ["classify/colour-warm"], "output_kind": "logits",
        "scores_output": "scores", "temperature": WARM,
        "heads": {"classify/colour-warm": {"columns": [0, 1, 2], "labels": list(COLOUR),
                                           "kind": "logits"}},
    })  # fmt: skip
    x = np.random.default_rng(7).normal(scale=2.0, size=(ROWS, 4)).astype(np.float32)
    np.save(root / "x.npy", x)
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["scores"], {"x": x})
    cmd = [*CHORUS, "up", "--repository", str(repo), "--data-dir", str(root / "up"),
           "--router-port", "0", "--nats-port", str(free_port())]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, f"chorus up ended early: {lines}"
            lines.append(line.rstrip())
            if line.startswith("mesh up"):
                break
        router = lines[-1].split("--router ")[1].split()[0]
        yield Served(router, root / "x.npy", np.asarray(logits, dtype=np.float64))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _submit(served: Served, capability: str) -> dict[str, Any]:
    done = subprocess.run(
        [*CHORUS, "submit", "--router", served.router, "--capability", capability, "--json",
         "--input", f"x={served.x}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@pytest.mark.parametrize(
    ("capability", "columns", "labels"),
    [("classify/colour", [0, 1, 2], COLOUR), ("classify/size", [3, 4], SIZE)],
)
def test_each_logits_head_is_fused_as_the_softmax_of_its_columns(
    served: Served, capability: str, columns: list[int], labels: tuple[str, ...]
) -> None:
    answer = _submit(served, capability)
    expected = _softmax(served.logits[:, columns])
    fused = np.array(answer["outputs"]["probabilities"])
    assert fused.shape == (ROWS, len(columns))
    np.testing.assert_allclose(fused, expected, atol=1e-5, rtol=0)
    assert answer["outputs"]["label"] == expected.argmax(axis=1).tolist()
    assert answer["labels"] == list(labels)
    # The member's own answer is its head: the softmax already, not the six raw columns.
    member = answer["members"]["net"]
    assert sorted(member) == ["label", "probabilities"]
    np.testing.assert_allclose(member["probabilities"], expected, atol=1e-5, rtol=0)
    # Logits far from uniform, so a renormalising head (the old bug) would have failed here.
    assert float(np.abs(expected - 1 / len(columns)).max()) > 0.3


def test_a_binary_logit_head_is_fused_as_its_sigmoid(served: Served) -> None:
    answer = _submit(served, "classify/flag")
    p = expit(served.logits[:, 5])
    np.testing.assert_allclose(
        answer["outputs"]["probabilities"], np.stack([1 - p, p], axis=1), atol=1e-5, rtol=0
    )
    assert answer["outputs"]["label"] == (p > 0.5).astype(int).tolist()
    assert answer["labels"] == list(FLAG)


def test_the_temperature_is_applied_once(served: Served) -> None:
    answer = _submit(served, "classify/colour-warm")
    once = _softmax(served.logits[:, :3] / WARM)
    fused = np.array(answer["outputs"]["probabilities"])
    np.testing.assert_allclose(fused, once, atol=1e-5, rtol=0)
    twice = _softmax(served.logits[:, :3] / WARM**2)
    assert float(np.abs(fused - twice).max()) > 1e-2  # the test tells once from twice
