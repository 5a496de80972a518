"""`chorus up` and `chorus submit` as a person runs them, in real processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import free_port
from tests.support.onnx_graphs import linear


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _router_port(mesh_up: str) -> int:
    """The port in `chorus up`'s "mesh up; try: chorus submit --router HOST:PORT" line."""
    return int(mesh_up.split("--router ")[1].split()[0].rsplit(":", 1)[1])


def test_up_prints_endpoints_serves_and_stops_on_ctrl_c(model_repo: Path, tmp_path: Path) -> None:
    nats_port = free_port()
    cmd = [sys.executable, "-m", "chorus.cli", "up", "--repository", str(model_repo),
           "--data-dir", str(tmp_path / "up"), "--router-port", "0",
           "--nats-port", str(nats_port)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"chorus up ended early: {lines}"
            lines.append(line.rstrip())
            if line.startswith("mesh up"):
                break
        out = "\n".join(lines)
        router_port = _router_port(lines[-1])
        assert f"nats://127.0.0.1:{nats_port}" in out
        assert f"router    gRPC 127.0.0.1:{router_port}" in out
        for name in ("logreg", "forest", "mlp"):
            assert any(ln.startswith(name) and "ExecutionProvider" in ln for ln in lines), out
        assert "fuser" in out and "/metrics" in out

        submit = subprocess.run(
            [sys.executable, "-m", "chorus.cli", "submit", "--router", f"127.0.0.1:{router_port}",
             "--limit", "30", "--show", "3"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert submit.returncode == 0, submit.stdout + submit.stderr
        assert "30 digits" in submit.stdout
        fused = [ln for ln in submit.stdout.splitlines() if ln.startswith("fused ")]
        assert fused and float(fused[0].split()[1]) >= 0.9

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "stopping the mesh" in rest
    assert not _port_open(router_port)
    assert not _port_open(nats_port)


def test_up_on_a_held_router_port_says_so_and_stops_everything(
    model_repo: Path, tmp_path: Path
) -> None:
    nats_port = free_port()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        router_port = held.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "chorus.cli", "up", "--repository", str(model_repo),
             "--data-dir", str(tmp_path / "up"), "--router-port", str(router_port),
             "--nats-port", str(nats_port)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("chorus up: router exited with status 1 before it was ready")
    assert f"could not bind gRPC on 127.0.0.1:{router_port}" in done.stderr
    assert not _port_open(nats_port)  # what had started is stopped again


def test_models_build_writes_manifests_without_download(model_repo: Path, tmp_path: Path) -> None:
    # The session's build of the slower models is reused: build makes only what is missing.
    for done in ("knn", "stack", "caption", "multitask", "gate"):
        shutil.copytree(model_repo / done, tmp_path / done)
    # Any attempt to reach the network would go to a dead proxy and fail.
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9"}
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "models", "build", "--repository", str(tmp_path),
         "-o", "json"], capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    built = {m["model"]: m for m in json.loads(run.stdout)}
    assert set(built) == {"logreg", "forest", "mlp"}  # what was there is left alone
    assert built["mlp"]["metrics"]["holdout_accuracy"] > 0.9
    assert "chorus models build: training mlp" in run.stderr  # progress, on stderr
    for name in ("logreg", "forest", "mlp"):
        manifest = json.loads((tmp_path / name / "1" / "manifest.json").read_text())
        assert manifest["capabilities"] == ["classify/digits", "classify/digits+caption"]
        assert manifest["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
        assert [o["name"] for o in manifest["outputs"]] == ["label", "probabilities"]
        assert manifest["labels"] == [str(d) for d in range(10)]
        assert manifest["metrics"]["holdout_accuracy"] > 0.9
        assert (tmp_path / name / "1" / "model.onnx").stat().st_size > 0


def test_models_ls_lists_live_models(mesh: Mesh) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "models", "ls", "--router", mesh.router_target],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    names = sorted(ln.split()[0] for ln in run.stdout.splitlines())
    assert names == ["caption", "forest", "gate", "knn", "logreg", "mlp", "stack"]


def test_status_shows_every_replica_with_its_load(mesh: Mesh) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "status", "--router", mesh.router_target],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    jetstream, *lines = run.stdout.splitlines()
    assert jetstream == "JetStream: 1 replica(s) of every stream and bucket"  # one server
    assert lines[0].split()[:3] == ["model", "replica", "device"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert {"logreg", "forest", "mlp"} <= set(rows)
    assert rows["forest"][1] == mesh.child("forest").ready["replica"]


def test_models_add_command_line(tmp_path: Path) -> None:
    path = linear(tmp_path / "m.onnx")
    run = [sys.executable, "-m", "chorus.cli", "models", "add", str(path), "--name", "m",
           "--capability", "classify/x", "--repository", str(tmp_path / "repo")]  # fmt: skip
    bad = subprocess.run([*run, "--labels", "a,b"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--labels: 2 given for the 3 columns of 'scores'" in bad.stderr
    ok = subprocess.run([*run, "--labels", "a,b,c"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    check = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "models", "check", "--repository",
         str(tmp_path / "repo")], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0 and "ok  m v1  classify/x  probabilities" in check.stdout
