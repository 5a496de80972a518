"""Model lifecycle on a real service: a new version hot-loads under load without losing a
request, the repository RPCs load and unload versions, and readiness tells the truth.

Clients here are tritonclient's (see test_kserve.py for why this process cannot import the
project's own KServe stubs); ModelMetadata's Chorus parameters are read by a subprocess that
uses the project's stubs.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from chorus.client import TaskClient
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.services import repository

CAPABILITY = "classify/digits"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def one_version(model_repo: Path, tmp_path: Path) -> Path:
    """A repository holding logreg version 1 only."""
    root = tmp_path / "repo"
    shutil.copytree(model_repo / "logreg" / "1", root / "logreg" / "1")
    return root


@pytest.fixture
def mesh(one_version: Path, tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(
        one_version,
        tmp_path / "mesh",
        models=["logreg"],
        extra_env={"CHORUS_MODEL_RELOAD_POLL_S": "0.2"},
    ) as running:
        yield running


def _land_version_2(model_repo: Path, root: Path) -> None:
    """logreg version 2: the MLP's weights under logreg's name, so answers show the swap."""
    v1 = repository.load(root, "logreg", "1").manifest
    onnx = (model_repo / "mlp" / "1" / "model.onnx").read_bytes()
    repository.write(root, dataclasses.replace(v1, version="2"), onnx)


def _infer(client: tc.InferenceServerClient, x: np.ndarray, version: str = "") -> str:
    given = tc.InferInput("input", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    result = client.infer("logreg", [given], model_version=version)
    return str(result.get_response().model_version)


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def test_a_new_version_hot_loads_under_load_and_no_request_is_lost(
    mesh: Mesh, model_repo: Path, one_version: Path
) -> None:
    target = str(mesh.child("logreg").ready["grpc"])
    x = digits_split().x_test[:4]
    stop = threading.Event()
    versions: Counter[str] = Counter()
    mesh_versions: Counter[str] = Counter()
    failures: list[str] = []
    last: list[str] = []

    def kserve_load() -> None:
        client = tc.InferenceServerClient(url=target)
        try:
            while not stop.is_set():
                try:
                    v = _infer(client, x)
                    versions[v] += 1
                    last.append(v)
                except InferenceServerException as exc:
                    failures.append(f"kserve: {exc}")
        finally:
            client.close()

    def mesh_load() -> None:
        with TaskClient(mesh.router_target) as client:
            while not stop.is_set():
                try:
                    result = client.submit(CAPABILITY, {"input": x})
                    mesh_versions[result.response.members[0].version] += 1
                except grpc.RpcError as exc:
                    failures.append(f"mesh: {exc.code()} {exc.details()}")

    threads = [threading.Thread(target=kserve_load) for _ in range(2)]
    threads.append(threading.Thread(target=mesh_load))
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        _land_version_2(model_repo, one_version)
        deadline = time.monotonic() + 20
        while mesh_versions["2"] < 20 or versions["2"] < 20:
            assert time.monotonic() < deadline, f"version 2 never served: {versions}"
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert failures == []
    assert versions["1"] > 0 and versions["2"] > 0
    assert mesh_versions["1"] > 0 and mesh_versions["2"] > 0
    assert set(last[-10:]) == {"2"}

    client = tc.InferenceServerClient(url=target)
    try:
        index = {m.version: (m.state, m.reason) for m in client.get_model_repository_index().models}
        assert index == {"1": ("UNAVAILABLE", "replaced by version 2"), "2": ("READY", "")}
        assert client.is_model_ready("logreg", "2")
        assert not client.is_model_ready("logreg", "1")
    finally:
        client.close()


def test_unload_and_load_over_the_repository_api_and_readiness_follows(mesh: Mesh) -> None:
    target = str(mesh.child("logreg").ready["grpc"])
    x = digits_split().x_test[:2]
    client = tc.InferenceServerClient(url=target)
    try:
        assert client.is_server_ready() and client.is_model_ready("logreg")
        assert _health(target) == SERVING

        client.unload_model("logreg")
        assert not client.is_server_ready()
        assert not client.is_model_ready("logreg")
        assert _health(target) == NOT_SERVING
        with pytest.raises(InferenceServerException, match="no version is loaded"):
            _infer(client, x)
        index = client.get_model_repository_index().models
        assert [(m.version, m.state, m.reason) for m in index] == [("1", "UNAVAILABLE", "unloaded")]

        with grpc.insecure_channel(target) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.RepositoryModelLoad(
                    pb.RepositoryModelLoadRequest(
                        model_name="logreg",
                        parameters={"version": pb.ModelRepositoryParameter(string_param="7")},
                    )
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            assert "no version 7" in str(err.value.details())
            stub.RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(
                    model_name="logreg",
                    parameters={"version": pb.ModelRepositoryParameter(string_param="1")},
                )
            )
        assert client.is_model_ready("logreg", "1")
        assert _health(target) == SERVING
        assert _infer(client, x) == "1"
    finally:
        client.close()


def test_model_metadata_names_the_provider_in_use(mesh: Mesh) -> None:
    target = str(mesh.child("logreg").ready["grpc"])
    script = (
        "import json, sys, grpc\n"
        "from chorus.pb import kserve_v2_pb2 as pb, kserve_v2_pb2_grpc as g\n"
        "with grpc.insecure_channel(sys.argv[1]) as ch:\n"
        "    m = g.GRPCInferenceServiceStub(ch).ModelMetadata(pb.ModelMetadataRequest("
        "name='logreg'))\n"
        "print(json.dumps({k: p.WhichOneof('parameter_choice') and getattr(p, "
        "p.WhichOneof('parameter_choice')) for k, p in m.parameters.items()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, target], capture_output=True, text=True, check=True
    )
    params = json.loads(out.stdout)
    assert params["execution_provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert params["instances"] == 1
    assert params["max_batch"] == 1


def test_the_cli_lists_loads_and_unloads_versions(mesh: Mesh) -> None:
    target = str(mesh.child("logreg").ready["grpc"])

    def chorus(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chorus.cli", "models", *args, "--service", target],
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert chorus("index").stdout.strip() == "logreg v1  READY"
    assert chorus("unload", "--model", "logreg").returncode == 0
    assert chorus("index").stdout.strip() == "logreg v1  UNAVAILABLE  (unloaded)"
    wrong = chorus("load", "--model", "logreg", "--version", "7")
    assert wrong.returncode == 1
    assert "NOT_FOUND" in wrong.stderr and "no version 7" in wrong.stderr
    assert chorus("load", "--model", "logreg", "--version", "1").returncode == 0
    assert chorus("index").stdout.strip() == "logreg v1  READY"
