"""Bad input gets a gRPC status that names the problem; the mesh keeps serving afterwards."""

from __future__ import annotations

import re

import grpc
import nats
import numpy as np
import pytest

from chorus.client import TaskClient
from chorus.core import subjects
from chorus.core.codec import to_tensor
from chorus.demo.datasets import digits_split
from chorus.launch.mesh import Mesh
from chorus.pb import task_pb2, wire_pb2

CAPABILITY = "classify/digits"


def _status(call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def _still_serves(client: TaskClient) -> None:
    x = digits_split().x_test[:1]
    assert client.submit(CAPABILITY, {"input": x}).labels.shape == (1,)


@pytest.mark.parametrize(
    ("inputs", "pattern"),
    [
        (
            {"input": np.zeros((2, 63), np.float32)},
            r"inputs\['input'\]: expected shape \[-1, 64\].*got \[2, 63\]",
        ),
        (
            {"input": np.zeros((2, 64), np.float64)},
            r"inputs\['input'\]: expected datatype FP32.*got float64",
        ),
        ({"input": np.zeros((0, 64), np.float32)}, r"inputs\['input'\]: empty tensor"),
        (
            {"pixels": np.zeros((1, 64), np.float32)},
            r"inputs: .* takes \['input'\], got \['pixels'\]",
        ),
        (
            {"input": np.zeros((1025, 64), np.float32)},
            r"1025 rows exceed the router's max_rows of 1024",
        ),
    ],
    ids=["wrong-shape", "wrong-dtype", "zero-rows", "wrong-name", "too-many-rows"],
)
def test_invalid_inputs(client: TaskClient, inputs: dict[str, np.ndarray], pattern: str) -> None:
    err = _status(client.submit, CAPABILITY, inputs)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(pattern, err.details()), err.details()
    _still_serves(client)


def test_no_inputs(client: TaskClient) -> None:
    err = _status(client.stub.Submit, task_pb2.SubmitRequest(capability=CAPABILITY), timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs: empty" in err.details()
    _still_serves(client)


def test_bytes_that_do_not_fit_the_shape(client: TaskClient) -> None:
    t = to_tensor("input", np.zeros((2, 64), np.float32))
    t.raw = t.raw[:-4]
    err = _status(
        client.stub.Submit, task_pb2.SubmitRequest(capability=CAPABILITY, inputs=[t]), timeout=10
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape [2, 64] of FP32 needs 512 bytes, got 508" in err.details()


def test_unknown_capability_lists_live_ones(client: TaskClient) -> None:
    err = _status(client.submit, "classify/cats", {"input": np.zeros((1, 64), np.float32)})
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "'classify/cats'" in err.details() and "classify/digits" in err.details()
    err = _status(client.submit, "", {"input": np.zeros((1, 64), np.float32)})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "capability: empty" in err.details()
    _still_serves(client)


def test_unknown_policy_and_priority(client: TaskClient) -> None:
    x = {"input": np.zeros((1, 64), np.float32)}
    err = _status(client.submit, CAPABILITY, x, policy="tea_leaves")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fusion_policy: unknown policy 'tea_leaves'" in err.details()
    req = task_pb2.SubmitRequest(
        capability=CAPABILITY, inputs=[to_tensor("input", x["input"])], priority=7
    )  # type: ignore[arg-type]
    err = _status(client.stub.Submit, req, timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "priority: expected one of" in err.details()
    _still_serves(client)


def test_oversized_payload(client: TaskClient) -> None:
    # 5 MiB is over the router's 4 MiB gRPC message limit.
    big = {"input": np.zeros((20480, 64), np.float32)}
    err = _status(client.submit, CAPABILITY, big)
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in err.details()
    _still_serves(client)


def test_deadline_too_short_says_where(client: TaskClient) -> None:
    x = {"input": digits_split().x_test[:1]}
    err = _status(client.submit, CAPABILITY, x, deadline_ms=1)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "deadline passed" in err.details() or "no answer within" in err.details()
    _still_serves(client)


async def test_model_service_rejects_bad_nats_calls_and_keeps_serving(mesh: Mesh) -> None:
    """Past the router: a member checks what it gets on NATS itself."""
    nc = await nats.connect(mesh.nats_url)
    try:
        bad = wire_pb2.InferCall(inputs=[to_tensor("input", np.zeros((1, 10), np.float32))])
        reply = await nc.request(subjects.infer("mlp"), bad.SerializeToString(), timeout=5)
        assert reply.headers["Nats-Service-Error-Code"] == "INVALID_ARGUMENT"
        assert "expected shape [-1, 64]" in reply.headers["Nats-Service-Error"]

        reply = await nc.request(subjects.infer("mlp"), b"\xff\xff not protobuf", timeout=5)
        assert reply.headers["Nats-Service-Error-Code"] == "INVALID_ARGUMENT"

        expired = {"Chorus-Deadline-Ms": "1000", "Chorus-Task-Id": "t-old"}
        good = wire_pb2.InferCall(inputs=[to_tensor("input", np.zeros((1, 64), np.float32))])
        reply = await nc.request(
            subjects.infer("mlp"), good.SerializeToString(), timeout=5, headers=expired
        )
        assert reply.headers["Nats-Service-Error-Code"] == "DEADLINE_EXCEEDED"
        assert "t-old" in reply.headers["Nats-Service-Error"]

        for count in ("0", "lots", "99999"):
            reply = await nc.request(
                subjects.infer("mlp"), good.SerializeToString(), timeout=5,
                headers={"Chorus-Tasks": count},
            )  # fmt: skip
            assert reply.headers["Nats-Service-Error-Code"] == "INVALID_ARGUMENT"
            assert (
                "header Chorus-Tasks: expected a whole number from 1 to 4096"
                in (reply.headers["Nats-Service-Error"])
            )

        reply = await nc.request(subjects.infer("mlp"), good.SerializeToString(), timeout=5)
        assert not (reply.headers or {}).get("Nats-Service-Error-Code")
        ok = wire_pb2.InferReply.FromString(reply.data)
        assert ok.model == "mlp" and [t.name for t in ok.outputs] == ["label", "probabilities"]
    finally:
        await nc.close()
