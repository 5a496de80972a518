"""Priority admission with aging, on a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from chorus.core.context import CallContext, Priority
from chorus.core.errors import DeadlineExceeded, ResourceExhausted
from chorus.core.scheduler import PriorityScheduler

LIMITS = {Priority.CRITICAL: 2, Priority.NORMAL: 2, Priority.BATCH: 2}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ctx(p: Priority, name: str, budget: float = 10.0) -> CallContext:
    return CallContext.start(name, p, budget)


HOLDERS: set[asyncio.Task[None]] = set()


async def _occupy(s: PriorityScheduler) -> asyncio.Event:
    """Hold the only slot until the returned event is set."""
    release = asyncio.Event()
    started = asyncio.Event()

    async def hold() -> None:
        started.set()
        await release.wait()

    holder = asyncio.create_task(s.run(ctx(Priority.NORMAL, "holder"), hold))
    HOLDERS.add(holder)
    holder.add_done_callback(HOLDERS.discard)
    await started.wait()
    return release


async def test_higher_class_goes_first_and_order_is_kept_within_a_class() -> None:
    s = PriorityScheduler("test", 1, {p: 10 for p in Priority}, clock=Clock())
    release = await _occupy(s)
    order: list[str] = []

    async def job(name: str) -> None:
        order.append(name)

    tasks = [
        asyncio.create_task(s.run(ctx(p, n), lambda n=n: job(n)))
        for p, n in [(Priority.BATCH, "b1"), (Priority.NORMAL, "n1"), (Priority.CRITICAL, "c1"),
                     (Priority.NORMAL, "n2"), (Priority.CRITICAL, "c2")]
    ]  # fmt: skip
    await asyncio.sleep(0)
    assert s.depth(Priority.NORMAL) == 2 and s.depth(Priority.CRITICAL) == 2
    release.set()
    await asyncio.gather(*tasks)
    assert order == ["c1", "c2", "n1", "n2", "b1"]
    assert s.running == 0


async def test_aging_lets_a_long_waiting_batch_job_pass_a_fresh_critical_one() -> None:
    clock = Clock()
    s = PriorityScheduler("test", 1, {p: 10 for p in Priority}, aging_s=2.0, clock=clock)
    release = await _occupy(s)
    order: list[str] = []

    async def job(name: str) -> None:
        order.append(name)

    old = asyncio.create_task(s.run(ctx(Priority.BATCH, "old-batch"), lambda: job("old-batch")))
    await asyncio.sleep(0)
    clock.now += 5.0  # waited 5 s: rank 3 - 2.5 = 0.5 beats a fresh critical's 1
    fresh = asyncio.create_task(s.run(ctx(Priority.CRITICAL, "fresh"), lambda: job("fresh")))
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(old, fresh)
    assert order == ["old-batch", "fresh"]


async def test_full_queue_names_the_queue() -> None:
    s = PriorityScheduler("model mlp", 1, LIMITS, clock=Clock())
    release = await _occupy(s)
    blockers = [asyncio.create_task(s.run(ctx(Priority.BATCH, f"b{i}"), _noop)) for i in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match=r"model mlp: queue 'batch' is full \(2 waiting"):
        await s.run(ctx(Priority.BATCH, "one-too-many"), _noop)
    # other classes still get in
    critical = asyncio.create_task(s.run(ctx(Priority.CRITICAL, "c"), _noop))
    release.set()
    await asyncio.gather(*blockers, critical)


async def test_a_job_whose_deadline_passes_in_the_queue_is_dropped_not_run() -> None:
    s = PriorityScheduler("router", 1, LIMITS)
    release = await _occupy(s)
    ran = False

    async def job() -> None:
        nonlocal ran
        ran = True

    with pytest.raises(
        DeadlineExceeded,
        match=r"task late: deadline passed after \d+ ms waiting in router's 'normal' queue",
    ):
        await s.run(ctx(Priority.NORMAL, "late", budget=0.05), job)
    assert not ran
    release.set()
    await asyncio.sleep(0.01)
    assert s.running == 0 and s.depth(Priority.NORMAL) == 0


async def _noop() -> None:
    await asyncio.sleep(0)


async def test_resizing_up_lets_waiters_in_and_down_lets_running_jobs_finish() -> None:
    s = PriorityScheduler("model m", 1, dict.fromkeys(Priority, 8))
    release = await _occupy(s)
    started: list[str] = []
    gate = asyncio.Event()

    async def job(name: str) -> None:
        started.append(name)
        await gate.wait()

    waiters = [
        asyncio.create_task(s.run(ctx(Priority.NORMAL, n), lambda n=n: job(n))) for n in "ab"
    ]
    await asyncio.sleep(0.01)
    assert started == [] and s.depth(Priority.NORMAL) == 2
    s.resize(3)
    await asyncio.sleep(0.01)
    assert started == ["a", "b"] and s.running == 3

    s.resize(1)
    late = asyncio.create_task(s.run(ctx(Priority.NORMAL, "c"), lambda: job("c")))
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.gather(*waiters)
    release.set()
    await late
    assert started == ["a", "b", "c"] and s.running == 0
    with pytest.raises(ValueError, match="slots must be >= 1"):
        s.resize(0)
