"""gRPC health tells the truth about NATS: NOT_SERVING while it is gone, SERVING once back,
on a router, a model service and a co-hosted group's port; GET /readyz on the metrics port
says the same (503, then 200)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _status(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        return int(
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        )


def _readyz(metrics: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{metrics}/readyz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return int(refused.code)


def _wait_for(target: str, status: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while _status(target) != status:
        assert time.monotonic() < deadline, f"{target} never reported {status}"
        time.sleep(0.1)


def test_health_follows_the_nats_connection(model_repo: Path, tmp_path: Path) -> None:
    nats = NatsServer(tmp_path / "js", log=tmp_path / "nats.log").start()
    try:
        with Mesh(
            model_repo,
            tmp_path / "mesh",
            models=["logreg", "mlp", "forest"],
            groups={"pair": ["mlp", "forest"]},
            nats_url=nats.url,
        ) as mesh:
            targets = [
                mesh.router_target,
                str(mesh.child("logreg").ready["grpc"]),
                str(mesh.child("group-pair").ready["grpc"]),
            ]
            for t in targets:
                assert _status(t) == SERVING
            assert _readyz(mesh.child("logreg").ready["metrics"]) == 200
            nats.stop()
            for t in targets:
                _wait_for(t, NOT_SERVING)
            assert _readyz(mesh.child("logreg").ready["metrics"]) == 503
            nats.start()
            for t in targets:
                _wait_for(t, SERVING)
            mesh.wait_for_models(3)
    finally:
        nats.stop()
