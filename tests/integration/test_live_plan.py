"""Live planning on a real NATS: a replica whose measured throughput halves leads to a new
plan with more replicas, published on chorus.plan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import nats

from chorus.core import subjects
from chorus.core.heartbeat import Heartbeat
from chorus.core.spec import TensorSpec
from chorus.launch.natsserver import NatsServer
from chorus.planner import Demand, ModelOption, PlanInputs
from chorus.planner.live import PLAN_SUBJECT, LivePlanner


def beat(ewma_ms: float) -> bytes:
    return Heartbeat(
        model="mlp", version="1", replica="mlp-a", capabilities=("classify/digits",),
        inputs=(TensorSpec("input", "FP32", (-1, 64)),), outputs=(), labels=(),
        scores_output="probabilities", device="cpu", capacity=1, ewma_ms=ewma_ms,
    ).to_json()  # fmt: skip


async def test_throughput_halving_replans_with_more_replicas(tmp_path: Path) -> None:
    inputs = PlanInputs(
        options=(ModelOption("mlp", "cpu", ("classify/digits",), 100.0, 10.0, 1.0, 50),),
        demands=(Demand("classify/digits", "normal", 400.0),),
    )
    with NatsServer(tmp_path / "js") as server:
        nc = await nats.connect(server.url)
        published: list[dict] = []  # type: ignore[type-arg]

        async def on_plan(msg):  # type: ignore[no-untyped-def]
            published.append(json.loads(msg.data))

        await nc.subscribe(PLAN_SUBJECT, cb=on_plan)
        planner = LivePlanner(nc, inputs, every_s=0.05)
        task = asyncio.create_task(planner.run())
        try:
            await asyncio.sleep(0.3)  # subscribed, and the configured plan is out
            await nc.publish(subjects.heartbeat("mlp"), beat(2.0))  # 500 rps per replica
            await asyncio.sleep(0.3)
            await nc.publish(subjects.heartbeat("mlp"), beat(4.0))  # halved: 250 rps
            await asyncio.sleep(0.3)
            await nc.publish(subjects.heartbeat("mlp"), beat(4.1))  # within 20%: no new plan
            await asyncio.sleep(0.3)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await nc.close()
    replicas = [p["rows"][0]["replicas"] for p in published]
    # 400 rps at 80% utilisation: 5 x 100 rps as configured, then 1 x 500 rps as measured,
    # then 2 x 250 rps once the measured throughput halves; the 2.5% drift after that is not
    # worth a new plan.
    assert replicas == [5, 1, 2], replicas


def test_router_routes_by_the_published_split(model_repo: Path, tmp_path: Path) -> None:
    import numpy as np

    from chorus.client import TaskClient
    from chorus.launch.mesh import Mesh
    from tests.support import DEMO

    plan = {
        "splits": [
            {
                "capability": "classify/digits",
                "priority": "normal",
                "rps": 10,
                "shares": [
                    {"model": "forest", "device": "cpu", "rps": 7, "share": 0.7},
                    {"model": "mlp", "device": "cpu", "rps": 3, "share": 0.3},
                ],
            }
        ]
    }
    with NatsServer(tmp_path / "js") as server, Mesh(
        model_repo, tmp_path / "mesh", models=DEMO, nats_url=server.url,
        extra_env={"CHORUS_ROUTER_PLAN_ROUTING": "1"},
    ) as mesh, TaskClient(mesh.router_target) as client:  # fmt: skip
        x = {"input": np.zeros((1, 64), np.float32)}
        before = client.submit("classify/digits", x)
        assert sorted(before.members) == sorted(DEMO)  # no plan yet: the whole ensemble

        async def publish() -> None:
            nc = await nats.connect(server.url)
            await nc.publish(subjects.PLAN, json.dumps(plan).encode())
            await nc.flush()
            await nc.close()

        asyncio.run(publish())
        # The plan reaches the router asynchronously: wait until it routes by it.
        waited = time.monotonic() + 5
        while len(client.submit("classify/digits", x).members) != 1:
            assert time.monotonic() < waited, "the router never took the published plan"
            time.sleep(0.02)
        counts: dict[str, int] = {}
        for _ in range(100):
            (model,) = client.submit("classify/digits", x).members
            counts[model] = counts.get(model, 0) + 1
        critical = client.submit("classify/digits", x, priority="critical")
    assert set(counts) == {"forest", "mlp"}
    assert 50 <= counts["forest"] <= 90
    assert sorted(critical.members) == sorted(DEMO)  # the plan split only normal traffic
