"""The project's Dockerfile builds, and a small mesh runs from the image: router, fuser and
one member in containers on the host network, NATS from the wheel on loopback. Skipped
where no Docker engine runs, or where the engine cannot get the base image.

CHORUS_TEST_BASE_IMAGE picks the base (the Dockerfile's BASE_IMAGE build argument), for a
machine that reaches only a mirror."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.launch.natsserver import NatsServer, free_port
from tests.support import REPO, docker_engine

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_engine(), reason="no Docker engine on this machine"),
    pytest.mark.timeout(1200),
]
BASE = os.environ.get("CHORUS_TEST_BASE_IMAGE", "python:3.11-slim")


def _docker(*args: str, timeout: float = 60, check: bool = True) -> str:
    run = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and run.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed:\n{run.stderr[-3000:]}")
    return run.stdout


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    have = subprocess.run(["docker", "image", "inspect", BASE], capture_output=True, check=False)
    if have.returncode != 0:
        pull = subprocess.run(
            ["docker", "pull", BASE], capture_output=True, text=True, timeout=600, check=False
        )
        if pull.returncode != 0:
            reason = (pull.stderr.strip().splitlines() or ["no reason given"])[-1][:200]
            pytest.skip(f"the Docker engine cannot get the base image {BASE}: {reason}")
    tag = f"chorus-test:{uuid.uuid4().hex[:8]}"
    _docker("build", "--build-arg", f"BASE_IMAGE={BASE}", "-t", tag, str(REPO), timeout=1200)
    try:
        yield tag
    finally:
        _docker("rmi", "-f", tag, check=False)


def test_the_image_serves_a_mesh(image: str, model_repo: Path, tmp_path: Path) -> None:
    # The image runs as uid 10001: it gets a world-readable copy of one member.
    models = tmp_path / "models"
    shutil.copytree(model_repo / "logreg", models / "logreg")
    for path in [models, *models.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    router_port = free_port()
    names: list[str] = []
    with NatsServer(tmp_path / "js") as nats:
        env = {"CHORUS_NATS_URL": nats.url, "CHORUS_ROUTER_GRPC_PORT": str(router_port),
               "CHORUS_MODEL_GRPC_PORT": str(free_port())}  # fmt: skip
        flags = [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
        try:
            for service in (["router"], ["fuser"], ["model", "--model", "logreg"]):
                name = f"chorus-test-{service[0]}-{uuid.uuid4().hex[:6]}"
                _docker("run", "-d", "--name", name, "--network", "host", "--read-only",
                        "--tmpfs", "/tmp", "-v", f"{models}:/models:ro", *flags, image,
                        "serve", *service)  # fmt: skip
                names.append(name)
            result = _first_answer(f"127.0.0.1:{router_port}", names)
        finally:
            for name in names:
                _docker("rm", "-f", name, check=False)
    assert list(result.members) == ["logreg"]
    assert result.outputs[0].name == "label"


def _first_answer(target: str, containers: list[str]):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 90
    last = ""
    while time.monotonic() < deadline:
        try:
            with TaskClient(target) as client:
                return client.submit("classify/digits", {"input": np.zeros((1, 64), np.float32)})
        except grpc.RpcError as exc:
            last = f"{exc.code().name}: {exc.details()}"
            time.sleep(1)
    logs = "\n".join(
        f"--- {c}\n" + _docker("logs", "--tail", "30", c, check=False) for c in containers
    )
    raise AssertionError(f"the mesh in containers never answered ({last})\n{logs}")
