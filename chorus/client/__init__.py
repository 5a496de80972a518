"""The application's client for the task API, numpy in and out: `TaskClient` (blocking) and
`AsyncTaskClient` (asyncio) with the same methods, both made from one definition of the API
(`chorus.client.ops`); errors are one family (`TaskError` and a subclass per gRPC status).
`BusTaskClient` submits over NATS instead, for applications already on the bus."""

from chorus.client.aio import AsyncTaskClient
from chorus.client.blocking import TaskClient
from chorus.client.bus import BusTaskClient
from chorus.client.channel import ROUTER_ENV, RetryPolicy
from chorus.client.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TaskError,
    Unauthenticated,
    Unavailable,
    error_for,
)
from chorus.client.ops import CLIENT_DEFAULT
from chorus.client.types import (
    Accepted,
    Cascade,
    Conflict,
    Learned,
    State,
    Streamed,
    Task,
    TaskResult,
    TaskState,
    decode,
    submit_request,
)

__all__ = [
    "CLIENT_DEFAULT",
    "ROUTER_ENV",
    "Accepted",
    "AsyncTaskClient",
    "BusTaskClient",
    "Cascade",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "Learned",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "RetryPolicy",
    "State",
    "Streamed",
    "Task",
    "TaskClient",
    "TaskError",
    "TaskResult",
    "TaskState",
    "Unauthenticated",
    "Unavailable",
    "decode",
    "error_for",
    "submit_request",
]
