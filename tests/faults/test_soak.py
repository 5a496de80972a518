"""Soak: mixed sync and async load on loopback for a bounded time, reporting throughput and
errors. Seconds in CI; `CHORUS_SOAK_S=300 pytest -m faults -s tests/faults/test_soak.py` for
the five-minute run."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import grpc
import pytest

from chorus.mesh import Mesh
from chorus.pb import task_pb2, task_pb2_grpc
from tests.test_router import request

pytestmark = pytest.mark.faults
SOAK_S = float(os.environ.get("CHORUS_SOAK_S", "5"))


async def test_soak(mesh: Mesh) -> None:
    counts: Counter[str] = Counter()
    async_ids: list[str] = []
    stop = time.monotonic() + SOAK_S
    async with grpc.aio.insecure_channel(mesh.router_target) as ch:
        stub = task_pb2_grpc.TaskServiceStub(ch)

        async def sync_worker(w: int) -> None:
            i = w
            while time.monotonic() < stop:
                prio = (
                    task_pb2.PRIORITY_CRITICAL,
                    task_pb2.PRIORITY_NORMAL,
                    task_pb2.PRIORITY_BATCH,
                )[i % 3]
                try:
                    await stub.Submit(request(i, priority=prio), timeout=10)
                    counts["sync ok"] += 1
                except grpc.RpcError as err:
                    counts[f"sync {err.code().name}"] += 1
                i += 8

        async def async_worker() -> None:
            i = 0
            while time.monotonic() < stop:
                r = await stub.SubmitAsync(task_pb2.SubmitAsyncRequest(task=request(i)), timeout=10)
                async_ids.append(r.task_id)
                i += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(*(sync_worker(w) for w in range(6)), async_worker())
        deadline = time.monotonic() + 60
        pending = set(async_ids)
        while pending and time.monotonic() < deadline:
            for task_id in list(pending):
                r = await stub.GetResult(task_pb2.GetResultRequest(task_id=task_id), timeout=5)
                if r.status == task_pb2.TASK_STATUS_DONE:
                    pending.discard(task_id)
                    counts["async done"] += 1
            await asyncio.sleep(0.1)
    sync_total = sum(v for k, v in counts.items() if k.startswith("sync"))
    print(f"\nsoak {SOAK_S:.0f} s: {sync_total / SOAK_S:.0f} sync tasks/s; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; async accepted {len(async_ids)}, lost {len(pending)}")  # fmt: skip
    assert counts["sync ok"] == sync_total
    assert not pending
