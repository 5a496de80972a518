"""People in the mesh: an escalated task waits durably for a reviewer, survives a reviewer
that dies holding it, and is completed by an answer given through `chorus review`; the answer
shows in GetResult and moves the members' weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chorus.client import State, TaskClient
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from tests.support import DEMO


def review_cli(
    mesh: Mesh, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chorus.cli", "review", "--nats-url", mesh.nats_url,
         "--router", mesh.router_target, "--reviewer", "ada", "--ack-wait", "2", *args],
        capture_output=True, text=True, timeout=60, input=stdin,
    )  # fmt: skip


def test_review_loop(model_repo: Path, tmp_path: Path) -> None:
    split = digits_split()
    x, y = split.x_test[:150], split.y_test[:150]
    with (
        NatsServer(tmp_path / "js") as server,
        Mesh(model_repo, tmp_path / "mesh", models=DEMO, nats_url=server.url) as mesh,
        TaskClient(mesh.router_target) as client,
    ):
        first = client.submit("classify/digits", {"input": x}, task_id="rev-1",
                              conflict="escalate")  # fmt: skip
        flagged = [i for i, r in enumerate(first.response.explanation.rows)
                   if r.status == "needs_review"]  # fmt: skip
        assert flagged
        assert set(first.response.explanation.weights.values()) == {1.0}

        # No reviewer was running; the case waited. A reviewer looks without answering...
        listed = review_cli(mesh, "--list", "--wait", "3")
        assert listed.returncode == 0, listed.stderr
        assert "task rev-1" in listed.stdout and "0 case(s) answered" in listed.stdout
        # ...another takes it and dies before answering (its terminal closes).
        died = review_cli(mesh, "--wait", "3", stdin="")
        assert died.returncode != 0 and "EOFError" in died.stderr

        answers = [f"{r}={y[r]}" for r in flagged]
        done = review_cli(mesh, "--wait", "10", *(a for ans in answers for a in ("--answer", ans)))
        assert done.returncode == 0, done.stderr
        assert "1 case(s) answered" in done.stdout

        result = client.result("rev-1", timeout_s=5)
        assert result.state is State.DONE
        rows = result.unwrap().explanation.rows
        for r in flagged:
            assert rows[r].status == "reviewed" and rows[r].label == y[r]
            assert rows[r].rule.startswith("decided by a person (ada)")

        weights = client.submit("classify/digits", {"input": x[:1]}, timeout_s=10).weights
        print(f"\n{len(flagged)} rows reviewed; weights now {weights}")
        assert set(weights.values()) != {1.0}

        empty = review_cli(mesh, "--list", "--wait", "1")
        assert "task rev-1" not in empty.stdout
