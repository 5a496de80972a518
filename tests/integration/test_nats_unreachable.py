"""A service that cannot reach NATS keeps retrying (NATS may come up later), but SIGTERM or
SIGINT stops it within a second and it says on stderr what it was waiting for."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chorus.launch.natsserver import free_port

STOP_BUDGET_S = 1.0
"""The issue's bound; the process's own start-up (imports, model load) is not counted."""


def _service_args(service: str, model_repo: Path) -> list[str]:
    if service == "model":
        return ["model", "--model", "logreg", "--repository", str(model_repo),
                "--grpc-port", str(free_port())]  # fmt: skip
    if service == "router":
        return ["router", "--grpc-port", str(free_port())]
    return ["fuser"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("service", ["model", "router", "fuser"])
def test_stops_within_a_second_and_says_why(
    service: str, sig: signal.Signals, model_repo: Path, tmp_path: Path
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    log, out_log = tmp_path / "stderr.log", tmp_path / "stdout.log"
    with log.open("wb") as err, out_log.open("wb") as out:
        command = [sys.executable, "-m", "chorus.cli", "serve", *_service_args(service, model_repo),
                   "--nats-url", dead, "--metrics-port", "0"]  # fmt: skip
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        try:
            _wait_for(log, "retrying", timeout_s=60)
            sent = time.monotonic()
            proc.send_signal(sig)
            rc = proc.wait(timeout=10)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr = log.read_text()
    assert took < STOP_BUDGET_S, f"took {took:.2f}s to stop\n{stderr}"
    assert rc == 1
    assert out_log.read_text() == ""  # never said it was ready
    assert f"stopped before serving: could not reach NATS at {dead}" in stderr
    assert "Traceback" not in stderr
    assert stderr.count("retrying") == 1  # one line, not one per attempt


def _wait_for(log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in log.read_text():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{text!r} never appeared on stderr:\n{log.read_text()}")
