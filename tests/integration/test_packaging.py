"""The install by role: the base install is a client without ONNX Runtime that answers from a
running mesh, and the services extra resolves to an ONNX Runtime wheel on every platform it
names. Installs for real from the package registry; skips where the registry is unreachable."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from tests.support import REPO

pytestmark = pytest.mark.timeout(300)

BASE_LIMIT_MB = 150
CAPABILITY = "classify/digits"
ROWS = 60
# What a client may load beyond the standard library: the base install's distributions (and
# cython_runtime, which grpcio's Cython extension registers).
BASE_MODULES = {
    "grpc",
    # grpcio imports it whenever it is installed; the base has it for the client's health().
    "grpc_health",
    "google",
    "numpy",
    "nats",
    "typing_extensions",
    "cython_runtime",
    "chorus",
}

CLIENT = r"""
import importlib.util, json, sys
import numpy as np
import chorus
from chorus.client import TaskClient

router, rows, out = sys.argv[1:]
with TaskClient(router) as client:
    result = client.submit("classify/digits", {"input": np.load(rows)}, policy="soft_vote")
np.save(out, result.labels)
loaded = {m.split(".")[0] for m in sys.modules} - set(sys.stdlib_module_names)
print(json.dumps({
    "chorus": chorus.__file__,
    "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
    "loaded": sorted(m for m in loaded if not m.startswith("_")),
    "members": sorted(result.members),
}))
"""


def _env() -> dict[str, str]:
    """The environment of a child that must see only its own venv, not this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@functools.cache
def _registry_unreachable() -> str | None:
    """Why the package registry cannot be used here, or None when it answers."""
    probe = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "nats-py"],
        capture_output=True, text=True, timeout=120, env=_env(),
    )  # fmt: skip
    if probe.returncode != 0:
        return f"package registry unreachable: {(probe.stderr or probe.stdout).strip()[-300:]}"
    return None


def _source(dest: Path) -> Path:
    """What the Dockerfile copies: a pip build in the checkout itself would leave build/ and
    egg-info beside the work of whoever is editing it."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "chorus", dest / "chorus",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return dest


def _size_mb(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    reason = _registry_unreachable()
    if reason is not None:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("base-install")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(_source(root / "src"))],
        capture_output=True, text=True, timeout=240, env=_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    yield venv


def _site_packages(venv: Path) -> Path:
    (found,) = venv.glob("lib/python3*/site-packages")
    return found


def test_base_install_is_a_client_without_onnx_runtime(
    base_venv: Path, mesh: Mesh, tmp_path: Path
) -> None:
    site = _site_packages(base_venv)
    size = _size_mb(site)
    tools = sum(
        _size_mb(p) for p in site.glob("*") if p.name.split("-")[0] in ("pip", "setuptools")
    )
    print(f"\nbase install: site-packages {size:.1f} MB ({size - tools:.1f} MB without pip and "
          "setuptools)")  # fmt: skip
    assert size < BASE_LIMIT_MB
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert not installed & {"onnxruntime", "onnxruntime_gpu", "onnx", "scipy", "scikit_learn"}
    assert "chorus_mesh" in installed

    split = digits_split()
    rows, out = tmp_path / "rows.npy", tmp_path / "labels.npy"
    np.save(rows, split.x_test[:ROWS])
    ran = subprocess.run(
        [str(base_venv / "bin" / "python"), "-c", CLIENT, mesh.router_target, str(rows), str(out)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env(),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    seen = json.loads(ran.stdout.splitlines()[-1])
    assert Path(seen["chorus"]).is_relative_to(site)
    assert seen["onnxruntime"] is False
    assert set(seen["loaded"]) <= BASE_MODULES, seen["loaded"]
    assert len(seen["members"]) >= 3

    labels = np.load(out)
    with TaskClient(mesh.router_target) as here:
        want = here.submit(CAPABILITY, {"input": split.x_test[:ROWS]}, policy="soft_vote").labels
    np.testing.assert_array_equal(labels, want)
    assert float(np.mean(labels == split.y_test[:ROWS])) >= 0.9


def test_base_install_cli_names_the_extra_it_lacks(base_venv: Path, mesh: Mesh) -> None:
    chorus = str(base_venv / "bin" / "chorus")
    helped = subprocess.run([chorus, "--help"], capture_output=True, text=True, env=_env())
    assert helped.returncode == 0, helped.stderr
    assert "serve" in helped.stdout

    status = subprocess.run(
        [chorus, "status", "--router", mesh.router_target],
        capture_output=True, text=True, timeout=60, env=_env(),
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "JetStream" in status.stdout

    for argv, extra in (
        (["serve", "model", "--model", "logreg"], "services"),
        (["serve", "router"], "control"),
        (["demo"], "demo"),
    ):
        ran = subprocess.run([chorus, *argv], capture_output=True, text=True, env=_env())
        assert ran.returncode == 2, ran.stderr
        (line,) = ran.stderr.strip().splitlines()
        assert line.endswith(f"pip install 'chorus-mesh[{extra}]'"), line


def test_base_install_pushes_lists_and_removes_models_in_the_store(
    base_venv: Path, nats_url: str, model_repo: Path
) -> None:
    """The platform team's commands need no ONNX Runtime: the layout is checked, the files
    streamed, the graph checked where the model service loads it."""
    chorus = str(base_venv / "bin" / "chorus")
    store = ["--nats-url", nats_url]

    def run(*argv: str) -> str:
        ran = subprocess.run([chorus, *argv], capture_output=True, text=True, timeout=60,
                             env=_env())  # fmt: skip
        assert ran.returncode == 0, ran.stderr[-2000:]
        return ran.stdout

    pushed = run("models", "push", str(model_repo / "logreg"), "--store", "nats:base", *store)
    assert "pushed logreg v1 to nats:base" in pushed
    listed = json.loads(run("models", "ls", "--repository", "nats:base", "--json", *store))
    assert [(r["model"], r["version"]) for r in listed] == [("logreg", "1")]
    run("models", "rm", "logreg", "--repository", "nats:base", *store)
    assert json.loads(run("models", "ls", "--repository", "nats:base", "--json", *store)) == []


def _uv() -> str:
    try:
        from uv import find_uv_bin
    except ImportError:
        pytest.skip("uv is not installed (the test extra brings it)")
    return str(find_uv_bin())


CPU = ({"onnxruntime"}, {"onnxruntime-gpu"})
GPU = ({"onnxruntime-gpu"}, {"onnxruntime"})


@pytest.mark.parametrize(
    ("platform", "extra", "runtime"),
    [
        ("aarch64-apple-darwin", "services", CPU),
        ("aarch64-manylinux_2_28", "services", CPU),
        ("x86_64-manylinux_2_28", "services", GPU),
        ("x86_64-manylinux_2_28", "services-cpu", CPU),
        ("x86_64-manylinux_2_28", "services-gpu",
         ({"onnxruntime-gpu", "nvidia-cudnn-cu13", "nvidia-cuda-runtime"}, {"onnxruntime"})),
    ],
    ids=["macos-arm64", "linux-aarch64", "linux-x86_64", "linux-x86_64-cpu", "linux-x86_64-gpu"],
)  # fmt: skip
def test_services_extra_resolves_per_platform(
    platform: str, extra: str, runtime: tuple[set[str], set[str]], tmp_path: Path
) -> None:
    """uv, not pip: pip's --platform picks wheels for the target but evaluates environment
    markers for the machine it runs on, so from Linux x86_64 it asks for onnxruntime-gpu on
    macOS too. MACOSX_DEPLOYMENT_TARGET: ONNX Runtime's arm64 wheels are macosx_14_0."""
    uv = _uv()
    reason = _registry_unreachable()
    if reason is not None:
        pytest.skip(reason)
    ran = subprocess.run(
        [uv, "pip", "install", "--dry-run", "--no-config", "--python-platform", platform,
         "--python-version", "3.11", "--only-binary", ":all:", "--target", str(tmp_path / "t"),
         f"{_source(tmp_path / 'src')}[{extra}]"],
        capture_output=True, text=True, timeout=240,
        env={**_env(), "MACOSX_DEPLOYMENT_TARGET": "14.0"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-3000:]
    would = {
        line.split()[1].split("==")[0]
        for line in ran.stderr.splitlines() + ran.stdout.splitlines()
        if line.startswith(" + ")
    }
    wanted, unwanted = runtime
    assert wanted | {"onnx", "chorus-mesh"} <= would, sorted(would)
    assert not unwanted & would, sorted(would)
