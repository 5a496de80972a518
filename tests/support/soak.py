"""The soak's load, shared by the soak test and the cluster's fault tests: six sync clients
cycling priorities and an async submitter, for a bounded time."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable

import grpc
import pytest

from chorus.pb import task_pb2, task_pb2_grpc
from tests.support import request

SOAK_S = float(os.environ.get("CHORUS_SOAK_S", "5"))
SOAK_TIMEOUT = pytest.mark.timeout(SOAK_S + 180)
"""pytest's 120 s limit would cut a long soak short."""


async def soak(
    target: str, seconds: float, during: Awaitable[None] | None = None, label: str = "soak"
) -> tuple[Counter[str], list[str], set[str]]:
    """(counts, async task ids accepted, those never done) after `seconds` of six sync
    clients cycling priorities and one async submitter; `during` runs alongside (a fault)."""
    counts: Counter[str] = Counter()
    seen: dict[str, str] = {}
    """The first error of each code, with when it came, for the printed record."""
    start = time.monotonic()
    async_ids: list[str] = []
    stop = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as ch:
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
                    seen.setdefault(err.code().name, f"{time.monotonic() - start:.1f} s: "
                                    f"{err.details()}")  # fmt: skip
                i += 8

        async def async_worker() -> None:
            i = 0
            while time.monotonic() < stop:
                try:
                    r = await stub.SubmitAsync(
                        task_pb2.SubmitAsyncRequest(task=request(i), idempotency_key=f"s{i}"),
                        timeout=10,
                    )
                    async_ids.append(r.task_id)
                    i += 1
                except grpc.RpcError as err:  # refused, so never accepted; the same key again
                    counts[f"async refused {err.code().name}"] += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(
            *(sync_worker(w) for w in range(6)), async_worker(), during or asyncio.sleep(0)
        )
        deadline = time.monotonic() + 60
        pending = set(async_ids)
        while pending and time.monotonic() < deadline:
            for task_id in list(pending):
                try:
                    r = await stub.GetResult(task_pb2.GetResultRequest(task_id=task_id), timeout=5)
                except grpc.RpcError:
                    continue
                if r.status == task_pb2.TASK_STATUS_DONE:
                    pending.discard(task_id)
                    counts["async done"] += 1
            await asyncio.sleep(0.1)
        lost = {}
        for task_id in pending:
            try:
                r = await stub.GetResult(task_pb2.GetResultRequest(task_id=task_id), timeout=5)
                lost[task_id] = (task_pb2.TaskStatus.Name(r.status), r.attempts, r.error_code,
                                 r.error_message)  # fmt: skip
            except grpc.RpcError as err:
                lost[task_id] = (err.code().name, err.details())
    sync_total = sum(v for k, v in counts.items() if k.startswith("sync"))
    print(f"\n{label}, {seconds:.0f} s: {sync_total / seconds:.0f} sync tasks/s; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
          + f"; async accepted {len(async_ids)}, lost {len(pending)}"
          + "".join(f"\n  first {k} at {v}" for k, v in seen.items())
          + "".join(f"\n  lost {k}: {v}" for k, v in lost.items()))  # fmt: skip
    return counts, async_ids, pending
