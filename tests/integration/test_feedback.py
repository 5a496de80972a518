"""Adaptive weights: a member degraded on purpose loses weight through feedback, the fused
accuracy recovers, and what was learned survives a fuser restart (JetStream key-value)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chorus.client import TaskClient
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from tests.support import DEMO

NOISY = "forest"


def _fused_accuracy(client: TaskClient, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:  # type: ignore[type-arg]
    result = client.submit("classify/digits", {"input": x})
    return float(np.mean(result.labels == y)), dict(result.response.explanation.weights)


def test_feedback_demotes_a_noisy_member_and_survives_restart(
    model_repo: Path, tmp_path: Path
) -> None:
    split = digits_split()
    x_fb, y_fb = split.x_test[:300], split.y_test[:300]
    x_ev, y_ev = split.x_test[300:], split.y_test[300:]
    with (
        NatsServer(tmp_path / "js") as server,
        Mesh(
            model_repo, tmp_path / "mesh", models=DEMO, nats_url=server.url,
            model_args={NOISY: ["--noise", "6"]},
        ) as mesh,
        TaskClient(mesh.router_target) as client,
    ):  # fmt: skip
        before, weights0 = _fused_accuracy(client, x_ev, y_ev)
        assert weights0 == {m: 1.0 for m in DEMO}
        member_hits = {m: 0 for m in DEMO}
        for i in range(len(x_fb)):
            result = client.submit("classify/digits", {"input": x_fb[i : i + 1]})
            for m in DEMO:
                member_hits[m] += int(result.members[m]["label"][0] == y_fb[i])
            learned = client.feedback(result.task_id, labels=[int(y_fb[i])])
        assert learned.capability == "classify/digits"
        weights = learned.weights
        after, used = _fused_accuracy(client, x_ev, y_ev)
        clean_best = max(member_hits[m] for m in DEMO if m != NOISY) / len(x_fb)
        print(
            f"\nmember accuracy on feedback tasks: "
            f"{ {m: round(h / len(x_fb), 3) for m, h in member_hits.items()} }"
            f"\nweights {weights}\nfused before {before:.4f}, after {after:.4f}"
        )
        assert member_hits[NOISY] < min(member_hits[m] for m in DEMO if m != NOISY)
        assert weights[NOISY] < 0.5 * min(weights[m] for m in DEMO if m != NOISY)
        assert used == weights
        assert after > before
        assert after >= clean_best - 0.02

        mesh.restart("fuser")
        again, used_after_restart = _fused_accuracy(client, x_ev, y_ev)
        assert used_after_restart == weights
        assert again == after
