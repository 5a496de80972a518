"""What a task answers: a stage's outputs, members and explanation, and the SubmitResponse
built from them (one stage, a cascade, or a pipeline's stages)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chorus.core.codec import to_tensor
from chorus.core.context import CallContext
from chorus.pb import task_pb2, tensor_pb2, wire_pb2
from chorus.router.cascade import CascadeResult
from chorus.router.dispatch import FanOut
from chorus.router.pipeline import Pipeline, PipelineResult
from chorus.router.roster import Roster


@dataclass
class StageDone:
    result: task_pb2.StageResult
    labels: Sequence[str]
    depth: list[int] | None = None

    @property
    def outputs(self) -> Sequence[tensor_pb2.Tensor]:
        return self.result.outputs


def stage_done(roster: Roster, fan: FanOut, fused: wire_pb2.FuseReply) -> StageDone:
    """A fused stage: the fuser's labels (or values) and scores, why, and each member's say."""
    result = task_pb2.StageResult(capability=roster.capability)
    if roster.regression:
        result.outputs.append(_value(fused.probabilities))
    else:
        labels = np.array([r.label for r in fused.rows], dtype=np.int64)
        result.outputs.add(name="label", datatype="INT64", shape=labels.shape, raw=labels.tobytes())
        result.outputs.append(fused.probabilities)
    result.explanation.CopyFrom(
        task_pb2.Explanation(
            policy=fused.policy,
            members=list(fan.replies),
            missing={m: e.message for m, e in fan.errors.items()},
            rows=fused.rows,
            weights=fused.weights,
            conflict_policy=fused.conflict_policy,
            temperatures=fused.temperatures,
            coverage=fused.coverage,
            calibration_rows=fused.calibration_rows,
        )
    )
    for model, reply in fan.replies.items():
        result.members.add(
            model=model,
            version=reply.version,
            replica=reply.replica,
            outputs=reply.outputs,
            latency_ms=fan.latency_ms[model],
        )
    return StageDone(result, () if roster.regression else roster.labels)


def cascade_done(
    roster: Roster,
    done: CascadeResult,
    threshold: float,
    last: Mapping[int, task_pb2.RowDecision],
    probs: Mapping[int, bytes],
    rows: int,
) -> StageDone:
    """A cascade's stage: each row's decision from the last step that asked about it."""
    classes = len(roster.labels)
    result = task_pb2.StageResult(capability=roster.capability)
    labels = np.asarray(done.labels, dtype=np.int64)
    result.outputs.add(name="label", datatype="INT64", shape=labels.shape, raw=labels.tobytes())
    result.outputs.add(
        name="probabilities", datatype="FP32", shape=[rows, classes],
        raw=b"".join(probs[r] for r in range(rows)),
    )  # fmt: skip
    steps = "; ".join(f"{len(s.rows_asked)} rows to {list(s.members)}" for s in done.steps)
    result.explanation.CopyFrom(
        task_pb2.Explanation(
            policy=f"cascade at {threshold:g}: {steps}",
            members=list(done.members),
            rows=[last[r] for r in range(rows)],
        )
    )
    return StageDone(result, roster.labels, [int(d) for d in done.depth])


def submit_response(
    req: task_pb2.SubmitRequest, ctx: CallContext, stage: StageDone
) -> task_pb2.SubmitResponse:
    return task_pb2.SubmitResponse(
        task_id=ctx.task_id,
        capability=req.capability,
        outputs=stage.outputs,
        labels=stage.labels,
        members=stage.result.members,
        explanation=stage.result.explanation,
        cascade_depth=stage.depth,
    )


def pipeline_response(
    pipeline: Pipeline,
    ctx: CallContext,
    ran: PipelineResult,
    results: Mapping[str, task_pb2.StageResult],
) -> task_pb2.SubmitResponse:
    return task_pb2.SubmitResponse(
        task_id=ctx.task_id,
        capability=f"pipeline:{pipeline.name}",
        outputs=[to_tensor(n, np.asarray(a)) for n, a in ran.outputs.items()],
        stages=[results[name] for name in ran.order],
        explanation=task_pb2.Explanation(policy=f"pipeline {pipeline.name}"),
    )


def _value(fused: tensor_pb2.Tensor) -> tensor_pb2.Tensor:
    """The fused regression values as "value": [rows] when one value a row, else [rows, k]."""
    shape = list(fused.shape)
    if len(shape) == 2 and shape[1] == 1:
        shape = shape[:1]
    return tensor_pb2.Tensor(name="value", datatype=fused.datatype, shape=shape, raw=fused.raw)
