"""Soak: mixed sync and async load on loopback for a bounded time, reporting throughput and
errors. Seconds in CI; for the five-minute run:
`CHORUS_SOAK_S=300 pytest -m faults -s tests/integration/faults/test_soak.py`."""

from __future__ import annotations

import pytest

from chorus.launch.mesh import Mesh
from tests.support.soak import SOAK_S, SOAK_TIMEOUT, soak

pytestmark = pytest.mark.faults


@SOAK_TIMEOUT
async def test_soak(mesh: Mesh) -> None:
    counts, _, pending = await soak(mesh.router_target, SOAK_S)
    assert counts["sync ok"] == sum(v for k, v in counts.items() if k.startswith("sync"))
    assert not pending
