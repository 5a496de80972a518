"""Every service exposes Prometheus metrics that move when the mesh works."""

from __future__ import annotations

import numpy as np

from chorus.client import TaskClient
from chorus.launch.mesh import Mesh
from tests.support import scrape, total


def test_metrics_move_with_traffic(mesh: Mesh, client: TaskClient) -> None:
    addresses = {c.name: str(c.ready["metrics"]) for c in mesh.children}
    before = {name: scrape(a) for name, a in addresses.items()}
    for _ in range(5):
        client.submit("classify/digits", {"input": np.zeros((2, 64), np.float32)})
    after = {name: scrape(a) for name, a in addresses.items()}

    def delta(service: str, name: str, **labels: str) -> float:
        return total(after[service], name, **labels) - total(before[service], name, **labels)

    assert delta("router", "chorus_router_tasks_total", outcome="ok") == 5
    assert delta("router", "chorus_router_task_seconds_count") == 5
    assert total(after["router"], "chorus_router_heartbeats_total") > 0
    for model in ("logreg", "forest", "mlp"):
        assert delta(model, "chorus_model_requests_total", transport="nats", outcome="ok") == 5
        assert delta(model, "chorus_model_batch_size_sum") == 10
        provider = [
            dict(lbls)["provider"] for (n, lbls) in after[model] if n == "chorus_model_info"
        ]
        assert provider in (["CPUExecutionProvider"], ["CUDAExecutionProvider"])
        assert delta("router", "chorus_router_member_seconds_count", model=model) == 5
    assert delta("fuser", "chorus_fuser_requests_total", outcome="ok") == 5
    assert delta("fuser", "chorus_fuser_agreement_ratio_count") == 10
