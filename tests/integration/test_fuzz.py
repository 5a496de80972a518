"""Property-based bad input against the task API, the KServe v2 API and the NATS subjects:
every request gets an answer or a clear error, nothing crashes, nothing hangs.

CI runs a few hundred examples per target; `CHORUS_FUZZ_EXAMPLES=10000` is the recorded run
(see tests/integration/faults/README.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import grpc
import nats
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as kpb
from tritonclient.grpc import service_pb2_grpc as kpb_grpc

from chorus.client import TaskClient
from chorus.launch.mesh import Mesh
from chorus.pb import task_pb2, tensor_pb2

EXAMPLES = int(os.environ.get("CHORUS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)  # fmt: skip
CLEAR = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.OUT_OF_RANGE,
}
DATATYPES = ["FP32", "FP64", "INT64", "INT32", "UINT8", "BOOL", "BYTES", "FP16", "fp32", "", "X"]
NAMES = ["input", "caption", "image", "", "input ", "ünïcode"]


@st.composite
def tensors(draw: st.DrawFn) -> tensor_pb2.Tensor:
    shape = draw(st.lists(st.integers(-3, 300), max_size=4))
    dtype = draw(st.sampled_from(DATATYPES))
    if draw(st.booleans()) and all(d >= 0 for d in shape) and np.prod(shape) * 4 <= 1 << 16:
        n = int(np.prod(shape)) if shape else 1
        raw = draw(st.sampled_from([
            np.zeros(n, np.float32).tobytes(),
            np.full(n, np.nan, np.float32).tobytes(),
            np.full(n, np.inf, np.float32).tobytes(),
            np.arange(n, dtype=np.int64).tobytes(),
        ]))  # fmt: skip
    else:
        raw = draw(st.binary(max_size=2048))
    return tensor_pb2.Tensor(
        name=draw(st.sampled_from(NAMES)), datatype=dtype, shape=shape, raw=raw
    )


requests = st.builds(
    task_pb2.SubmitRequest,
    capability=st.sampled_from(["classify/digits", "", "classify/nothing", "x" * 300]),
    inputs=st.lists(tensors(), max_size=3),
    priority=st.integers(0, 9),
    deadline_ms=st.sampled_from([0, 1, 5, 1000, 2**32 - 1]),
    fusion_policy=st.sampled_from(["", "soft_vote", "stacking", "gated", "nope"]),
    conflict=st.builds(
        task_pb2.ConflictPolicy,
        name=st.sampled_from(["", "quorum", "zzz"]),
        quorum=st.integers(0, 9),
    ),
    pipeline=st.sampled_from(["", "", "", "digits-describe", "nope"]),
    task_id=st.sampled_from(["", "t-1", "\x00"]),
)


STATS: Counter[tuple[str, str]] = Counter()
"""(target, outcome) counts, printed at the end: the recorded run's evidence."""


def _check(err: grpc.RpcError, started: float, target: str) -> None:
    STATS[(target, err.code().name)] += 1
    assert err.code() in CLEAR, f"{err.code()}: {err.details()}"
    assert err.details() and len(err.details()) > 10
    assert time.monotonic() - started < 15, "an answer took too long"


@FUZZ
@given(req=requests)
def test_task_api_answers_bad_requests_clearly(
    client: TaskClient, req: task_pb2.SubmitRequest
) -> None:
    started = time.monotonic()
    try:
        client.stub.Submit(req, timeout=20)
        STATS[("task api", "OK")] += 1
    except grpc.RpcError as err:
        _check(err, started, "task api")


kserve_requests = st.builds(
    kpb.ModelInferRequest,
    model_name=st.sampled_from(["logreg", "nope", ""]),
    model_version=st.sampled_from(["", "1", "9"]),
    inputs=st.lists(
        st.builds(
            kpb.ModelInferRequest.InferInputTensor,
            name=st.sampled_from(NAMES),
            datatype=st.sampled_from(DATATYPES),
            shape=st.lists(st.integers(-3, 100), max_size=3),
        ),
        max_size=2,
    ),
    raw_input_contents=st.lists(st.binary(max_size=1024), max_size=3),
)


@FUZZ
@given(req=kserve_requests)
def test_kserve_api_answers_bad_requests_clearly(mesh: Mesh, req: kpb.ModelInferRequest) -> None:
    started = time.monotonic()
    with grpc.insecure_channel(str(mesh.child("logreg").ready["grpc"])) as ch:
        try:
            kpb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(req, timeout=10)
            STATS[("kserve", "OK")] += 1
        except grpc.RpcError as err:
            _check(err, started, "kserve")


@FUZZ
@given(
    subject=st.sampled_from(["chorus.infer.logreg", "chorus.fuse", "chorus.feedback"]),
    body=st.binary(max_size=512),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "Chorus-Deadline-Ms",
                "Chorus-Priority",
                "Chorus-Input-Sha256",
                "Chorus-Capability",
                "traceparent",
            ]
        ),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    ),
)
def test_nats_subjects_answer_malformed_envelopes(
    mesh: Mesh, subject: str, body: bytes, headers: dict[str, str]
) -> None:
    async def one() -> None:
        nc = await nats.connect(mesh.nats_url)
        try:
            reply = await nc.request(subject, body, timeout=5, headers=headers or None)
        finally:
            await nc.close()
        code = (reply.headers or {}).get("Nats-Service-Error-Code")
        STATS[("nats " + subject, code or "OK")] += 1
        assert code, f"{subject} accepted {body[:40]!r} with {headers}"
        assert reply.headers["Nats-Service-Error"]

    asyncio.run(one())


def test_still_serving_after_the_fuzz(client: TaskClient) -> None:
    print(f"\nfuzzed requests: {sum(STATS.values())}")
    for (target, outcome), n in sorted(STATS.items()):
        print(f"  {target:<24} {outcome:<20} {n}")
    assert client.submit(
        "classify/digits", {"input": np.zeros((1, 64), np.float32)}
    ).labels.shape == (1,)


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
