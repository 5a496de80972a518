"""Concurrent calls to a group's KServe model, asked alike, share one task.

Triton's dynamic batcher joins the requests waiting for an ensemble's models; a group does it
one step earlier, for the whole task. A lone call goes at once, so nothing waits on a timer.
While a call is running, the next calls with the same key (the caller's: parameters and input
signature) wait, and when it ends the waiting ones go as one task, their rows joined (up to
`max_rows`), each answered with its own rows of the fused reply. Members, fuse, messages and
event-loop turns are then paid per joined task instead of per call, as the router's
Coalescer does for its calls to a model over NATS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from chorus.core.spawner import Spawner

R = TypeVar("R")


@dataclass(frozen=True)
class Part:
    """One call's share of a task: the id it is answered under and its rows [start, stop)."""

    tag: str
    start: int
    stop: int


Run = Callable[[Hashable, dict[str, np.ndarray], list[Part], float], Awaitable[R]]
"""run(key, inputs, parts, budget_s): one task on the joined inputs, the calls' rows in
`parts` order, within the longest budget among them (each call's own deadline still ends
that call)."""


@dataclass
class _Waiting(Generic[R]):
    tag: str
    arrays: dict[str, np.ndarray]
    rows: int
    budget_s: float
    done: asyncio.Future[tuple[R, Part]]


@dataclass
class _Lane(Generic[R]):
    waiting: list[_Waiting[R]] = field(default_factory=list)


class Joiner(Generic[R]):
    def __init__(self, run: Run[R], *, max_rows: int = 256) -> None:
        self._run = run
        self.max_rows = max_rows
        self._lanes: dict[Hashable, _Lane[R]] = {}
        self._work = Spawner()
        self.runs = 0
        """Tasks run, lone or joined: calls answered / runs is the gain."""

    async def ask(
        self, key: Hashable, tag: str, arrays: dict[str, np.ndarray], budget_s: float
    ) -> tuple[R, Part]:
        """The task's result and this call's part of it. `key` must tell apart calls whose
        inputs cannot be joined (names, datatypes, all but the first dimension)."""
        rows = int(next(iter(arrays.values())).shape[0])
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = lane = _Lane()
            part = Part(tag, 0, rows)
            try:
                self.runs += 1
                return await self._run(key, arrays, [part], budget_s), part
            finally:
                self._next(key, lane)
        done: asyncio.Future[tuple[R, Part]] = asyncio.get_running_loop().create_future()
        lane.waiting.append(_Waiting(tag, arrays, rows, budget_s, done))
        return await done

    def _next(self, key: Hashable, lane: _Lane[R]) -> None:
        waiting = [w for w in lane.waiting if not w.done.done()]  # callers gone are dropped
        if not waiting:
            del self._lanes[key]
            return
        batch: list[_Waiting[R]] = []
        rows = 0
        for w in waiting:
            if batch and rows + w.rows > self.max_rows:
                break
            batch.append(w)
            rows += w.rows
        lane.waiting = waiting[len(batch) :]
        self._work.spawn(self._joined(key, lane, batch), name="joined-task")

    async def _joined(self, key: Hashable, lane: _Lane[R], batch: list[_Waiting[R]]) -> None:
        parts, start = [], 0
        for w in batch:
            parts.append(Part(w.tag, start, start + w.rows))
            start += w.rows
        try:
            names = list(batch[0].arrays)
            joined = {n: np.concatenate([w.arrays[n] for w in batch]) for n in names}
            self.runs += 1
            result = await self._run(key, joined, parts, max(w.budget_s for w in batch))
        except Exception as exc:
            for w in batch:
                if not w.done.done():
                    w.done.set_exception(exc)
        else:
            for w, part in zip(batch, parts, strict=True):
                if not w.done.done():
                    w.done.set_result((result, part))
        finally:
            for w in batch:  # the run was cancelled: so are its calls
                w.done.cancel()
            self._next(key, lane)

    async def close(self) -> None:
        await self._work.close()
