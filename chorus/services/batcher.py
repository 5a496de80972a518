"""Dynamic batching: requests that arrive together for one model run as one ONNX Runtime
call, highest priority first.

A batch is cut when `max_batch` rows are waiting or `max_delay_s` has passed since its first
request arrived, whichever comes first (a delay under a millisecond: at once, with what is
queued); its outputs are split back by rows. Requests join a
batch only with others of the same trailing shape. With max_batch 1 this is a pass-through.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from chorus.core.spawner import cancel
from chorus.services.runtime import OnnxModel, Prediction, RunSettings

MIN_WAIT_S = 0.001
"""A delay shorter than this is not waited for: the event loop's timers cannot (uvloop's
resolution is a millisecond), and trying spins. Below it a batch takes what is queued when
its turn comes: the requests that arrived in the same turn of the loop (a co-hosted group's
tasks, whose members all start together)."""


@dataclass(order=True)
class _Pending:
    priority: int
    seq: int
    inputs: dict[str, np.ndarray] = field(compare=False)
    rows: int = field(compare=False)
    done: asyncio.Future[Prediction] = field(compare=False)

    @property
    def kind(self) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        return tuple((n, a.shape[1:], a.dtype.str) for n, a in sorted(self.inputs.items()))


class DynamicBatcher:
    def __init__(
        self,
        model: OnnxModel,
        *,
        max_batch: int = 1,
        max_delay_s: float = RunSettings().max_batch_delay_ms / 1000,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.on_batch = on_batch
        self._heap: list[_Pending] = []
        self._rows = 0
        self._arrived = asyncio.Event()
        self._seq = itertools.count()
        self._loop: asyncio.Task[None] | None = None
        self._running = 0
        """Batches running now; one at a time, unless batching is off."""

    async def infer(
        self, inputs: dict[str, np.ndarray], priority: int = 2, *, alone: bool = False
    ) -> Prediction:
        """`alone`: the caller knows no other request is coming to join this one (a group with
        one task in flight); with nothing queued or running either, it runs at once."""
        if self.max_batch <= 1 or (alone and self._idle()):
            self._running += 1
            try:
                prediction = await self.model.infer(inputs)
            finally:
                self._running -= 1
                if self._heap:
                    self._arrived.set()  # those that came meanwhile go next
            if self.on_batch is not None:
                self.on_batch(_rows(inputs))
            return prediction
        self.model.validate(inputs)
        if self._loop is None:
            self._loop = asyncio.create_task(
                self._run(), name=f"batcher-{self.model.manifest.name}"
            )
        done: asyncio.Future[Prediction] = asyncio.get_running_loop().create_future()
        item = _Pending(priority, next(self._seq), inputs, _rows(inputs), done)
        heapq.heappush(self._heap, item)
        self._rows += item.rows
        self._arrived.set()
        return await done

    async def close(self) -> None:
        await cancel(self._loop)
        self._loop = None

    async def _run(self) -> None:
        while True:
            while not self._heap:
                self._arrived.clear()
                await self._arrived.wait()
            cut_at = asyncio.get_running_loop().time() + self.max_delay_s
            while self._rows < self.max_batch and self.max_delay_s >= MIN_WAIT_S:
                left = cut_at - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
            while self._running:  # a lone request run at once, on a worker thread
                self._arrived.clear()
                await self._arrived.wait()
            self._running += 1
            try:
                await self._run_batch(self._take())
            finally:
                self._running -= 1

    def _idle(self) -> bool:
        return not self._heap and not self._running

    def _take(self) -> list[_Pending]:
        """Highest priority first, up to max_batch rows, all of one input shape."""
        first = heapq.heappop(self._heap)
        batch, rows, kind, skipped = [first], first.rows, first.kind, []
        while self._heap and rows < self.max_batch:
            item = heapq.heappop(self._heap)
            if item.kind == kind and rows + item.rows <= self.max_batch:
                batch.append(item)
                rows += item.rows
            else:
                skipped.append(item)
        for item in skipped:
            heapq.heappush(self._heap, item)
        self._rows -= rows
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        names = list(batch[0].inputs)
        joined = {n: np.concatenate([p.inputs[n] for p in batch]) for n in names}
        try:
            prediction = await self.model.infer(joined, checked=True)
        except Exception as exc:
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(exc)
            return
        if self.on_batch is not None:
            self.on_batch(sum(p.rows for p in batch))
        start = 0
        for p in batch:
            part = {k: v[start : start + p.rows] for k, v in prediction.outputs.items()}
            start += p.rows
            if not p.done.done():
                p.done.set_result(Prediction(part, prediction.compute_ms))


def _rows(inputs: dict[str, np.ndarray]) -> int:
    return int(next(iter(inputs.values())).shape[0])
