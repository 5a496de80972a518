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
from pathlib import Path

import grpc
import numpy as np
import pytest

from chorus.bench.paths import (
    TRITON_MODEL,
    Phase,
    Workload,
    load_workload,
    running_triton,
    triton_infer_requests,
    triton_path,
)
from chorus.bench.triton import TritonEnv, TritonServer, TritonUnavailable, ensure_venv
from chorus.pb import kserve_v2_pb2 as kpb
from chorus.pb import kserve_v2_pb2_grpc as kpb_grpc

BUILD = "CHORUS_TEST_TRITON"
ROWS = 12


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


def _outputs(reply: kpb.ModelInferResponse) -> dict[str, np.ndarray]:
    dtypes = {"FP32": np.float32, "INT64": np.int64}
    return {
        out.name: np.frombuffer(raw, dtype=dtypes[out.datatype]).reshape(tuple(out.shape))
        for out, raw in zip(reply.outputs, reply.raw_output_contents, strict=True)
    }


def test_each_layout_answers_the_bare_soft_vote(server: TritonServer, workload: Workload) -> None:
    requests = triton_infer_requests(workload)[:ROWS]
    want = _bare_soft_vote(workload, np.concatenate(workload.rows[:ROWS]))
    with grpc.insecure_channel(server.target) as channel:
        infer = kpb_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        replies = [_outputs(infer(r, timeout=10)) for r in requests]
    got = np.concatenate([r["probabilities"] for r in replies])
    assert got.shape == want.shape == (ROWS, 10)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    labels = np.concatenate([r["label"] for r in replies]).ravel()
    assert labels.tolist() == want.argmax(axis=1).tolist()


def test_the_bench_path_drives_it_with_concurrent_callers(
    server: TritonServer, workload: Workload
) -> None:
    """Concurrent callers make the dynamic batcher gather several requests into one execute;
    every caller still gets its own answer (checked above) and the phase counts each one."""
    path = triton_path(server, workload, "triton")
    try:
        path.warm(5)
        phase = Phase()
        path.drive(4, 40, phase)
        assert len(phase.latencies_s) == 40 and phase.elapsed_s > 0
        # The server and a backend stub per Python model, each named by its model.
        stubs = {p.parents[1].name for p in server.repository.glob("*/1/model.py")}
        names = [name for name, _ in path.services() or []]
        assert sorted(names) == sorted(["tritonserver", *stubs])
    finally:
        path.close()


def test_chorus_bench_records_triton_beside_bare(triton_env: TritonEnv, model_repo: Path,
                                                 tmp_path: Path) -> None:  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "bench", "--requests", "20", "--concurrency", "1",
         "2", "--paths", "bare", "triton-single", "--repository", str(model_repo),
         "--triton-venv", str(triton_env.venv), "--out", str(tmp_path), "--no-progress"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (record_path,) = tmp_path.glob("bench-*.json")
    record = json.loads(record_path.read_text())
    assert set(record["results"]) == {f"{p}@{c}" for p in ("bare", "triton-single") for c in (1, 2)}
    assert record["settings"]["triton"]["nvidia_pytriton"] == triton_env.version()
    cpu = record["results"]["triton-single@2"]["cpu"]["per_service_s"]
    assert set(cpu) == {"tritonserver", TRITON_MODEL}
