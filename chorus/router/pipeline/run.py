"""Running a pipeline: level by level, a level's stages at once, outputs fed on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from chorus.core.errors import ChorusError, InvalidArgument
from chorus.router.pipeline.graph import Pipeline
from chorus.router.pipeline.stage import Source, Stage

RunStage = Callable[[Stage, dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]
"""Runs one stage on its inputs (by stage input name) and returns its outputs by name."""


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run produced.

    `outputs`: the pipeline outputs by name. `stages`: each stage's outputs by stage name.
    `timings_ms`: each stage's wall time. `order`: the stages in the order they were started
    (level by level, spec order within a level).
    """

    outputs: Mapping[str, np.ndarray]
    stages: Mapping[str, Mapping[str, np.ndarray]]
    timings_ms: Mapping[str, float]
    order: tuple[str, ...]


async def run_pipeline(
    pipeline: Pipeline, inputs: Mapping[str, np.ndarray], run_stage: RunStage
) -> PipelineResult:
    """Runs the stages level by level, a level's stages concurrently, feeding outputs on.

    A failing stage ends the run: its siblings still running are cancelled, and its error
    propagates naming the stage (a ChorusError as the same class, message prefixed with the
    stage, the original as `__cause__`; any other exception with a note).
    """
    missing = [n for n in pipeline.inputs if n not in inputs]
    if missing:
        raise InvalidArgument(
            f"inputs: pipeline {pipeline.name!r} takes {list(pipeline.inputs)}, missing {missing}"
        )
    extra = sorted(set(inputs) - set(pipeline.inputs))
    if extra:
        raise InvalidArgument(
            f"inputs: {extra} taken by no stage of pipeline {pipeline.name!r} "
            f"(it takes {list(pipeline.inputs)})"
        )
    index = {s.name: i for i, s in enumerate(pipeline.stages)}
    results: dict[str, dict[str, np.ndarray]] = {}
    timings: dict[str, float] = {}
    order: list[str] = []

    async def one(stage: Stage) -> None:
        path = f"pipeline {pipeline.name!r}: stages[{index[stage.name]}].inputs"
        args = {
            k: _resolve(src, inputs, results, f"{path}.{k}") for k, src in stage.sources().items()
        }
        start = time.perf_counter()
        try:
            out = await run_stage(stage, args)
        except ChorusError as err:
            wrapped = _in_stage(err, stage.name)
            if wrapped is None:
                raise
            raise wrapped from err
        except Exception as err:
            err.add_note(f"in stage {stage.name!r} of pipeline {pipeline.name!r}")
            raise
        timings[stage.name] = (time.perf_counter() - start) * 1000
        results[stage.name] = dict(out)

    for level in pipeline.levels():
        order.extend(s.name for s in level)
        await _gather_or_cancel([one(s) for s in level])

    outputs = {
        key: _resolve(
            Source.parse(text), inputs, results, f"pipeline {pipeline.name!r}: outputs.{key}"
        )
        for key, text in pipeline.outputs.items()
    }
    return PipelineResult(
        outputs=MappingProxyType(outputs),
        stages=MappingProxyType({n: MappingProxyType(results[n]) for n in order}),
        timings_ms=MappingProxyType({n: timings[n] for n in order}),
        order=tuple(order),
    )


def _resolve(
    src: Source,
    inputs: Mapping[str, np.ndarray],
    results: Mapping[str, Mapping[str, np.ndarray]],
    path: str,
) -> np.ndarray:
    if src.stage is None:
        return inputs[src.name]
    out = results[src.stage]
    if src.name not in out:
        raise InvalidArgument(
            f"{path}: stage {src.stage!r} has no output {src.name!r} (it gave {sorted(out)})"
        )
    return out[src.name]


def _in_stage(err: ChorusError, stage: str) -> ChorusError | None:
    """The same error class, its message prefixed with the stage; None (and a note on `err`)
    for a subclass whose constructor takes more than a message."""
    try:
        return type(err)(f"stage {stage!r}: {err.message}")
    except TypeError:
        err.add_note(f"in stage {stage!r}")
        return None


async def _gather_or_cancel(coros: list[Awaitable[None]]) -> None:
    """asyncio.gather, but the first failure cancels the rest before propagating."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
