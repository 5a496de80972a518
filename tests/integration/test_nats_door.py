"""The task API on the bus: `chorus.submit` on the shared mesh answers what the gRPC front door
answers, with the same errors (a gRPC status name and message in the micro error headers),
and bad bytes or a spent deadline are refused clearly while the router keeps serving."""

from __future__ import annotations

import asyncio
import time

import nats
import numpy as np
import pytest

from chorus.client import BusTaskClient, DeadlineExceeded, InvalidArgument, NotFound, TaskClient
from chorus.core import subjects
from chorus.core.calls.request import ERROR_CODE_HEADER, ERROR_HEADER
from chorus.core.context import DEADLINE
from chorus.launch.mesh import Mesh

CAPABILITY = "classify/digits"


def _on_the_bus(mesh: Mesh, body: object) -> object:
    async def run() -> object:
        nc = await nats.connect(mesh.nats_url)
        try:
            return await body(nc)  # type: ignore[operator]
        finally:
            await nc.close()

    return asyncio.run(run())


def test_submit_on_the_bus_answers_as_the_grpc_front_door(mesh: Mesh) -> None:
    x = (np.random.default_rng(3).random((2, 64)) * 16).astype(np.float32)

    async def bus(nc: nats.NATS) -> object:
        return await BusTaskClient(nc).submit(CAPABILITY, {"input": x}, policy="soft_vote")

    over_nats = _on_the_bus(mesh, bus)
    with TaskClient(mesh.router_target) as client:
        over_grpc = client.submit(CAPABILITY, {"input": x}, policy="soft_vote")
    assert list(over_nats.labels) == list(over_grpc.labels)  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        over_nats.probabilities,  # type: ignore[attr-defined]
        over_grpc.probabilities,
        atol=1e-6,
    )
    assert set(over_nats.members) == set(over_grpc.members)  # type: ignore[attr-defined]


def test_errors_on_the_bus_are_the_grpc_api_s_own(mesh: Mesh) -> None:
    x = np.zeros((1, 64), np.float32)

    async def unknown(nc: nats.NATS) -> None:
        await BusTaskClient(nc).submit("classify/nothing", {"input": x})

    with pytest.raises(NotFound, match="classify/nothing"):
        _on_the_bus(mesh, unknown)

    async def wrong_shape(nc: nats.NATS) -> None:
        await BusTaskClient(nc).submit(CAPABILITY, {"input": np.zeros((1, 3), np.float32)})

    with pytest.raises(InvalidArgument, match="input"):
        _on_the_bus(mesh, wrong_shape)


def test_bad_bytes_and_a_spent_deadline_are_refused_and_it_keeps_serving(mesh: Mesh) -> None:
    async def raw(nc: nats.NATS) -> list[tuple[str, str]]:
        out = []
        for body, headers in (
            (b"\xff\x00 not a request", None),
            (b"", {DEADLINE: str(int((time.time() - 5) * 1000))}),
            (b"", {DEADLINE: "soon"}),
        ):
            msg = await nc.request(subjects.SUBMIT, body, timeout=5, headers=headers)
            h = msg.headers or {}
            out.append((h.get(ERROR_CODE_HEADER, ""), h.get(ERROR_HEADER, "")))
        return out

    garbage, spent, unreadable = _on_the_bus(mesh, raw)  # type: ignore[misc]
    assert garbage[0] == "INVALID_ARGUMENT" and "SubmitRequest" in garbage[1]
    assert spent[0] in ("DEADLINE_EXCEEDED", "INVALID_ARGUMENT"), spent
    assert unreadable[0] == "INVALID_ARGUMENT" and DEADLINE in unreadable[1]

    async def late(nc: nats.NATS) -> None:
        x = np.zeros((1, 64), np.float32)
        await BusTaskClient(nc).submit(CAPABILITY, {"input": x}, timeout_s=0.000001)

    with pytest.raises(DeadlineExceeded):
        _on_the_bus(mesh, late)
    with TaskClient(mesh.router_target) as client:
        assert client.submit(CAPABILITY, {"input": np.zeros((1, 64), np.float32)}).labels.shape
