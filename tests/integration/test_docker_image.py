"""The Dockerfile's role images build (scripts/build-images.sh, tagged with the package
version) and do their jobs: the control image has the CLI and no ONNX Runtime, the model-cpu
image ONNX Runtime's CPU build, the model-gpu image the CUDA build with the libraries its
CUDA provider loads; a router and a fuser from the control image and a member from model-cpu
answer a task on the host network, NATS from the wheel on loopback. Skipped where no Docker
engine runs, or where the engine cannot get the base image.

CHORUS_TEST_BASE_IMAGE picks the base (the Dockerfile's BASE_IMAGE build argument), for a
machine that reaches only a mirror or builds its base with debootstrap (bench/results/
images-2026-12-07/README.txt says how)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.launch.natsserver import NatsServer, free_port
from tests.support import REPO, docker_engine

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(not docker_engine(), reason="no Docker engine on this machine"),
    pytest.mark.timeout(2400),
]
BASE = os.environ.get("CHORUS_TEST_BASE_IMAGE", "python:3.11-slim")
TARGETS = ("control", "model-cpu", "model-gpu", "demo")
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
UID = "10001:10001"


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    run = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and run.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed:\n{run.stderr[-3000:]}")
    return run.stdout


def _python(image: str, code: str) -> subprocess.CompletedProcess[str]:
    """`code` run by the image's python as the image's user, on a read-only root."""
    return subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network", "none",
         "--entrypoint", "python3", image, "-c", code],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def images() -> Iterator[dict[str, str]]:
    have = subprocess.run(["docker", "image", "inspect", BASE], capture_output=True, check=False)
    if have.returncode != 0:
        pull = subprocess.run(
            ["docker", "pull", BASE], capture_output=True, text=True, timeout=600, check=False
        )
        if pull.returncode != 0:
            reason = (pull.stderr.strip().splitlines() or ["no reason given"])[-1][:200]
            pytest.skip(f"the Docker engine cannot get the base image {BASE}: {reason}")
    registry = f"chorus-test-{uuid.uuid4().hex[:8]}"
    built = subprocess.run(
        [str(REPO / "scripts" / "build-images.sh"), "--network", "host",
         "--build-arg", f"BASE_IMAGE={BASE}"],
        capture_output=True, text=True, timeout=2100, check=False,
        env={**os.environ, "CHORUS_IMAGE_REGISTRY": registry},
    )  # fmt: skip
    tags = built.stdout.split()
    try:
        assert built.returncode == 0, built.stderr[-3000:]
        assert tags == [f"{registry}/chorus-{t}:{VERSION}" for t in TARGETS]
        yield dict(zip(TARGETS, tags, strict=True))
    finally:
        for tag in tags:
            _docker("rmi", "-f", tag, check=False)


def _config(image: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(_docker("image", "inspect", image))[0]["Config"]
    return config


def test_control_image_has_the_cli_and_no_onnx_runtime(images: dict[str, str]) -> None:
    image = images["control"]
    helped = subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp", image, "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout
    ort = _python(image, "import onnxruntime")
    assert ort.returncode != 0
    assert "No module named 'onnxruntime'" in ort.stderr
    assert _python(image, "import scipy, yaml, prometheus_client, grpc_health").returncode == 0
    assert _config(image)["User"] == UID


def test_demo_image_carries_the_training_model_pods_do_not(images: dict[str, str]) -> None:
    assert _python(images["demo"], "import sklearn, skl2onnx, onnxruntime").returncode == 0
    assert _python(images["model-cpu"], "import sklearn").returncode != 0


def test_model_cpu_image_runs_onnx_runtime_on_cpu(images: dict[str, str]) -> None:
    image = images["model-cpu"]
    ran = _python(
        image,
        "import json, importlib.metadata as m, onnxruntime as ort; print(json.dumps("
        "[sorted(d.metadata['Name'] for d in m.distributions()), ort.get_available_providers()]))",
    )
    assert ran.returncode == 0, ran.stderr
    dists, providers = json.loads(ran.stdout)
    assert "onnxruntime" in dists
    assert "onnxruntime-gpu" not in dists
    assert "CPUExecutionProvider" in providers
    assert "CUDAExecutionProvider" not in providers
    config = _config(image)
    assert config["User"] == UID
    assert "CHORUS_MODEL_CACHE_DIR=/tmp/chorus-models" in config["Env"]


# The CUDA provider's libraries from the NVIDIA wheels the image carries: loaded in process
# (cuDNN is opened at run time, not linked), and every library the provider links resolved
# but the driver's libcuda.so.1, which the node's NVIDIA runtime mounts. No GPU needed.
CUDA_PROVIDER = """
import glob, json, os, subprocess, onnxruntime as ort
assert "CUDAExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
ort.preload_dlls(cuda=True, cudnn=True)
maps = open("/proc/self/maps").read()
site = os.path.dirname(os.path.dirname(ort.__file__))
provider = os.path.join(site, "onnxruntime", "capi", "libonnxruntime_providers_cuda.so")
libs = ":".join(glob.glob(os.path.join(site, "nvidia", "*", "lib")))
ldd = subprocess.run(["ldd", provider], env={"LD_LIBRARY_PATH": libs},
                     capture_output=True, text=True, check=True)
print(json.dumps({
    "loaded": sorted(n for n in ("libcudart", "libcublas", "libcudnn", "libcufft", "libcurand")
                     if n + ".so" in maps),
    "unresolved": sorted(x.split()[0] for x in ldd.stdout.splitlines() if "not found" in x),
}))
"""


def test_model_gpu_image_carries_the_cuda_provider_libraries(images: dict[str, str]) -> None:
    image = images["model-gpu"]
    ran = _python(image, CUDA_PROVIDER)
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = json.loads(ran.stdout.splitlines()[-1])
    assert seen["loaded"] == ["libcublas", "libcudart", "libcudnn", "libcufft", "libcurand"]
    assert seen["unresolved"] == ["libcuda.so.1"]
    config = _config(image)
    assert config["User"] == UID
    assert "CHORUS_MODEL_CACHE_DIR=/tmp/chorus-models" in config["Env"]


def test_the_images_serve_a_mesh(images: dict[str, str], model_repo: Path, tmp_path: Path) -> None:
    # The images run as uid 10001: they get a world-readable copy of one member.
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
            for image, service in (
                (images["control"], ["router"]),
                (images["control"], ["fuser"]),
                (images["model-cpu"], ["model", "--model", "logreg"]),
            ):
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
    assert result.labels.shape == (1,)
    assert result.probabilities.shape == (1, 10)


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
