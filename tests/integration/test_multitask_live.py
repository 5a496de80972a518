"""A multi-task model serves a three-stage pipeline with one call, and answers exactly as
three separate tasks would."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chorus.client import TaskClient
from chorus.core.codec import from_tensor, to_tensor
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer
from chorus.pb import task_pb2
from tests.support import scrape, total


def test_pipeline_on_one_multitask_model_makes_one_call(model_repo: Path, tmp_path: Path) -> None:
    split = digits_split()
    x, y = split.x_test[:60], split.y_test[:60]
    with (
        NatsServer(tmp_path / "js") as server,
        Mesh(model_repo, tmp_path / "mesh", models=["multitask"], nats_url=server.url) as mesh,
        TaskClient(mesh.router_target) as client,
    ):
        metrics = str(mesh.child("multitask").ready["metrics"])

        def calls() -> float:
            return total(scrape(metrics), "chorus_model_requests_total", outcome="ok")

        before = calls()
        req = task_pb2.SubmitRequest(pipeline="digits-attributes", inputs=[to_tensor("image", x)])
        response = client.stub.Submit(req, timeout=30)
        assert calls() - before == 1, "three stages, one model call"
        piped = {t.name: from_tensor(t) for t in response.outputs}

        separate = {}
        for name, capability in (("digit", "classify/digits"), ("parity", "classify/parity"),
                                 ("big", "classify/greater-than-four")):  # fmt: skip
            result = client.submit(capability, {"input": x})
            separate[name] = result.labels
            want = {"parity": ["even", "odd"], "big": ["<=4", ">4"]}
            assert list(result.response.labels) == want.get(name, [str(d) for d in range(10)])
        assert calls() - before == 4
    for name in ("digit", "parity", "big"):
        np.testing.assert_array_equal(piped[name], separate[name])
    assert np.mean(piped["digit"] == y) > 0.9
    assert np.mean(piped["parity"] == y % 2) > 0.9
    assert np.mean(piped["big"] == (y > 4)) > 0.9
