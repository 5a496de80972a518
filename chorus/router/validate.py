"""What a task must be before the router takes it: deadline, pipeline, inputs, feedback.
Every refusal here is INVALID_ARGUMENT (or NOT_FOUND for an unknown pipeline)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chorus.core.codec import from_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import InvalidArgument, NotFound
from chorus.core.spec import check_tensor
from chorus.pb import task_pb2, tensor_pb2
from chorus.router.pipeline import Pipeline
from chorus.router.roster import Roster


@dataclass(frozen=True)
class Limits:
    """The router's bounds on one task."""

    default_budget_s: float
    max_rows: int
    max_tensor_elements: int = 1 << 22
    max_deadline_s: float = 3600.0

    def context(
        self, req: task_pb2.SubmitRequest, priority: Priority, grpc_remaining_s: float | None
    ) -> CallContext:
        """The task's context: its id and its deadline (the request's, the call's, or ours)."""
        if req.deadline_ms > self.max_deadline_s * 1000:
            raise InvalidArgument(
                f"deadline_ms: {req.deadline_ms} is beyond the router's limit of "
                f"{self.max_deadline_s * 1000:.0f} ms; use SubmitAsync for long work"
            )
        budget = req.deadline_ms / 1000 if req.deadline_ms else self.default_budget_s
        if grpc_remaining_s is not None:
            budget = min(budget, grpc_remaining_s)
        return CallContext.start(req.task_id or uuid.uuid4().hex, priority, budget)

    def check_inputs(self, inputs: Sequence[tensor_pb2.Tensor], roster: Roster) -> None:
        capability = roster.capability
        if not inputs:
            raise InvalidArgument("inputs: empty; send at least one input tensor")
        names = [t.name for t in inputs]
        for t in inputs:
            elements = math.prod(int(d) for d in t.shape)
            if elements > self.max_tensor_elements:
                raise InvalidArgument(
                    f"inputs[{t.name!r}]: shape {list(t.shape)} has {elements} elements; "
                    f"the router takes at most {self.max_tensor_elements}"
                )
        if len(set(names)) != len(names):
            raise InvalidArgument(f"inputs: duplicate tensor names in {names}")
        arrays = {t.name: from_tensor(t) for t in inputs}
        taken: set[str] = set()
        for hb in roster.first.values():
            expected = {s.name: s for s in hb.inputs}
            if not set(expected) <= set(arrays):
                raise InvalidArgument(
                    f"inputs: model {hb.model} of capability {capability!r} takes "
                    f"{sorted(expected)}, got {sorted(arrays)}"
                )
            for name, spec in expected.items():
                check_tensor(spec, arrays[name], field=f"inputs[{name!r}]")
            taken |= set(expected)
        unused = sorted(set(arrays) - taken)
        if unused:
            raise InvalidArgument(
                f"inputs: {unused} taken by no model of capability {capability!r} "
                f"(they take {sorted(taken)})"
            )
        rows = {a.shape[0] for a in arrays.values() if a.ndim}
        if len(rows) > 1:
            raise InvalidArgument(f"inputs: tensors disagree on the number of rows: {sorted(rows)}")
        if rows and max(rows) > self.max_rows:
            raise InvalidArgument(
                f"inputs: {max(rows)} rows exceed the router's max_rows of {self.max_rows}; "
                "split the task"
            )


def find_pipeline(pipelines: Mapping[str, Pipeline], req: task_pb2.SubmitRequest) -> Pipeline:
    pipeline = pipelines.get(req.pipeline)
    if pipeline is None:
        known = ", ".join(sorted(pipelines)) or "none"
        raise NotFound(f"pipeline: unknown pipeline {req.pipeline!r} (known: {known})")
    names = sorted(t.name for t in req.inputs)
    if names != sorted(pipeline.inputs):
        raise InvalidArgument(
            f"inputs: pipeline {pipeline.name!r} takes {sorted(pipeline.inputs)}, got {names}"
        )
    return pipeline


def needed_capabilities(
    pipelines: Mapping[str, Pipeline], req: task_pb2.SubmitRequest
) -> list[str]:
    """What a caller must be allowed to use for this task: its pipeline's stages, or its
    capability."""
    if req.pipeline and req.pipeline in pipelines:
        return [s.capability for s in pipelines[req.pipeline].stages]
    return [req.capability]


def check_cascade(cascade: task_pb2.Cascade, roster: Roster) -> None:
    if cascade.threshold and roster.regression:
        raise InvalidArgument(
            f"cascade: capability {roster.capability!r} is a regression; cascades stop on "
            "a classifier's confidence"
        )


def check_feedback(req: task_pb2.FeedbackRequest) -> None:
    if not req.task_id:
        raise InvalidArgument("task_id: empty; send the task_id a Submit returned")
    if not req.labels and not req.values:
        raise InvalidArgument(
            "labels: empty; send the true class of every row (or `values` for regression)"
        )
