"""A user's own repository, end to end, as a new user would go: export models that are not the
demo (examples/tabular/export.py), add each with `chorus models add` (no manifest typed),
serve the repository with `chorus up --repository`, submit, and check every fused number
against the members' own ONNX files run directly."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from chorus.client import AsyncTaskClient, Conflict, FailedPrecondition, TaskClient
from chorus.launch.natsserver import free_port
from chorus.services import repository
from tests.support import REPO

EXPORT = REPO / "examples" / "tabular" / "export.py"
CHORUS = [sys.executable, "-m", "chorus.cli"]
ROWS = 40


@dataclass
class Served:
    repo: Path
    out: Path
    models: list[dict[str, Any]]
    router: str
    nats_url: str


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    out = tmp_path_factory.mktemp("exported")
    repo = tmp_path_factory.mktemp("repo")
    _run([sys.executable, str(EXPORT), str(out)], timeout=240)
    models = json.loads((out / "models.json").read_text())
    for m in models:
        labels = ["--labels", ",".join(m["labels"])] if m.get("labels") else []
        _run([*CHORUS, "models", "add", str(out / m["file"]), "--name", m["name"],
              "--capability", m["capability"], "--kind", m["output_kind"],
              "--repository", str(repo), *labels])  # fmt: skip
    nats_port = free_port()
    cmd = [*CHORUS, "up", "--repository", str(repo), "--data-dir", str(out / "up"),
           "--router-port", "0", "--nats-port", str(nats_port)]  # fmt: skip
    env = {**os.environ, "CHORUS_FUSER_LEARN_TEMPERATURES": "true"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)  # fmt: skip
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
        yield Served(repo, out, models, router, f"nats://127.0.0.1:{nats_port}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _direct(served: Served, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mv = repository.load(served.repo, name)
    session = ort.InferenceSession(str(mv.onnx_path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {k: v for k, v in feeds.items() if k in wanted})
    return dict(zip(names, values, strict=True))


def _kinds(served: Served, capability: str) -> dict[str, str]:
    return {m["name"]: m["output_kind"] for m in served.models if m["capability"] == capability}


def test_only_the_users_models_are_served_and_written(served: Served) -> None:
    added = sorted(m["name"] for m in served.models)
    assert sorted(p.name for p in served.repo.iterdir()) == added  # no demo model trained here
    with TaskClient(served.router) as client:
        assert sorted(m.name for m in client.list_models().models) == added
    assert {"cancer_lgbm", "diabetes_lgbm"} <= set(added)  # onnxmltools, the examples extra
    kinds = set(_kinds(served, "classify/cancer").values())
    assert {"probabilities", "logits"} <= kinds and len(_kinds(served, "regress/diabetes")) >= 3
    two = repository.load(served.repo, "cancer_two_input").manifest
    assert [(s.name, s.datatype) for s in two.inputs] == [("x", "FP32"), ("flags", "INT64")]


def test_classifiers_fused_as_probabilities(served: Served) -> None:
    x = np.load(served.out / "cancer_test_x.npy")[:ROWS]
    flags = np.load(served.out / "cancer_test_flags.npy")[:ROWS]
    with TaskClient(served.router) as client:
        result = client.submit("classify/cancer", {"x": x, "flags": flags})
    kinds = _kinds(served, "classify/cancer")
    assert sorted(result.members) == sorted(kinds)
    normalised = []
    for name, kind in kinds.items():
        direct = _direct(served, name, {"x": x, "flags": flags})
        for output, value in direct.items():
            np.testing.assert_array_equal(result.members[name][output], value)
        scores = direct[repository.load(served.repo, name).manifest.scores_output]
        if kind == "logits":
            z = np.exp(scores - scores.max(axis=1, keepdims=True))
            scores = z / z.sum(axis=1, keepdims=True)
        normalised.append(scores)
    probs = result.probabilities
    np.testing.assert_allclose(probs, np.mean(normalised, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    rows = result.response.explanation.rows
    assert all(0.0 <= r.confidence <= 1.0 for r in rows)
    assert list(result.labels) == list(np.argmax(probs, axis=1))
    accuracy = np.mean(result.labels == np.load(served.out / "cancer_test_y.npy")[:ROWS])
    assert accuracy >= 0.85 and list(result.response.labels) == ["malignant", "benign"]


@pytest.mark.parametrize("policy", ["", "median"])
def test_regression_is_fused_as_values_and_wide_rows_are_flagged(
    served: Served, policy: str
) -> None:
    x = np.load(served.out / "diabetes_test_x.npy")[:ROWS]
    with TaskClient(served.router) as client:
        result = client.submit("regress/diabetes", {"x": x}, policy=policy)
    assert "label" not in result.outputs and result.value.shape == (ROWS,)
    values = []
    for name in _kinds(served, "regress/diabetes"):
        direct = _direct(served, name, {"x": x})
        for output, value in direct.items():
            np.testing.assert_array_equal(result.members[name][output], value)
        values.append(next(iter(direct.values())).reshape(ROWS))
    stacked = np.stack(values)
    expected = np.median(stacked, axis=0) if policy else stacked.mean(axis=0)
    np.testing.assert_allclose(result.value, expected, rtol=1e-5)
    explanation = result.response.explanation
    assert explanation.policy == (policy or "weighted_mean")
    spread = stacked.std(axis=0)
    wide = spread > np.maximum(1.0, 0.1 * np.abs(expected))
    flagged = np.array([r.status == "conflicted" for r in explanation.rows])
    np.testing.assert_array_equal(flagged, wide)
    assert 0 < flagged.sum() < ROWS
    assert all(r.label == -1 and len(r.value) == 1 for r in explanation.rows)


def _submit_cli(served: Served, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CHORUS, "submit", "--router", served.router, *args],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_chorus_submit_sends_npy_inputs_and_prints_json(served: Served) -> None:
    x = np.load(served.out / "cancer_test_x.npy")[:ROWS]
    flags = np.load(served.out / "cancer_test_flags.npy")[:ROWS]
    done = _submit_cli(served, "--capability", "classify/cancer", "--json",
                       "--input", f"x={served.out / 'cancer_test_x.npy'}",
                       "--input", f"flags={served.out / 'cancer_test_flags.npy'}",
                       "--limit", str(ROWS))  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    with TaskClient(served.router) as client:
        direct = client.submit("classify/cancer", {"x": x, "flags": flags})
    np.testing.assert_allclose(answer["outputs"]["probabilities"], direct.probabilities, rtol=1e-6)
    assert answer["outputs"]["label"] == direct.labels.tolist()
    assert sorted(answer["members"]) == sorted(direct.members)
    assert answer["labels"] == ["malignant", "benign"]
    assert len(answer["explanation"]["rows"]) == ROWS


def test_chorus_submit_reads_csv_rows_and_prints_a_table(served: Served, tmp_path: Path) -> None:
    x = np.load(served.out / "diabetes_test_x.npy")[:ROWS]
    csv_file = tmp_path / "rows.csv"
    header = ",".join(f"f{i}" for i in range(x.shape[1]))
    np.savetxt(csv_file, x.astype(np.float64), delimiter=",", header=header, comments="")
    base = ["--capability", "regress/diabetes", "--input", f"x={csv_file}"]
    table = _submit_cli(served, *base, "--show", "5")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:4] == ["row", "value", "spread", "status"]
    assert lines[6] == f"... {ROWS - 5} more rows (--show N, or --json for all)"
    assert f"{ROWS} rows;" in table.stdout and "policy weighted_mean" in table.stdout
    answer = json.loads(_submit_cli(served, *base, "--json").stdout)
    with TaskClient(served.router) as client:
        direct = client.submit("regress/diabetes", {"x": x})
    np.testing.assert_allclose(answer["outputs"]["value"], direct.value, rtol=1e-5)


def test_chorus_submit_bad_input_is_one_line(served: Served, tmp_path: Path) -> None:
    missing = _submit_cli(served, "--capability", "regress/diabetes",
                          "--input", f"x={tmp_path / 'nope.npy'}")  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"chorus submit: --input x: no file at {tmp_path / 'nope.npy'}"
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 2), np.float32))  # the regressors take 10 features
    refused = _submit_cli(served, "--capability", "regress/diabetes", "--input", f"x={wrong}")
    assert refused.returncode == 1
    assert refused.stderr.startswith("chorus submit: INVALID_ARGUMENT:")
    assert "x" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1


async def test_async_client_gives_the_same_answer(served: Served) -> None:
    x = np.load(served.out / "diabetes_test_x.npy")[:ROWS]
    async with AsyncTaskClient(served.router) as client:
        calls = [client.submit("regress/diabetes", {"x": x}) for _ in range(4)]
        answers = await asyncio.gather(*calls)
        listed = await client.list_models("regress/diabetes")
    with TaskClient(served.router) as client:
        direct = client.submit("regress/diabetes", {"x": x})
    for answer in answers:
        np.testing.assert_allclose(answer.value, direct.value, rtol=1e-6)
    assert len(listed.models) == len(_kinds(served, "regress/diabetes"))


def test_the_examples_evaluation_scores_every_member_and_strategy(served: Served) -> None:
    done = _run([sys.executable, str(EXPORT.parent / "evaluate.py"), str(served.out),
                 "--router", served.router])  # fmt: skip
    cells = [line.split("|")[1:3] for line in done.stdout.splitlines() if line.startswith("| ")]
    scored = {name.strip(): float(v.strip(" *")) for name, v in cells if v.strip(" *")[0].isdigit()}
    for m in served.models:
        assert m["name"] in scored
        if m["output_kind"] != "regression":
            assert 0.85 <= scored[m["name"]] <= 1.0
    fused = {k: v for k, v in scored.items() if k.startswith("**fused")}
    assert len(fused) == 6
    assert all(40 < v < 80 for k, v in fused.items() if "mean" in k or "median" in k)


def test_chorus_models_calibrate_stores_a_temperature(served: Served, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(served.repo / "cancer_lgbm", repo / "cancer_lgbm")
    shutil.copytree(served.repo / "diabetes_ridge", repo / "diabetes_ridge")
    x, y = served.out / "cancer_test_x.npy", served.out / "cancer_test_y.npy"
    base = [*CHORUS, "models", "calibrate", "--repository", str(repo), "--input", f"x={x}",
            "--truth", str(y)]  # fmt: skip
    done = _run([*base, "--model", "cancer_lgbm"])
    temperature = repository.load(repo, "cancer_lgbm").manifest.temperature
    assert temperature != 1.0 and f"temperature {temperature:.4f}" in done.stdout
    ece = next(line.split() for line in done.stdout.splitlines() if line.startswith("ece"))
    assert float(ece[2]) < float(ece[1])  # after < before, on the rows it was fitted on
    refused = subprocess.run([*base, "--model", "diabetes_ridge"], capture_output=True, text=True)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "output_kind: a regression has no probabilities" in refused.stderr


def test_regression_feedback_moves_weights_by_each_members_error(served: Served) -> None:
    x = np.load(served.out / "diabetes_test_x.npy")[:ROWS]
    y = np.load(served.out / "diabetes_test_y.npy")[:ROWS]
    with TaskClient(served.router) as client:
        result = client.submit("regress/diabetes", {"x": x})
        weights = client.feedback(result.task_id, values=y).weights
    errors = {m: float(np.mean(np.abs(v["variable"].reshape(-1) - y)))
              for m, v in result.members.items()}  # fmt: skip
    assert sorted(weights) == sorted(errors)
    worst, best = max(errors, key=errors.__getitem__), min(errors, key=errors.__getitem__)
    assert weights[worst] == min(weights.values()) and weights[best] == max(weights.values())


@pytest.mark.parametrize("capability", ["classify/cancer", "regress/diabetes"])
def test_conformal_answers_after_chorus_fusion_calibrate(
    served: Served, capability: str, tmp_path: Path
) -> None:
    prefix = capability.split("/")[1]
    x = np.load(served.out / f"{prefix}_test_x.npy")
    y = np.load(served.out / f"{prefix}_test_y.npy")
    feeds = {"x": x}
    if prefix == "cancer":
        feeds["flags"] = np.load(served.out / "cancer_test_flags.npy")
    half = len(y) // 2
    args = []
    for name, array in feeds.items():
        np.save(tmp_path / f"{name}.npy", array[:half])
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    np.save(tmp_path / "truth.npy", y[:half])
    done = _run([*CHORUS, "fusion", "calibrate", "--capability", capability, *args,
                 "--truth", str(tmp_path / "truth.npy"), "--router", served.router,
                 "--nats-url", served.nats_url])  # fmt: skip
    assert f"{half} calibration rows stored" in done.stdout
    conflict = Conflict("conformal", coverage=0.9)
    rest = {k: v[half:] for k, v in feeds.items()}
    with TaskClient(served.router) as client:
        deadline = time.monotonic() + 10
        while True:  # the fuser's watch on the bucket may lag the write by a moment
            try:
                response = client.submit(capability, rest, conflict=conflict, timeout_s=10)
                break
            except FailedPrecondition:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    explanation, truth = response.explanation, y[half:]
    assert explanation.coverage == pytest.approx(0.9) and explanation.calibration_rows == half
    if prefix == "cancer":
        sets = [list(r.prediction_set) for r in explanation.rows]
        covered = np.mean([t in s for t, s in zip(truth, sets, strict=True)])
        flagged = [r.status == "conflicted" for r in explanation.rows]
        assert flagged == [len(s) != 1 for s in sets]
    else:
        lower = np.array([r.lower[0] for r in explanation.rows])
        upper = np.array([r.upper[0] for r in explanation.rows])
        covered = np.mean((lower <= truth) & (truth <= upper))
    assert covered >= 0.8  # one split of under 90 rows: the promise, give or take its noise


def test_feedback_refines_temperatures_and_extends_the_conformal_calibration(
    served: Served,
) -> None:
    feeds = {"x": np.load(served.out / "cancer_test_x.npy")[:ROWS],
             "flags": np.load(served.out / "cancer_test_flags.npy")[:ROWS]}  # fmt: skip
    y = np.load(served.out / "cancer_test_y.npy")[:ROWS]

    def calibration_rows(client: TaskClient) -> int:
        try:
            answer = client.submit("classify/cancer", feeds, conflict="conformal", timeout_s=10)
        except FailedPrecondition:
            return 0
        return int(answer.explanation.calibration_rows)

    with TaskClient(served.router) as client:
        before = calibration_rows(client)
        result = client.submit("classify/cancer", feeds)
        assert dict(result.response.explanation.temperatures) == {}
        client.feedback(result.task_id, labels=y)
        deadline = time.monotonic() + 10
        while calibration_rows(client) != before + ROWS and time.monotonic() < deadline:
            time.sleep(0.2)
        assert calibration_rows(client) == before + ROWS
        learned = dict(client.submit("classify/cancer", feeds).response.explanation.temperatures)
    assert sorted(learned) == sorted(_kinds(served, "classify/cancer"))
    assert all(t != 1.0 for t in learned.values())
