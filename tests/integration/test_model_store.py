"""The model store on the bus, end to end on real nats-servers: a repository pushed with
`chorus models push` is served from `nats:` exactly as from its folder; a version pushed under
load swaps in with no failed request; a corrupted object is refused (naming model, version
and both digests) while the old version keeps serving; a removed version rolls back; on a
3-node cluster with a node killed a model service still starts from the store; a 200 MB model
pushes and loads without ever sitting whole in memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from onnx import TensorProto, helper, numpy_helper

from chorus.client import TaskClient
from chorus.core.model_store import FILES, ModelStore, StoredVersion
from chorus.core.natsclient import connect_once
from chorus.launch.mesh import Mesh
from chorus.launch.natsserver import NatsCluster, NatsServer, wait_for_jetstream
from tests.support import CAPABILITY, DEMO, X, request

CHORUS = [sys.executable, "-m", "chorus.cli"]
ROWS = 40


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*CHORUS, *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _answers(router: str) -> list[np.ndarray]:
    with TaskClient(router) as client:
        return [client.submit(CAPABILITY, {"input": X[i : i + 1]}).probabilities
                for i in range(ROWS)]  # fmt: skip


@pytest.fixture(scope="module")
def repo(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's three members, as a team's own repository would hold them."""
    root = tmp_path_factory.mktemp("repo")
    for name in DEMO:
        shutil.copytree(model_repo / name, root / name)
    return root


@pytest.fixture(scope="module")
def store_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("store-nats")
    with NatsServer(base / "js", log=base / "nats.log") as server:
        yield server.url


@pytest.fixture(scope="module")
def pushed(repo: Path, store_nats: str) -> str:
    out = _run("models", "push", str(repo), "--nats-url", store_nats).stdout
    for name in DEMO:
        assert f"pushed {name} v1 to nats:chorus-models" in out, out
    return store_nats


def test_ls_lists_what_was_pushed_with_each_files_digest(repo: Path, pushed: str) -> None:
    rows = json.loads(_run("models", "ls", "--json", env={"CHORUS_NATS_URL": pushed}).stdout)
    assert sorted(r["model"] for r in rows) == sorted(DEMO)
    for r in rows:
        folder = repo / r["model"] / r["version"]
        assert set(r["files"]) == {"manifest.json", "model.onnx"}
        for rel, digest in r["files"].items():
            assert digest == hashlib.sha256((folder / rel).read_bytes()).hexdigest()


def test_k8s_render_deploys_the_models_of_the_store_or_of_a_folder(
    repo: Path, pushed: str, tmp_path: Path
) -> None:
    _run("k8s", "render", "--out", str(tmp_path / "store"), "--nats-url", pushed)
    _run("k8s", "render", "--out", str(tmp_path / "folder"), "--from", str(repo))
    for out in ("store", "folder"):
        assert sorted(p.name for p in (tmp_path / out / "models").iterdir()) == sorted(DEMO)


def test_chorus_up_from_the_store_answers_as_from_the_folder(
    repo: Path, pushed: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [*CHORUS, "up", "--repository", "nats:", "--nats-url", pushed, "--router-port", "0",
         "--data-dir", str(tmp_path / "up")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, f"chorus up ended early: {lines}"
            lines.append(line)
            if line.startswith("mesh up"):
                router = line.split("--router ")[1].split()[0]
                break
        from_store = _answers(router)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    cached = tmp_path / "up" / "model-cache" / "chorus-models"
    assert sorted(p.name for p in cached.iterdir()) == sorted(DEMO)

    with Mesh(repo, tmp_path / "folder", models=DEMO, nats_url=pushed) as mesh:
        from_folder = _answers(mesh.router_target)
    for a, b in zip(from_store, from_folder, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def store_mesh(pushed: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Model services started with `--repository nats:`, a fuser and a router."""
    data = tmp_path_factory.mktemp("store-mesh")
    with Mesh(
        Path("nats:"),
        data,
        models=DEMO,
        nats_url=pushed,
        extra_env={"CHORUS_MODEL_CACHE_DIR": str(data / "cache")},
    ) as mesh:
        yield mesh


def _logreg_service(mesh: Mesh) -> str:
    return str(mesh.child("logreg").ready["grpc"])


def _version_folder(repo: Path, version: str, dest: Path) -> Path:
    """logreg as another version: the same weights under a new number."""
    folder = dest / "logreg" / version
    shutil.copytree(repo / "logreg" / "1", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _wait_for(check: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout_s}s")


def _serving(service: str) -> dict[str, tuple[str, str]]:
    """The service's versions, read as a KServe client does (tritonclient; this process may
    not also import chorus's copy of the same proto, see test_kserve.py)."""
    client = tc.InferenceServerClient(service)
    try:
        index = client.get_model_repository_index()
    finally:
        client.close()
    return {m.version: (m.state, m.reason) for m in index.models}


def test_push_under_load_swaps_in_with_no_failed_request_then_corruption_and_rollback(
    store_mesh: Mesh, repo: Path, pushed: str, tmp_path: Path
) -> None:
    service = _logreg_service(store_mesh)
    assert _serving(service)["1"][0] == "READY"
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        with TaskClient(store_mesh.router_target) as client:
            i = 0
            while not stop.is_set():
                try:
                    reply = client.stub.Submit(request(i), timeout=10)
                    assert "logreg" in {m.model for m in reply.members}, reply
                    answered += 1
                except Exception as exc:
                    failures.append(repr(exc))
                i += 1

    callers = [threading.Thread(target=load) for _ in range(4)]
    for t in callers:
        t.start()
    try:
        time.sleep(1.0)
        _run("models", "push", str(_version_folder(repo, "2", tmp_path / "v2")), "--quiet",
             "--nats-url", pushed)  # fmt: skip
        _wait_for(lambda: _serving(service).get("2", ("",))[0] == "READY")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in callers:
            t.join(timeout=30)
    assert answered > 50
    assert failures == []
    assert _serving(service)["1"][0] == "UNAVAILABLE"

    # Version 3's ONNX object is not the file its record names: refused, 2 keeps serving.
    v3 = _version_folder(repo, "3", tmp_path / "v3") / "logreg" / "3"
    good = hashlib.sha256((v3 / "model.onnx").read_bytes()).hexdigest()
    bad = b"\x08\x07 not the pushed model"
    asyncio.run(_push_corrupted(pushed, v3, bad))
    _wait_for(lambda: _serving(service).get("3", ("", ""))[1] != "")
    state, reason = _serving(service)["3"]
    assert state == "UNAVAILABLE"
    for part in ("logreg", "version 3", good, hashlib.sha256(bad).hexdigest()):
        assert part in reason, reason
    assert _serving(service)["2"][0] == "READY"
    with TaskClient(store_mesh.router_target) as client:
        assert client.submit(CAPABILITY, {"input": X[:1]}).labels.shape == (1,)
        assert {m.name: m.version for m in client.list_models().models}["logreg"] == "2"

    # Removing the serving version rolls back to the highest left.
    _run("models", "rm", "logreg", "--version", "2", "--nats-url", pushed)
    _wait_for(lambda: _serving(service).get("1", ("",))[0] == "READY")
    assert "2" not in _serving(service)


async def _push_corrupted(url: str, folder: Path, onnx_bytes: bytes) -> None:
    """A version whose stored ONNX object differs from the file its record was made from, as
    a damaged or tampered object would."""
    nc = await connect_once(url)
    try:
        store = await ModelStore.open(nc)
        record = StoredVersion(
            "logreg",
            "3",
            {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()},
            0,
            "",
            json.loads((folder / "manifest.json").read_text()),
        )
        objects = store._objects
        await objects.put(record.file_key("manifest.json"), (folder / "manifest.json").read_bytes())
        await objects.put(f"{FILES}logreg/3/model.onnx", onnx_bytes)
        await objects.put(record.key, record.to_json())
    finally:
        await nc.close()


def test_a_model_service_starts_from_the_store_with_a_cluster_node_killed(
    repo: Path, tmp_path: Path
) -> None:
    with NatsCluster(tmp_path / "nats") as cluster:
        _run("models", "push", str(repo / "logreg"), "--quiet", "--nats-url", cluster.url)
        replicas = asyncio.run(_stream_replicas(cluster.servers[0].url))
        assert replicas == 3
        cluster.servers[0].kill()
        alive = ",".join(s.url for s in cluster.servers[1:])
        wait_for_jetstream(alive, 30)
        mesh = Mesh(
            Path("nats:"), tmp_path / "mesh", models=[], nats_url=alive,
            extra_env={"CHORUS_MODEL_CACHE_DIR": str(tmp_path / "cache")},
        )  # fmt: skip
        try:
            child = mesh.spawn("logreg", mesh.model_command("logreg"))
            assert _serving(str(child.ready["grpc"])) == {"1": ("READY", "")}
        finally:
            mesh.stop()


def test_a_model_service_started_before_its_model_is_pushed_waits_then_serves(
    repo: Path, store_nats: str, tmp_path: Path
) -> None:
    mesh = Mesh(
        Path("nats:early"), tmp_path / "mesh", models=[], nats_url=store_nats,
        extra_env={"CHORUS_MODEL_CACHE_DIR": str(tmp_path / "cache")},
    )  # fmt: skip
    started: list[str] = []
    spawner = threading.Thread(
        target=lambda: started.append(str(mesh.spawn("mlp", mesh.model_command("mlp")).ready))
    )
    try:
        spawner.start()
        time.sleep(3)
        assert spawner.is_alive() and not started
        assert "waiting for the model store" in (tmp_path / "mesh" / "logs" / "mlp.log").read_text()
        _run("models", "push", str(repo / "mlp"), "--store", "nats:early", "--nats-url", store_nats)
        spawner.join(timeout=60)
        assert started, "the model service did not become ready once its model was pushed"
    finally:
        mesh.stop()


async def _stream_replicas(url: str) -> int:
    nc = await connect_once(url)
    try:
        info = await nc.jetstream().stream_info("OBJ_chorus-models")
        return int(info.config.num_replicas or 1)
    finally:
        await nc.close()


def _big_model(folder: Path, mb: int) -> None:
    """A valid ONNX model of about `mb` MB: y = x @ W with W (rows x 16) in the file."""
    rows = mb * 1024 * 1024 // (16 * 4)
    weights = np.random.default_rng(0).standard_normal((rows, 16), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
        [numpy_helper.from_array(weights, "W")],
    )
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
              folder / "model.onnx")  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps({"name": "big", "version": "1"}))


ROUND_TRIP = """
import asyncio, sys
from pathlib import Path
from chorus.core.model_store import ModelStore
from chorus.core.natsclient import connect_once

async def main(url: str, folder: Path, cache: Path) -> None:
    nc = await connect_once(url)
    store = await ModelStore.open(nc, "big-models", create=True)
    [record] = await store.push(folder)
    print(await store.fetch(record, cache))
    await nc.close()

asyncio.run(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
# VmHWM is this process's own peak (ru_maxrss would carry the parent's over fork and exec).
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(int(hwm.split()[1]) // 1024)
"""


def test_a_200_mb_model_streams_both_ways_and_loads(store_nats: str, tmp_path: Path) -> None:
    folder = tmp_path / "big" / "1"
    _big_model(folder, 200)
    size = (folder / "model.onnx").stat().st_size
    assert size > 200 * 1000 * 1000
    done = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, store_nats, str(folder), str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    fetched, peak_mb = done.stdout.split()
    # The pushing and fetching process never held the file whole.
    assert int(peak_mb) < size / 1e6 / 2, f"peak RSS {peak_mb} MB for a {size / 1e6:.0f} MB file"
    with (Path(fetched) / "model.onnx").open("rb") as a, (folder / "model.onnx").open("rb") as b:
        assert (
            hashlib.file_digest(a, "sha256").digest() == hashlib.file_digest(b, "sha256").digest()
        )
    session = ort.InferenceSession(str(Path(fetched) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    x = np.ones((1, session.get_inputs()[0].shape[1]), dtype=np.float32)
    assert session.run(None, {"x": x})[0].shape == (1, 16)
