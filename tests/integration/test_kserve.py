"""A model service answers standard KServe v2 clients (tritonclient) with the mesh's own model.

tritonclient registers the same protobuf names as chorus/pb/kserve_v2.proto, so this process
uses tritonclient's stubs only; importing both into one process is refused by protobuf.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from pathlib import Path

import grpc
import nats
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from nats.aio.msg import Msg
from tritonclient.grpc import model_config_pb2
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from chorus.core import subjects
from chorus.core.heartbeat import Heartbeat
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.services import repository


@pytest.fixture
def forest(mesh: Mesh) -> str:
    return str(mesh.child("forest").ready["grpc"])


def test_tritonclient_model_infer_matches_onnx_runtime(forest: str, model_repo: Path) -> None:
    x = digits_split().x_test[:16]
    client = tc.InferenceServerClient(url=forest)
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("forest")
        meta = client.get_model_metadata("forest")
        assert meta.platform == "onnxruntime_onnx"
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            ("input", "FP32", [-1, 64])
        ]
        config = client.get_model_config("forest").config  # Triton's, as perf_analyzer reads it
        assert (config.name, config.max_batch_size, config.backend) == ("forest", 0, "onnxruntime")
        assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
            ("input", model_config_pb2.TYPE_FP32, [-1, 64])
        ]

        inp = tc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("forest", [inp], outputs=[tc.InferRequestedOutput("probabilities")])
        got = result.as_numpy("probabilities")
        assert result.as_numpy("label") is None  # only what was asked for
    finally:
        client.close()

    path = repository.load(model_repo, "forest").onnx_path
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"input": x}
    )[0]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_tritonclient_gets_clear_errors_and_service_keeps_serving(forest: str) -> None:
    client = tc.InferenceServerClient(url=forest)
    try:
        bad = tc.InferInput("input", [2, 63], "FP32")
        bad.set_data_from_numpy(np.zeros((2, 63), np.float32))
        with pytest.raises(
            InferenceServerException, match=r"expected shape \[-1, 64\].*got \[2, 63\]"
        ):
            client.infer("forest", [bad])
        with pytest.raises(InferenceServerException, match=r"model 'nope'.*not served here"):
            client.get_model_metadata("nope")
        good = tc.InferInput("input", [1, 64], "FP32")
        good.set_data_from_numpy(np.zeros((1, 64), np.float32))
        assert client.infer("forest", [good]).as_numpy("label").shape == (1,)
    finally:
        client.close()


def test_typed_contents_are_accepted_like_raw_bytes(forest: str) -> None:
    x = digits_split().x_test[:2]
    with grpc.insecure_channel(forest) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        typed = pb.ModelInferRequest(model_name="forest")
        t = typed.inputs.add(name="input", datatype="FP32", shape=[2, 64])
        t.contents.fp32_contents.extend(x.ravel().tolist())
        raw = pb.ModelInferRequest(model_name="forest", raw_input_contents=[x.tobytes()])
        raw.inputs.add(name="input", datatype="FP32", shape=[2, 64])
        a, b = stub.ModelInfer(typed, timeout=10), stub.ModelInfer(raw, timeout=10)
    assert a.raw_output_contents == b.raw_output_contents
    assert [o.name for o in a.outputs] == ["label", "probabilities"]


def test_health_service_reports_serving(forest: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(forest) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_stream_infer_answers_each_request_by_id_and_survives_a_bad_one(forest: str) -> None:
    x = digits_split().x_test[:6]
    unary = tc.InferenceServerClient(url=forest)
    stream = tc.InferenceServerClient(url=forest)
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    try:
        want = {}
        for i in range(6):
            given = tc.InferInput("input", [1, 64], "FP32")
            given.set_data_from_numpy(x[i : i + 1])
            want[str(i)] = unary.infer("forest", [given]).as_numpy("probabilities")
        stream.start_stream(callback=lambda result, error: answers.put((result, error)))
        for i in range(6):
            if i == 3:
                bad = tc.InferInput("input", [1, 63], "FP32")
                bad.set_data_from_numpy(np.zeros((1, 63), np.float32))
                stream.async_stream_infer("forest", [bad], request_id="bad")
            given = tc.InferInput("input", [1, 64], "FP32")
            given.set_data_from_numpy(x[i : i + 1])
            stream.async_stream_infer("forest", [given], request_id=str(i))
        got, errors = {}, []
        for _ in range(7):
            result, error = answers.get(timeout=10)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("probabilities")  # type: ignore[attr-defined]
        stream.stop_stream()
    finally:
        unary.close()
        stream.close()
    assert sorted(got) == sorted(want)
    for key, probabilities in want.items():
        np.testing.assert_array_equal(got[key], probabilities)
    assert len(errors) == 1 and "expected shape [-1, 64]" in errors[0], errors


def test_kserve_only_load_moves_the_load_the_heartbeats_report(
    model_repo: Path, nats_url: str, tmp_path: Path
) -> None:
    """KServe callers share the NATS path's inference core: the router sees their load."""
    with Mesh(model_repo, tmp_path, models=["logreg"], nats_url=nats_url,
              model_args={"logreg": ["--delay-ms", "300"]}) as mesh:  # fmt: skip
        target = str(mesh.child("logreg").ready["grpc"])
        x = digits_split().x_test[:1]

        def call() -> None:
            client = tc.InferenceServerClient(url=target)
            try:
                for _ in range(3):
                    inp = tc.InferInput("input", list(x.shape), "FP32")
                    inp.set_data_from_numpy(x)
                    client.infer("logreg", [inp])
            finally:
                client.close()

        callers = [threading.Thread(target=call) for _ in range(4)]
        for t in callers:
            t.start()
        try:
            beats = asyncio.run(_heartbeats_while(callers, mesh.nats_url))
        finally:
            for t in callers:
                t.join()
        replica = mesh.child("logreg").ready["replica"]
    beats = [b for b in beats if b.replica == replica]  # not the session mesh's logreg
    assert max(b.in_flight for b in beats) >= 2, [b.in_flight for b in beats]
    assert max(b.queue["normal"] for b in beats) >= 1
    assert beats[-1].ewma_ms >= 300  # the slowed calls, timed by the same core


async def _heartbeats_while(callers: list[threading.Thread], url: str) -> list[Heartbeat]:
    nc = await nats.connect(url)
    seen: list[Heartbeat] = []

    async def got(msg: Msg) -> None:
        seen.append(Heartbeat.from_json(msg.data))

    await nc.subscribe(subjects.heartbeat("logreg"), cb=got)
    try:
        while any(t.is_alive() for t in callers):
            await nc.publish(subjects.DISCOVER, b"")  # every replica announces itself now
            await asyncio.sleep(0.1)
    finally:
        await nc.close()
    return seen
