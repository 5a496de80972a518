"""What the client takes and gives, numpy in and out: the task as a frozen value with
`to_proto`, and the router's answers decoded (`TaskResult`, `TaskState`, `Accepted`,
`Learned`, `Streamed`). The protobuf each came from stays reachable (`.response`, `.raw`) for
fields the types do not lift."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from chorus.client.errors import InvalidArgument, TaskError, error_for
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import Priority
from chorus.core.errors import ChorusError
from chorus.pb import task_pb2

Inputs = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Conflict:
    """How rows the members disagree on are settled (task.proto ConflictPolicy): `name` is
    "none", "quorum", "negotiate", "arbiter", "escalate" or "conformal"; the other fields are
    that policy's settings, 0/empty meaning the router's default."""

    name: str
    quorum: int = 0
    max_rounds: int = 0
    concede_below: float = 0.0
    arbiter: str = ""
    coverage: float = 0.0
    then: str = ""

    def to_proto(self) -> task_pb2.ConflictPolicy:
        return task_pb2.ConflictPolicy(
            name=self.name,
            quorum=self.quorum,
            max_rounds=self.max_rounds,
            concede_below=self.concede_below,
            arbiter=self.arbiter,
            coverage=self.coverage,
            then=self.then,
        )


@dataclass(frozen=True)
class Cascade:
    """Ask the cheapest members first, more only for rows whose fused confidence stays below
    `threshold`; `steps` is how many members each step uses (default 1, 2, ... all)."""

    threshold: float
    steps: tuple[int, ...] = ()

    def to_proto(self) -> task_pb2.Cascade:
        return task_pb2.Cascade(threshold=self.threshold, steps=list(self.steps))


@dataclass(frozen=True)
class Task:
    """One task: `inputs` by name (first dimension = rows) to a `capability`, or to a named
    `pipeline`. Everything else is optional and defaults to the router's choice."""

    capability: str = ""
    inputs: Inputs = field(default_factory=dict)
    priority: Priority | str = Priority.NORMAL
    deadline_ms: int = 0
    policy: str = ""
    """Fusion strategy ("soft_vote", "weighted_mean", ...); empty: the capability's."""
    task_id: str = ""
    """Your id for the task (feedback and results use it); the router makes one when empty."""
    conflict: Conflict | str | None = None
    pipeline: str = ""
    cascade: Cascade | None = None

    def to_proto(self) -> task_pb2.SubmitRequest:
        # What only the router can judge (the capability, the inputs' names and shapes) it
        # judges, in one set of words; the client refuses only what protobuf cannot carry.
        if self.deadline_ms < 0:
            raise InvalidArgument(f"task: deadline_ms must be 0 or more, got {self.deadline_ms}")
        try:
            priority = Priority.parse(self.priority, "task: priority")
        except ChorusError as err:
            raise InvalidArgument(err.message) from None
        request = task_pb2.SubmitRequest(
            capability=self.capability,
            inputs=[to_tensor(name, np.asarray(a)) for name, a in self.inputs.items()],
            priority=int(priority),  # type: ignore[arg-type]
            deadline_ms=self.deadline_ms,
            fusion_policy=self.policy,
            task_id=self.task_id,
            pipeline=self.pipeline,
        )
        if self.conflict is not None:
            conflict = Conflict(self.conflict) if isinstance(self.conflict, str) else self.conflict
            request.conflict.CopyFrom(conflict.to_proto())
        if self.cascade is not None:
            request.cascade.CopyFrom(self.cascade.to_proto())
        return request


def submit_request(
    capability: str,
    inputs: Inputs,
    priority: Priority | str = Priority.NORMAL,
    deadline_ms: int = 0,
    policy: str = "",
    **more: object,
) -> task_pb2.SubmitRequest:
    """The SubmitRequest for a task (what `Task(...).to_proto()` gives), for callers that send
    protobufs themselves."""
    return Task(capability, inputs, priority, deadline_ms, policy, **more).to_proto()  # type: ignore[arg-type]


@dataclass(frozen=True)
class TaskResult:
    """The fused outputs by name: "label" and "probabilities" for a classification,
    "value" for a regression; each member's own outputs as it produced them."""

    outputs: dict[str, np.ndarray]
    members: dict[str, dict[str, np.ndarray]]
    response: task_pb2.SubmitResponse

    @property
    def task_id(self) -> str:
        return self.response.task_id

    @property
    def explanation(self) -> task_pb2.Explanation:
        return self.response.explanation

    @property
    def labels(self) -> np.ndarray:
        return self._output("label")

    @property
    def probabilities(self) -> np.ndarray:
        return self._output("probabilities")

    @property
    def value(self) -> np.ndarray:
        return self._output("value")

    @property
    def label_names(self) -> list[str]:
        """The class names, in the order of the probability columns."""
        return list(self.response.labels)

    @property
    def weights(self) -> dict[str, float]:
        """Each member's weight as this task used it."""
        return dict(self.response.explanation.weights)

    def _output(self, name: str) -> np.ndarray:
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(
                f"the task's answer has no {name!r} output (it has {sorted(self.outputs)})"
            ) from None


def decode(response: task_pb2.SubmitResponse) -> TaskResult:
    outputs = {t.name: from_tensor(t) for t in response.outputs}
    members = {m.model: {t.name: from_tensor(t) for t in m.outputs} for m in response.members}
    return TaskResult(outputs, members, response)


class State(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    UNKNOWN = "unknown"


_STATES = {
    task_pb2.TASK_STATUS_PENDING: State.PENDING,
    task_pb2.TASK_STATUS_RUNNING: State.RUNNING,
    task_pb2.TASK_STATUS_DONE: State.DONE,
    task_pb2.TASK_STATUS_FAILED: State.FAILED,
}


@dataclass(frozen=True)
class TaskState:
    """An async task as the router holds it: its state, the result once done, the error
    once failed, and how many deliveries it took (more than 1 after a router died)."""

    task_id: str
    state: State
    result: TaskResult | None
    error: TaskError | None
    attempts: int
    raw: task_pb2.TaskResult

    @property
    def finished(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    def unwrap(self) -> TaskResult:
        """The result; the task's error (its own family member) if it failed, and
        FailedPrecondition if it has not finished."""
        if self.result is not None:
            return self.result
        if self.error is not None:
            raise self.error
        raise error_for("FAILED_PRECONDITION", f"task is {self.state}", task_id=self.task_id)


def decode_state(raw: task_pb2.TaskResult) -> TaskState:
    state = _STATES.get(raw.status, State.UNKNOWN)
    result = decode(raw.response) if state is State.DONE else None
    error = (
        error_for(raw.error_code, raw.error_message, task_id=raw.task_id)
        if state is State.FAILED
        else None
    )
    return TaskState(raw.task_id, state, result, error, raw.attempts, raw)


def finished_result(raw: task_pb2.TaskResult) -> TaskResult:
    """The last state a watch saw, as its result; the error if the task failed; Unavailable
    if the watch ended before the task finished."""
    state = decode_state(raw)
    if not state.finished:
        raise error_for(
            "UNAVAILABLE",
            f"the watch ended with the task {state.state}; get or watch it again",
            task_id=state.task_id,
        )
    return state.unwrap()


@dataclass(frozen=True)
class Accepted:
    """A task SubmitAsync stored: its id, and whether this idempotency key was seen before
    (then the id is the first submission's and nothing new runs)."""

    task_id: str
    duplicate: bool


@dataclass(frozen=True)
class Learned:
    """The members' weights for a capability after the router learned from feedback."""

    capability: str
    weights: dict[str, float]


@dataclass(frozen=True)
class Streamed:
    """One task's answer on a SubmitStream: the result, or the error it alone met."""

    task_id: str
    result: TaskResult | None
    error: TaskError | None

    @property
    def ok(self) -> bool:
        return self.error is None


def decode_streamed(raw: task_pb2.StreamedResult) -> Streamed:
    if raw.error_code:
        return Streamed(
            raw.task_id, None, error_for(raw.error_code, raw.error_message, task_id=raw.task_id)
        )
    return Streamed(raw.task_id, decode(raw.response), None)


def as_request(task: Task | task_pb2.SubmitRequest) -> task_pb2.SubmitRequest:
    return task if isinstance(task, task_pb2.SubmitRequest) else task.to_proto()


def int_list(name: str, given: Sequence[int] | np.ndarray | None) -> list[int]:
    """Integers for a repeated proto field, or InvalidArgument naming the field."""
    if given is None:
        return []
    array = np.asarray(given)
    if array.ndim > 1 or (array.size and array.dtype.kind not in "iub"):
        raise InvalidArgument(
            f"{name}: expected a list of integers, got {array.dtype} of shape {array.shape}"
        )
    return [int(v) for v in array.reshape(-1)]


def float_list(name: str, given: Sequence[float] | np.ndarray | None) -> list[float]:
    if given is None:
        return []
    array = np.asarray(given)
    if array.ndim > 1 or (array.size and array.dtype.kind not in "iuf"):
        raise InvalidArgument(
            f"{name}: expected a list of numbers, got {array.dtype} of shape {array.shape}"
        )
    return [float(v) for v in array.reshape(-1)]
