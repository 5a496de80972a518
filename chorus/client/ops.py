"""The task API, defined once: each public function here turns typed arguments into an `Op`,
a description of one gRPC call (which method, the request, how to decode the answer, the
call's deadline, metadata and compression) that performs no I/O.

`TaskClient` runs an Op on a blocking channel and `AsyncTaskClient` on a grpc.aio channel
(`client.blocking` / `client.aio`); both take their methods from these functions, so a new
RPC or request field is added here, once, and the two clients cannot drift apart. Each
function names its RPC (`rpc`), which is how tests/unit/client/test_coverage.py checks that
every method of the TaskService descriptor has a client method.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, TypeVar

import grpc
import numpy as np

from chorus.client.errors import InvalidArgument
from chorus.client.types import (
    Accepted,
    Cascade,
    Conflict,
    Inputs,
    Learned,
    Streamed,
    Task,
    TaskResult,
    TaskState,
    as_request,
    decode,
    decode_state,
    decode_streamed,
    finished_result,
    float_list,
    int_list,
)
from chorus.core.context import Priority
from chorus.pb import task_pb2

T = TypeVar("T")
P = ParamSpec("P")

SERVICE = task_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name
HEALTH_SERVICE = "grpc.health.v1.Health"
Metadata = Sequence[tuple[str, str]]


class _ClientDefault(enum.Enum):
    TOKEN = 0


CLIENT_DEFAULT = _ClientDefault.TOKEN
"""A call's deadline as the client was made with (`timeout_s=` of the client)."""
Timeout = float | None | Literal[_ClientDefault.TOKEN]
"""Seconds for the call; None: no deadline; CLIENT_DEFAULT: the client's."""

COMPRESSION = {
    "gzip": grpc.Compression.Gzip,
    "deflate": grpc.Compression.Deflate,
    "none": grpc.Compression.NoCompression,
}


def compression(given: grpc.Compression | str | None) -> grpc.Compression | None:
    if given is None or isinstance(given, grpc.Compression):
        return given
    try:
        return COMPRESSION[given.lower()]
    except KeyError:
        raise InvalidArgument(
            f"compression: expected one of {sorted(COMPRESSION)}, got {given!r}"
        ) from None


@dataclass(frozen=True)
class CallOptions:
    timeout_s: Timeout = CLIENT_DEFAULT
    metadata: tuple[tuple[str, str], ...] = ()
    compression: grpc.Compression | None = None


def _options(
    timeout_s: Timeout, metadata: Metadata, compress: grpc.Compression | str | None
) -> CallOptions:
    if isinstance(timeout_s, int | float) and timeout_s <= 0:
        raise InvalidArgument(f"timeout_s: must be above 0 (or None for none), got {timeout_s}")
    return CallOptions(timeout_s, tuple(metadata), compression(compress))


@dataclass(frozen=True)
class Unary(Generic[T]):
    """One request, one answer."""

    rpc: str
    request: Any
    response: Callable[[bytes], Any]
    decode: Callable[[Any], T]
    options: CallOptions
    service: str = SERVICE


@dataclass(frozen=True)
class Stream(Generic[T]):
    """One request, every answer as it comes."""

    rpc: str
    request: Any
    response: Callable[[bytes], Any]
    decode: Callable[[Any], T]
    options: CallOptions
    service: str = SERVICE


@dataclass(frozen=True)
class Last(Generic[T]):
    """One request, a stream of answers of which the last one counts."""

    rpc: str
    request: Any
    response: Callable[[bytes], Any]
    decode: Callable[[Any], T]
    options: CallOptions
    service: str = SERVICE


@dataclass(frozen=True)
class Bidi(Generic[T]):
    """Many requests, many answers, in one call."""

    rpc: str
    requests: Iterable[Any] | AsyncIterable[Any]
    response: Callable[[bytes], Any]
    decode: Callable[[Any], T]
    options: CallOptions
    service: str = SERVICE


Op = Unary[Any] | Stream[Any] | Last[Any] | Bidi[Any]


def path(op: Op) -> str:
    return f"/{op.service}/{op.rpc}"


def rpc(name: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Marks an op function as the client's method for the RPC `name`."""

    def mark(fn: Callable[P, T]) -> Callable[P, T]:
        fn.rpc = name  # type: ignore[attr-defined]
        return fn

    return mark


# --- the API -------------------------------------------------------------------------------


@rpc("Submit")
def submit(
    capability: str,
    inputs: Inputs,
    *,
    priority: Priority | str = Priority.NORMAL,
    deadline_ms: int = 0,
    policy: str = "",
    task_id: str = "",
    conflict: Conflict | str | None = None,
    pipeline: str = "",
    cascade: Cascade | None = None,
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Unary[TaskResult]:
    """Run one task to completion and return the fused answer.

    `inputs` are numpy arrays by input name, the first dimension the rows. `capability`
    names what to do ("classify/digits"); or leave it empty and name a `pipeline`.
    `conflict` settles rows the members disagree on (a `Conflict`, or just its name),
    `cascade` asks the cheapest members first. `deadline_ms` is the router's time budget;
    `timeout_s` the call's deadline (the shorter wins). Not retried: a task may run twice."""
    task = Task(capability, inputs, priority, deadline_ms, policy, task_id, conflict, pipeline,
                cascade)  # fmt: skip
    return Unary("Submit", task.to_proto(), task_pb2.SubmitResponse.FromString, decode,
                 _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("SubmitAsync")
def submit_async(
    capability: str,
    inputs: Inputs,
    *,
    idempotency_key: str | None = None,
    priority: Priority | str = Priority.NORMAL,
    deadline_ms: int = 0,
    policy: str = "",
    task_id: str = "",
    conflict: Conflict | str | None = None,
    pipeline: str = "",
    cascade: Cascade | None = None,
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Unary[Accepted]:
    """Store a task durably and return its id at once; follow it with `result`, `watch` or
    `wait`. The same `idempotency_key` never runs a task twice; without one (and without a
    `task_id`) the client makes a key per call, so that its own retries are safe."""
    task = Task(capability, inputs, priority, deadline_ms, policy, task_id, conflict, pipeline,
                cascade)  # fmt: skip
    key = idempotency_key if idempotency_key is not None else "" if task_id else uuid.uuid4().hex
    request = task_pb2.SubmitAsyncRequest(task=task.to_proto(), idempotency_key=key)
    return Unary("SubmitAsync", request, task_pb2.SubmitAsyncResponse.FromString,
                 lambda r: Accepted(r.task_id, r.duplicate),
                 _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("GetResult")
def result(
    task_id: str,
    *,
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Unary[TaskState]:
    """An async task's state now (pending, running, done with its result, or failed with
    its error); NotFound for an unknown or expired id."""
    return Unary("GetResult", _task_id(task_id), task_pb2.TaskResult.FromString, decode_state,
                 _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("WatchResult")
def watch(
    task_id: str,
    *,
    timeout_s: Timeout = None,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Stream[TaskState]:
    """Every state of an async task as it changes, ending once it is done or failed."""
    return Stream("WatchResult", _task_id(task_id), task_pb2.TaskResult.FromString,
                  decode_state, _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("WatchResult")
def wait(
    task_id: str,
    *,
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Last[TaskResult]:
    """An async task's result once it is done (watching it, no polling); its own error if
    it failed; DeadlineExceeded if `timeout_s` passes first."""
    return Last("WatchResult", _task_id(task_id), task_pb2.TaskResult.FromString,
                finished_result, _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("Feedback")
def feedback(
    task_id: str,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    values: Sequence[float] | np.ndarray | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Unary[Learned]:
    """The truth for a finished task: `labels` (class indices) for a classification or
    `values` for a regression, one per row, or per row of `rows`. Returns the members'
    weights after learning from it. Not retried: the weights would learn twice."""
    if (labels is None) == (values is None):
        raise InvalidArgument("feedback: give labels (classification) or values (regression)")
    request = task_pb2.FeedbackRequest(
        task_id=_task_id(task_id).task_id,
        labels=int_list("feedback: labels", labels),
        values=float_list("feedback: values", values),
        rows=int_list("feedback: rows", rows),
    )
    return Unary("Feedback", request, task_pb2.FeedbackResponse.FromString,
                 lambda r: Learned(r.capability, dict(r.weights)),
                 _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("Review")
def review(
    task_id: str,
    rows: Sequence[int] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    capability: str = "",
    reviewer: str = "",
    decisions: Sequence[task_pb2.RowDecision] = (),
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Unary[TaskState]:
    """A person's answer (`labels`, class indices) to escalated `rows` of a task: completes
    the task and teaches the members' weights. `decisions` are the rows as the fuser decided
    them (from the review case), for a task the router holds no result of."""
    row_list, label_list = int_list("review: rows", rows), int_list("review: labels", labels)
    if len(row_list) != len(label_list):
        raise InvalidArgument(
            f"review: {len(label_list)} labels for {len(row_list)} rows; give one per row"
        )
    request = task_pb2.ReviewRequest(
        task_id=_task_id(task_id).task_id, capability=capability, rows=row_list,
        labels=label_list, reviewer=reviewer, decisions=list(decisions),
    )  # fmt: skip
    return Unary("Review", request, task_pb2.TaskResult.FromString, decode_state,
                 _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("ListModels")
def list_models(
    capability: str = "",
    *,
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Unary[task_pb2.ListModelsResponse]:
    """The models the router sees alive (only `capability`'s, when given), with each
    replica's load."""
    request = task_pb2.ListModelsRequest(capability=capability)
    return Unary("ListModels", request, task_pb2.ListModelsResponse.FromString, _same,
                 _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("SubmitStream")
def submit_stream(
    tasks: Iterable[Task | task_pb2.SubmitRequest] | AsyncIterable[Task | task_pb2.SubmitRequest],
    *,
    timeout_s: Timeout = None,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Bidi[Streamed]:
    """Many tasks over one call, each answer as it finishes (not in order: match them by
    task_id; a task without one is "<stream id>-<place>"). A task that fails gets its own
    error in its `Streamed` and the rest go on; `timeout_s` bounds the whole stream. The
    blocking client takes an iterable, the asyncio client an iterable or async iterable."""
    if isinstance(tasks, AsyncIterable):

        async def each_async() -> Any:
            async for t in tasks:
                yield as_request(t)

        requests: Iterable[Any] | AsyncIterable[Any] = each_async()
    else:
        requests = (as_request(t) for t in tasks)
    return Bidi("SubmitStream", requests, task_pb2.StreamedResult.FromString, decode_streamed,
                _options(timeout_s, metadata, compression))  # fmt: skip


@rpc("Check")
def health(
    service: str = "",
    *,
    timeout_s: Timeout = CLIENT_DEFAULT,
    metadata: Metadata = (),
    compression: grpc.Compression | str | None = None,
) -> Unary[str]:
    """The router's gRPC health (grpc.health.v1): "SERVING" once it can take tasks,
    "NOT_SERVING" while it cannot; `service` "" is the server, "chorus.v1.TaskService" the
    task API. Unavailable when nothing answers."""
    from grpc_health.v1 import health_pb2

    names = health_pb2.HealthCheckResponse.ServingStatus
    return Unary("Check", health_pb2.HealthCheckRequest(service=service),
                 health_pb2.HealthCheckResponse.FromString, lambda r: names.Name(r.status),
                 _options(timeout_s, metadata, compression), service=HEALTH_SERVICE)  # fmt: skip


def _same(response: Any) -> Any:
    return response


def _task_id(task_id: str) -> task_pb2.GetResultRequest:
    if not task_id:
        raise InvalidArgument("task_id: empty; give the id SubmitAsync or Submit returned")
    return task_pb2.GetResultRequest(task_id=task_id)


API = (submit, submit_async, result, watch, wait, feedback, review, list_models, submit_stream,
       health)  # fmt: skip
"""Every op function, each a method of both clients under its own name."""
