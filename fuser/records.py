"""What the fuser keeps beyond one request: each task's member scores, until feedback comes
(a key-value bucket with a TTL), and the cases escalated to people (a JetStream stream, so
none is lost while no reviewer is connected)."""

from __future__ import annotations

import re

import numpy as np
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from chorus.codec import from_tensor
from chorus.errors import InvalidArgument, NotFound
from chorus.pb import wire_pb2
from chorus.subjects import kv_key
from fuser.kinds import REGRESSION, as_scores

TASKS_BUCKET = "chorus_fused_tasks"
TASKS_TTL_S = 24 * 3600
REVIEW_STREAM = "CHORUS_REVIEW"
REVIEW_SUBJECTS = "chorus.review.>"


def review_subject(capability: str) -> str:
    return "chorus.review." + re.sub(r"[\s.*>]", "_", capability)


class TaskRecords:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        self._kv = await self.js.create_key_value(bucket=TASKS_BUCKET, ttl=TASKS_TTL_S)

    async def keep(self, call: wire_pb2.FuseCall, weights: dict[str, float]) -> None:
        """The members' scores of a fused task, without its inputs, for later feedback."""
        assert self._kv is not None
        record = wire_pb2.FuseCall(
            capability=call.capability, task_id=call.task_id, labels=call.labels
        )
        for m in call.members:
            record.members.add(
                model=m.model, version=m.version, probabilities=m.probabilities,
                weight=weights.get(m.model, m.weight), output_kind=m.output_kind,
                temperature=m.temperature,
            )  # fmt: skip
        await self._kv.put(kv_key(call.task_id), record.SerializeToString())

    async def losses(
        self,
        task_id: str,
        truth: list[int],
        rows: list[int] | None = None,
        values: list[float] | None = None,
    ) -> tuple[str, dict[str, float]]:
        """(capability, each member's loss in [0, 1] on `rows`) for a kept task: its share
        of wrong rows, or for regression (`values`) its mean absolute error over the worst
        member's, so the least accurate member loses most whatever the target's scale."""
        assert self._kv is not None
        try:
            entry = await self._kv.get(kv_key(task_id))
        except KeyNotFoundError:
            raise NotFound(
                f"task_id: no fused task {task_id!r} is kept (unknown, or older than "
                f"{TASKS_TTL_S // 3600} h)"
            ) from None
        record = wire_pb2.FuseCall.FromString(entry.value or b"")
        regression = any(m.output_kind == REGRESSION for m in record.members)
        given = values if regression else truth
        field = "values" if regression else "labels"
        if not given:
            what = "the true value" if regression else "the true class"
            raise InvalidArgument(f"{field}: empty; this task needs {what} of every row")
        errors: dict[str, float] = {}
        for m in record.members:
            where = f"{m.model}.scores"
            probs = as_scores(from_tensor(m.probabilities), m.output_kind, m.temperature or 1.0,
                              field=where)  # fmt: skip
            if rows:
                if len(rows) != len(given) or any(not 0 <= r < probs.shape[0] for r in rows):
                    raise InvalidArgument(
                        f"rows: expected {len(given)} row indices below {probs.shape[0]}, "
                        f"got {rows}"
                    )
                probs = probs[rows]
            if len(given) != probs.shape[0]:
                raise InvalidArgument(
                    f"{field}: task {task_id} had {probs.shape[0]} rows, got {len(given)} {field}"
                )
            if regression:
                errors[m.model] = float(np.mean(np.abs(probs[:, 0] - np.asarray(given))))
                continue
            if any(not 0 <= t < probs.shape[1] for t in truth):
                raise InvalidArgument(f"labels: expected class indices in [0, {probs.shape[1]})")
            errors[m.model] = float(np.mean(np.argmax(probs, axis=1) != np.asarray(truth)))
        if regression:
            worst = max(errors.values()) or 1.0
            errors = {m: e / worst for m, e in errors.items()}
        return record.capability, errors


class ReviewQueue:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def start(self) -> None:
        await self.js.add_stream(StreamConfig(name=REVIEW_STREAM, subjects=[REVIEW_SUBJECTS]))

    async def publish(self, case: wire_pb2.ReviewCase) -> None:
        headers = {"Nats-Msg-Id": f"review-{case.task_id}"} if case.task_id else None
        await self.js.publish(
            review_subject(case.capability), case.SerializeToString(), headers=headers
        )
