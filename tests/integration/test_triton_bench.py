"""`chorus bench`'s Triton baseline: a real `tritonserver` (the nvidia-pytriton wheel's) in both
layouts answers what bare ONNX Runtime's soft vote answers, and the bench records it.

The Triton virtualenv (nvidia-pytriton, onnxruntime, numpy<2: about 450 MB from the package
index) is built here only with CHORUS_TEST_TRITON=1, once, into ~/.cache/chorus/triton-venv,
which later runs reuse; without it and without a cached one these tests skip and say why, so
that a normal CI run never spends minutes on pip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

# tritonclient's copy of the KServe v2 proto: the suite's process loads that one (see
# test_kserve.py), so nothing here may load Chorus's (chorus.pb.kserve_v2_pb2); the bench's
# own callers, which do, run in the `chorus bench` subprocess below.
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc

from chorus.bench.paths import Workload, load_workload
from chorus.bench.triton import TritonEnv, TritonServer, TritonUnavailable, ensure_venv
from chorus.bench.triton_path import TRITON_MODEL, running_triton

BUILD = "CHORUS_TEST_TRITON"
ROWS = 24


@pytest.fixture(scope="module")
def triton_env() -> TritonEnv:
    build = os.environ.get(BUILD) == "1"
    try:
        return ensure_venv(build=build)
    except TritonUnavailable as err:
        hint = "" if build else f"; {BUILD}=1 builds it (a few minutes, once)"
        pytest.skip(f"no Triton here: {err}{hint}")


@pytest.fixture(scope="module")
def workload(model_repo: Path) -> Workload:
    return load_workload(model_repo)[0]


@pytest.fixture(scope="module", params=["ensemble", "single"])
def server(
    request: pytest.FixtureRequest, triton_env: TritonEnv, workload: Workload
) -> Iterator[TritonServer]:
    with running_triton(triton_env, workload, request.param) as s:
        yield s


def _bare_soft_vote(workload: Workload, rows: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(workload.onnx_path(m))) for m in workload.members]
    return np.mean([s.run(["probabilities"], {"input": rows})[0] for s in sessions], axis=0)


def _request(row: np.ndarray) -> kpb.ModelInferRequest:
    req = kpb.ModelInferRequest(model_name=TRITON_MODEL, raw_input_contents=[row.tobytes()])
    req.inputs.add(name="input", datatype="FP32", shape=row.shape)
    return req


def _outputs(reply: kpb.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    return {
        out.name: np.frombuffer(raw, dtype=dtypes[out.datatype]).reshape(tuple(out.shape))
        for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }


def test_each_layout_answers_the_bare_soft_vote(server: TritonServer, workload: Workload) -> None:
    """Eight callers at once, so that the dynamic batcher hands one `execute` several
    requests: each must still get its own row's answer back."""
    rows = workload.rows[:ROWS]
    want = _bare_soft_vote(workload, np.concatenate(rows))
    with grpc.insecure_channel(server.target) as channel, ThreadPoolExecutor(8) as pool:
        infer = kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        replies = list(pool.map(lambda row: _outputs(infer(_request(row), timeout=10)), rows))
    got = np.concatenate([r["probabilities"] for r in replies])
    assert got.shape == want.shape == (ROWS, 10)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    labels = np.concatenate([r["label"] for r in replies]).ravel()
    assert labels.tolist() == want.argmax(axis=1).tolist()


def test_chorus_bench_records_both_layouts_beside_bare(
    triton_env: TritonEnv, model_repo: Path, tmp_path: Path
) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "bench", "--requests", "20", "--concurrency", "1",
         "4", "--paths", "bare", "triton-ensemble", "triton-single", "--repository",
         str(model_repo), "--triton-venv", str(triton_env.venv), "--out", str(tmp_path),
         "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (record_path,) = tmp_path.glob("bench-*.json")
    record = json.loads(record_path.read_text())
    paths = ("bare", "triton-ensemble", "triton-single")
    assert set(record["results"]) == {f"{p}@{c}" for p in paths for c in (1, 4)}
    assert all(r["requests"] == 20 for r in record["results"].values())
    assert record["settings"]["triton"]["nvidia_pytriton"] == triton_env.version()
    # CPU charged to the server and to each Python model's stub, by the model's name.
    per_service = {p: set(record["results"][f"{p}@4"]["cpu"]["per_service_s"]) for p in paths[1:]}
    assert per_service == {
        "triton-ensemble": {"tritonserver", "logreg", "forest", "mlp", "soft_vote"},
        "triton-single": {"tritonserver", TRITON_MODEL},
    }
    assert "mesh_over_fastest_triton_throughput" not in record["summary"]  # no mesh measured


def test_chorus_bench_says_why_when_triton_cannot_be_had(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "bench", "--paths", "triton-single",
         "--triton-venv", str(blocker / "venv"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 1
    assert "no Triton for the triton paths" in run.stderr and str(blocker) in run.stderr
    assert not list(tmp_path.glob("bench-*.json"))
