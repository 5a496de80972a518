"""Priority admission: at most `slots` jobs run at once; the rest wait in bounded queues, one
per priority class, and a freed slot goes to the best-ranked waiter.

Rank = class value (critical 1, normal 2, batch 3) minus waited time / `aging_s`, lowest
first: critical goes ahead of normal and batch, but a batch job that has waited 2 x aging_s
outranks a critical job that just arrived, so no class starves (aging, not weighted fair
share). A job whose deadline passes while it waits is dropped, never run. Used by the router
(tasks) and by each model service (inference calls).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from chorus.core.context import CallContext, Priority
from chorus.core.errors import DeadlineExceeded, ResourceExhausted

T = TypeVar("T")


@dataclass(order=True)
class _Waiter:
    rank_base: float
    seq: int
    priority: Priority = field(compare=False)
    enqueued: float = field(compare=False)
    granted: asyncio.Future[None] = field(compare=False)


class PriorityScheduler:
    def __init__(
        self,
        name: str,
        slots: int,
        max_queue: Mapping[Priority, int],
        *,
        aging_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.name = name
        self.slots = slots
        self.max_queue = dict(max_queue)
        self.aging_s = aging_s
        self.clock = clock
        self.running = 0
        self._waiting: list[_Waiter] = []
        self._depth = dict.fromkeys(Priority, 0)
        self._running_by = dict.fromkeys(Priority, 0)
        self._seq = itertools.count()

    def depth(self, priority: Priority) -> int:
        return self._depth[priority]

    def running_for(self, priority: Priority) -> int:
        return self._running_by[priority]

    async def run(self, ctx: CallContext, job: Callable[[], Awaitable[T]]) -> T:
        """Run `job` when a slot is free and it is this job's turn."""
        p = ctx.priority
        if self.running >= self.slots or self._waiting:
            limit = self.max_queue.get(p, 0)
            if self._depth[p] >= limit:
                raise ResourceExhausted(
                    f"{self.name}: queue '{p.label}' is full ({self._depth[p]} waiting, "
                    f"limit {limit}); retry later or raise the priority"
                )
            await self._wait(ctx)
        else:
            self.running += 1
        self._running_by[p] += 1
        try:
            return await job()
        finally:
            self._running_by[p] -= 1
            self._release()

    async def _wait(self, ctx: CallContext) -> None:
        now = self.clock()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # rank(t) = class - (t - enqueued) / aging_s; its order between two waiters does not
        # change with t, so class + enqueued / aging_s is a fixed heap key.
        key = int(ctx.priority) + now / self.aging_s
        w = _Waiter(key, next(self._seq), ctx.priority, now, fut)
        heapq.heappush(self._waiting, w)
        self._depth[ctx.priority] += 1
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=max(0.0, ctx.remaining_s()))
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted at the last moment: hand the slot on
            else:
                fut.cancel()
            waited = (self.clock() - now) * 1000
            raise DeadlineExceeded(
                f"task {ctx.task_id}: deadline passed after {waited:.0f} ms waiting in "
                f"{self.name}'s '{ctx.priority.label}' queue"
            ) from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()
            else:
                fut.cancel()
            raise
        finally:
            self._depth[ctx.priority] -= 1

    def resize(self, slots: int) -> None:
        """Run `slots` jobs at once from now on (a model service that loaded a version with
        more or fewer instances); waiters take new slots at once, running jobs finish."""
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        while self.running < self.slots and self._waiting:
            w = heapq.heappop(self._waiting)
            if w.granted.cancelled():
                continue
            self.running += 1
            w.granted.set_result(None)

    def _release(self) -> None:
        if self.running > self.slots:  # shrunk: this slot goes away
            self.running -= 1
            return
        while self._waiting:
            w = heapq.heappop(self._waiting)
            if w.granted.cancelled():
                continue
            w.granted.set_result(None)
            return  # the slot passes straight to the waiter
        self.running -= 1
