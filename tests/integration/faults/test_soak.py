"""Soak: mixed sync and async load on loopback for a bounded time, reporting throughput and
errors. Seconds in CI; `CHORUS_SOAK_S=300 pytest -m faults -s tests/faults/test_soak.py` for
the five-minute run."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable

import grpc
import pytest

from chorus.launch.mesh import Mesh
from chorus.pb import task_pb2, task_pb2_grpc
from tests.support.soak import SOAK_S, SOAK_TIMEOUT, soak

pytestmark = pytest.mark.faults
@SOAK_TIMEOUT
async def test_soak(mesh: Mesh) -> None:
    counts, _, pending = await soak(mesh.router_target, SOAK_S)
    assert counts["sync ok"] == sum(v for k, v in counts.items() if k.startswith("sync"))
    assert not pending
