"""A pipeline's run: each stage's roster, checks and path, its outputs feeding the next."""

from __future__ import annotations

import numpy as np

from chorus.core.calls.clock import Clock
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext
from chorus.pb import task_pb2
from chorus.router.paths.base import Shared, StageTask
from chorus.router.paths.choose import Paths
from chorus.router.pipeline import Pipeline, Stage, run_pipeline
from chorus.router.reply import pipeline_response
from chorus.router.roster import Rosters
from chorus.router.validate import Limits


class PipelinePath:
    def __init__(self, rosters: Rosters, limits: Limits, paths: Paths, clock: Clock) -> None:
        self.rosters = rosters
        self.limits = limits
        self.paths = paths
        self.clock = clock

    async def run(
        self, req: task_pb2.SubmitRequest, pipeline: Pipeline, ctx: CallContext
    ) -> task_pb2.SubmitResponse:
        results: dict[str, task_pb2.StageResult] = {}
        shared: Shared = {}

        async def run_stage(stage: Stage, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            tensors = [to_tensor(n, a) for n, a in inputs.items()]
            roster = await self.rosters.live_roster(stage.capability, ctx)
            self.limits.check_inputs(tensors, roster)
            conflict = task_pb2.ConflictPolicy(**(stage.conflict or {}))
            start = self.clock.monotonic()
            task = StageTask(
                roster, tensors, stage.fusion_policy or "", conflict, task_pb2.Cascade(), ctx, {},
                shared,
            )  # fmt: skip
            done = await self.paths.choose(task).run(task)
            done.result.name = stage.name
            done.result.latency_ms = (self.clock.monotonic() - start) * 1000
            results[stage.name] = done.result
            return {t.name: from_tensor(t) for t in done.outputs}

        arrays = {t.name: from_tensor(t) for t in req.inputs}
        ran = await run_pipeline(pipeline, arrays, run_stage)
        return pipeline_response(pipeline, ctx, ran, results)
