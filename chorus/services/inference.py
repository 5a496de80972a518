"""One replica's way to run a request, whichever transport brought it (NATS from the mesh,
KServe v2 gRPC from anyone else): both queue in the same priority scheduler, count in the same
in-flight total and feed the same service-time average, so the load a heartbeat reports, and
the router routes by, includes every caller."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from chorus.core.context import CallContext
from chorus.core.scheduler import PriorityScheduler
from chorus.services.augment import infer_augmented
from chorus.services.lifecycle import Loaded
from chorus.services.metrics import ModelMetrics
from chorus.services.runtime import Prediction

EWMA_WEIGHT = 0.2
"""The newest request's share of the smoothed time a request holds a slot (ewma_ms, sent in
heartbeats for the router's replica choice): about the last five requests count."""


class InferenceCore:
    def __init__(self, name: str, metrics: ModelMetrics, scheduler: PriorityScheduler) -> None:
        self.name = name
        self.metrics = metrics
        self.scheduler = scheduler
        self.in_flight = 0
        """Tasks being served now; a joined call counts each task it carries."""
        self.ewma_ms = 0.0
        """Smoothed time from a call's turn in the scheduler to its answer."""

    @contextmanager
    def serving(self, tasks: int = 1) -> Iterator[None]:
        """Counts `tasks` in flight for as long as a request is handled, error or not."""
        self.in_flight += tasks
        self.metrics.serving(tasks)
        try:
            yield
        finally:
            self.in_flight -= tasks
            self.metrics.serving(-tasks)

    async def run(
        self,
        ctx: CallContext,
        loaded: Loaded,
        inputs: dict[str, np.ndarray],
        *,
        augment: bool = False,
        alone: bool = False,
    ) -> Prediction:
        """Waits its turn by the context's priority and deadline, then infers (batched with
        concurrent requests unless test-time augmentation is asked for; `alone`: the caller
        knows none is coming, so an idle batcher runs it at once)."""
        return await self.scheduler.run(
            ctx, lambda: self._timed(ctx, loaded, inputs, augment, alone)
        )

    async def _timed(
        self,
        ctx: CallContext,
        loaded: Loaded,
        inputs: dict[str, np.ndarray],
        augment: bool,
        alone: bool,
    ) -> Prediction:
        start = time.perf_counter()
        try:
            if augment:
                return await infer_augmented(loaded.model, inputs)
            return await loaded.batcher.infer(inputs, int(ctx.priority), alone=alone)
        finally:
            ms = (time.perf_counter() - start) * 1000
            old = self.ewma_ms
            self.ewma_ms = ms if old == 0 else (1 - EWMA_WEIGHT) * old + EWMA_WEIGHT * ms
