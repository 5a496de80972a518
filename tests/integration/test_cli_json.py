"""Every command that prints, with `-o json` (or `--json`), prints one JSON document that
parses, against the session's live mesh; and CHORUS_ROUTER / CHORUS_NATS_URL decide where
each command connects when no flag does (pointed at a port where nothing listens, the
command fails naming it; pointed at the mesh, it answers; a flag beats them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chorus.cli.main import main
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import free_port
from tests.support import REPO
from tests.support.onnx_graphs import linear

PLAN_EXAMPLE = REPO / "chorus" / "deploy" / "k8s" / "plan-example.yaml"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, mesh: Mesh, nats_url: str) -> dict[str, str]:
    """CHORUS_ROUTER and CHORUS_NATS_URL naming the session's mesh; no command gets a flag."""
    monkeypatch.setenv("CHORUS_ROUTER", mesh.router_target)
    monkeypatch.setenv("CHORUS_NATS_URL", nats_url)
    return {"CHORUS_ROUTER": mesh.router_target, "CHORUS_NATS_URL": nats_url}


def run_json(capsys: pytest.CaptureFixture[str], *line: str) -> Any:
    code = main([*line, "-o", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("digits")
    split = digits_split()
    np.save(folder / "x.npy", split.x_test[:6])
    np.save(folder / "y.npy", split.y_test[:6])
    return folder / "x.npy", folder / "y.npy"


def test_status_and_models_ls(env: dict[str, str], capsys: pytest.CaptureFixture[str],
                              mesh: Mesh) -> None:  # fmt: skip
    status = run_json(capsys, "status")
    assert status["jetstream_replicas"] == 1
    forest = [r for r in status["replicas"] if r["model"] == "forest"]
    assert forest and forest[0]["replica"] == mesh.child("forest").ready["replica"]
    live = run_json(capsys, "models", "ls", "--live")
    assert {"logreg", "forest", "mlp"} <= {m["model"] for m in live}
    assert next(m for m in live if m["model"] == "mlp")["inputs"][0]["name"] == "input"


def test_submit_sync_and_async_then_result_and_feedback(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], digits: tuple[Path, Path]
) -> None:
    x, y = digits
    truth = np.load(y).tolist()
    sync = run_json(capsys, "submit", "--input", f"input={x}", "--conflict", "quorum")
    assert sync["outputs"]["label"] == truth
    assert sync["explanation"]["conflict_policy"] == "quorum"
    accepted = run_json(capsys, "submit", "--async", "--input", f"input={x}",
                        "--idempotency-key", f"cli-{time.time_ns()}")  # fmt: skip
    assert accepted["duplicate"] is False
    task_id = accepted["task_id"]
    assert main(["result", task_id, "--watch", "--timeout", "20", "-o", "json"]) == 0
    watched = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert watched[-1]["state"] == "done"
    assert watched[-1]["result"]["outputs"]["label"] == truth
    now = run_json(capsys, "result", task_id)
    assert now["state"] == "done" and now["attempts"] == 1
    # Rows every member gets right: the shared mesh's weights learn nothing from this truth.
    assert all(outs["label"] == truth for outs in sync["members"].values())
    learned = run_json(capsys, "feedback", sync["task_id"], "--labels", ",".join(map(str, truth)))
    assert learned["capability"] == "classify/digits"
    assert {"logreg", "forest", "mlp"} <= set(learned["weights"])
    assert main(["result", "no-such-task"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_submit_of_the_demo_digits(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    summary = run_json(capsys, "submit", "--limit", "20", "--batch", "10")
    assert summary["rows"] == 20 and summary["accuracy"]["fused"] >= 0.8


def test_review_list_and_fusion_calibrate(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], digits: tuple[Path, Path]
) -> None:
    listed = run_json(capsys, "review", "--list", "--wait", "0.5")
    assert listed["answered"] == 0 and isinstance(listed["cases"], list)
    x, y = digits
    stored = run_json(capsys, "fusion", "calibrate", "--capability", "classify/digits",
                      "--input", f"input={x}", "--truth", str(y),
                      "--policy", "soft_vote")  # fmt: skip
    assert stored["new_rows"] == 6 and stored["policy"] == "soft_vote"


def test_models_check_add_push_ls_rm(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], model_repo: Path, tmp_path: Path
) -> None:
    checked = run_json(capsys, "models", "check", "--repository", str(model_repo))
    assert {"logreg", "forest", "mlp"} <= {m["model"] for m in checked}
    onnx = linear(tmp_path / "m.onnx")
    repo = tmp_path / "repo"
    added = run_json(capsys, "models", "add", str(onnx), "--name", "clijson",
                     "--capability", "classify/cli-json", "--labels", "a,b,c",
                     "--repository", str(repo))  # fmt: skip
    assert added["model"] == "clijson" and added["labels"] == ["a", "b", "c"]
    folder = run_json(capsys, "models", "ls", "--repository", str(repo))
    assert [r["model"] for r in folder] == ["clijson"]
    bucket = f"nats:cli-json-{os.getpid()}"
    pushed = run_json(capsys, "models", "push", str(repo), "--store", bucket, "--quiet")
    assert [(r["model"], r["version"]) for r in pushed] == [("clijson", "1")]
    stored = run_json(capsys, "models", "ls", "--repository", bucket)
    assert stored[0]["model"] == "clijson" and stored[0]["pushed_at"]
    checked = run_json(capsys, "models", "check", "--repository", bucket)
    assert checked[0]["model"] == "clijson"
    removed = run_json(capsys, "models", "rm", "clijson", "--repository", bucket)
    assert removed[0]["version"] == "1"


def test_plan_and_k8s_render(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plan = run_json(capsys, "plan", "--inputs", str(PLAN_EXAMPLE))
    assert plan["rows"]
    rendered = run_json(capsys, "k8s", "render", "--out", str(tmp_path / "k8s"),
                        "--models", "logreg,forest")  # fmt: skip
    assert rendered["models"] == ["logreg", "forest"]
    assert Path(rendered["kustomization"]).is_file()


def test_models_index_in_its_own_process(mesh: Mesh) -> None:
    # model_control loads the KServe proto, which tritonclient's copy must not meet here.
    service = str(mesh.child("logreg").ready["grpc"])
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "models", "index", "--service", service, "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert {"model": "logreg", "version": "1", "state": "READY", "reason": ""} in json.loads(
        run.stdout
    )
    # Reloading the version it serves: hot, without dropping a request.
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "models", "load", "--service", service,
         "--model", "logreg", "--version", "1", "-o", "json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"action": "load", "model": "logreg", "version": "1"}


def test_models_calibrate_dry_run(
    capsys: pytest.CaptureFixture[str], model_repo: Path, digits: tuple[Path, Path]
) -> None:
    x, y = digits
    fitted = run_json(capsys, "models", "calibrate", "--model", "mlp", "--input", f"input={x}",
                      "--truth", str(y), "--repository", str(model_repo), "--dry-run")  # fmt: skip
    assert fitted["model"] == "mlp" and fitted["rows"] == 6 and fitted["written"] is None
    assert fitted["temperature"] > 0 and set(fitted["before"]) == set(fitted["after"])


def test_status_watch_streams_one_json_line_a_refresh(env: dict[str, str]) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "chorus.cli", "status", "--watch", "0.2", "-o", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **env},
    ) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert all(any(r["model"] == "logreg" for r in doc["replicas"]) for doc in lines)


# --- where each command connects --------------------------------------------------------------

ROUTER_COMMANDS = [
    ["status"],
    ["models", "ls", "--live"],
    ["submit", "--limit", "1"],
    ["result", "t"],
    ["feedback", "t", "--labels", "1"],
]


@pytest.mark.parametrize("line", ROUTER_COMMANDS, ids=lambda line: " ".join(line[:2]))
def test_chorus_router_decides_where_router_commands_go(
    line: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str], mesh: Mesh,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("CHORUS_ROUTER", dead)
    assert main(line) == 1
    err = capsys.readouterr().err
    assert "UNAVAILABLE" in err and dead.rsplit(":", 1)[1] in err, err
    code = main([*line, "--router", mesh.router_target])  # the flag wins
    capsys.readouterr()
    assert code == (1 if line[0] in ("result", "feedback") else 0)  # no task "t": NOT_FOUND


NATS_COMMANDS = [
    ["review", "--list", "--wait", "0.2"],
    ["models", "ls"],
    ["models", "check", "--repository", "nats:"],
]


@pytest.mark.parametrize("line", NATS_COMMANDS, ids=lambda line: " ".join(line[:2]))
def test_chorus_nats_url_decides_where_nats_commands_go(
    line: list[str], env: dict[str, str], capsys: pytest.CaptureFixture[str], nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    port = free_port()
    monkeypatch.setenv("CHORUS_NATS_URL", f"nats://127.0.0.1:{port}")
    assert main(line) == 1
    err = capsys.readouterr().err
    assert str(port) in err or "NATS" in err, err
    monkeypatch.setenv("CHORUS_NATS_URL", nats_url)
    code = main(line)
    capsys.readouterr()
    assert code in (0, 2)  # 2: `models check` of a store with no models
    monkeypatch.setenv("CHORUS_NATS_URL", f"nats://127.0.0.1:{port}")
    assert main([*line, "--nats-url", nats_url]) == code  # the flag wins


def test_plan_live_and_fusion_calibrate_connect_where_the_environment_says(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], digits: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    x, y = digits
    dead = free_port()
    monkeypatch.setenv("CHORUS_NATS_URL", f"nats://127.0.0.1:{dead}")
    line = ["fusion", "calibrate", "--capability", "classify/digits", "--input", f"input={x}",
            "--truth", str(y)]  # fmt: skip
    assert main(line) == 1  # the rows went through the router; storing them found no NATS
    assert str(dead) in capsys.readouterr().err
    assert main(["plan", "--live", "--inputs", str(PLAN_EXAMPLE)]) == 1
    assert str(dead) in capsys.readouterr().err


def test_fusion_report(capsys: pytest.CaptureFixture[str], model_repo: Path) -> None:
    report = run_json(capsys, "fusion", "report", "--repository", str(model_repo))
    assert {r["name"] for r in report["strategies"]} >= {"soft_vote", "majority_vote"}
    assert report["policies"][0]["name"] == "none"
    assert all(0.8 < r["accuracy"] <= 1 for r in report["members"])
    assert "| " in report["trust_markdown"]
