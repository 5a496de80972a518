"""What the fuser keeps beyond one request: each task's member scores, until feedback comes
(a key-value bucket with a TTL), and the cases escalated to people (a JetStream stream, so
none is lost while no reviewer is connected)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from chorus.core.codec import from_tensor, to_tensor
from chorus.core.errors import InvalidArgument, NotFound
from chorus.core.jetstream import ensure_bucket, ensure_stream
from chorus.core.subjects import kv_key
from chorus.fuser.kinds import REGRESSION, as_scores
from chorus.pb import wire_pb2

TASKS_BUCKET = "chorus_fused_tasks"
TASKS_TTL_S = 24 * 3600
REVIEW_STREAM = "CHORUS_REVIEW"
REVIEW_SUBJECTS = "chorus.review.>"


def review_subject(capability: str) -> str:
    return "chorus.review." + re.sub(r"[\s.*>]", "_", capability)


class TaskRecords:
    def __init__(self, js: JetStreamContext, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        self._kv = await ensure_bucket(self.js, TASKS_BUCKET, self.replicas, ttl=TASKS_TTL_S)

    async def keep(
        self,
        call: wire_pb2.FuseCall,
        weights: dict[str, float],
        strategy: str,
        temperatures: dict[str, float],
        *,
        task_id: str = "",
        rows: slice | None = None,
    ) -> None:
        """The members' scores of a fused task (and the strategy that fused them), without
        its inputs, for later feedback; or, for a call joined into it, its `rows` under its
        own `task_id`."""
        assert self._kv is not None
        task_id = task_id or call.task_id
        record = wire_pb2.FuseCall(
            capability=call.capability, task_id=task_id, labels=call.labels, policy=strategy
        )
        for m in call.members:
            scores = m.probabilities
            if rows is not None:
                scores = to_tensor(scores.name, from_tensor(scores)[rows])
            record.members.add(
                model=m.model, version=m.version, probabilities=scores,
                weight=weights.get(m.model, m.weight), output_kind=m.output_kind,
                temperature=temperatures.get(m.model, m.temperature),
            )  # fmt: skip
        await self._kv.put(kv_key(task_id), record.SerializeToString())

    async def get(self, task_id: str) -> wire_pb2.FuseCall:
        """A kept task's members' scores; NotFound when unknown or expired."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(kv_key(task_id))
        except KeyNotFoundError:
            raise NotFound(
                f"task_id: no fused task {task_id!r} is kept (unknown, or older than "
                f"{TASKS_TTL_S // 3600} h)"
            ) from None
        return wire_pb2.FuseCall.FromString(entry.value or b"")


@dataclass(frozen=True)
class Feedback:
    """A kept task with its truth, checked: the rows the truth is for, and whether it is a
    regression (values) or a classification (labels)."""

    record: wire_pb2.FuseCall
    rows: list[int]
    truth: np.ndarray
    regression: bool


def feedback_for(
    record: wire_pb2.FuseCall,
    truth: list[int],
    rows: list[int] | None = None,
    values: list[float] | None = None,
) -> Feedback:
    regression = any(m.output_kind == REGRESSION for m in record.members)
    given = values if regression else truth
    field = "values" if regression else "labels"
    if not given:
        what = "the true value" if regression else "the true class"
        raise InvalidArgument(f"{field}: empty; this task needs {what} of every row")
    n = from_tensor(record.members[0].probabilities).shape[0] if record.members else 0
    if rows:
        if len(rows) != len(given) or any(not 0 <= r < n for r in rows):
            raise InvalidArgument(f"rows: expected {len(given)} row indices below {n}, got {rows}")
    elif len(given) != n:
        raise InvalidArgument(
            f"{field}: task {record.task_id} had {n} rows, got {len(given)} {field}"
        )
    return Feedback(record, list(rows or range(n)), np.asarray(given), regression)


def member_scores(fb: Feedback, temperature: float | None = None) -> dict[str, np.ndarray]:
    """Each member's scores on the feedback's rows, as the fuser read them (or at
    `temperature`, e.g. 1.0 for the untempered probabilities)."""
    out = {}
    for m in fb.record.members:
        t = temperature if temperature is not None else (m.temperature or 1.0)
        probs = as_scores(from_tensor(m.probabilities), m.output_kind, t, field=f"{m.model}.scores")
        out[m.model] = probs[fb.rows]
    return out


def losses(fb: Feedback) -> dict[str, float]:
    """Each member's loss in [0, 1]: its share of wrong rows, or for regression its mean
    absolute error over the worst member's, so the least accurate member loses most
    whatever the target's scale."""
    errors: dict[str, float] = {}
    for model, probs in member_scores(fb).items():
        if fb.regression:
            errors[model] = float(np.mean(np.abs(probs[:, 0] - fb.truth)))
            continue
        if any(not 0 <= t < probs.shape[1] for t in fb.truth):
            raise InvalidArgument(f"labels: expected class indices in [0, {probs.shape[1]})")
        errors[model] = float(np.mean(np.argmax(probs, axis=1) != fb.truth))
    if fb.regression:
        worst = max(errors.values()) or 1.0
        errors = {m: e / worst for m, e in errors.items()}
    return errors


class ReviewQueue:
    def __init__(self, js: JetStreamContext, replicas: int = 1) -> None:
        self.js = js
        self.replicas = replicas

    async def start(self) -> None:
        config = StreamConfig(name=REVIEW_STREAM, subjects=[REVIEW_SUBJECTS])
        await ensure_stream(self.js, config, self.replicas)

    async def publish(self, case: wire_pb2.ReviewCase) -> None:
        headers = {"Nats-Msg-Id": f"review-{case.task_id}"} if case.task_id else None
        await self.js.publish(
            review_subject(case.capability), case.SerializeToString(), headers=headers
        )
