"""The client's one error family: every failed call, and every task that failed, raises a
`TaskError` subclass named for its gRPC status, carrying the code and the router's words.

`TaskError` is a `grpc.RpcError` with `code()` and `details()`, so code written against raw
gRPC stubs (`except grpc.RpcError as err: err.code()`) keeps working, and code that wants one
case catches, say, `NotFound` alone. gRPC's own exceptions are translated where they enter
the client (`from_rpc_error`), never passed through.
"""

from __future__ import annotations

from typing import Any

import grpc


class TaskError(grpc.RpcError):  # type: ignore[misc]
    """A call or a task that did not succeed. `status` is the gRPC status (also `code()`),
    `message` the reason (also `details()`), `task_id` the task it concerns, when known."""

    status: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        task_id: str = "",
        status: grpc.StatusCode | None = None,
        trailing_metadata: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.task_id = task_id
        if status is not None:
            self.status = status
        self._trailing = trailing_metadata

    def code(self) -> grpc.StatusCode:
        return self.status

    def details(self) -> str:
        return self.message

    def trailing_metadata(self) -> tuple[tuple[str, Any], ...]:
        return self._trailing

    def __str__(self) -> str:
        where = f" (task {self.task_id})" if self.task_id else ""
        return f"{self.status.name}: {self.message}{where}"


class Cancelled(TaskError):
    status = grpc.StatusCode.CANCELLED


class InvalidArgument(TaskError, ValueError):
    """The request is wrong: raised by the router, and by the client itself for arguments it
    can check before sending (a ValueError too)."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(TaskError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(TaskError):
    status = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TaskError):
    status = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(TaskError):
    status = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(TaskError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(TaskError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(TaskError):
    status = grpc.StatusCode.ABORTED


class OutOfRange(TaskError):
    status = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(TaskError):
    status = grpc.StatusCode.UNIMPLEMENTED


class Internal(TaskError):
    status = grpc.StatusCode.INTERNAL


class Unavailable(TaskError):
    status = grpc.StatusCode.UNAVAILABLE


class DataLoss(TaskError):
    status = grpc.StatusCode.DATA_LOSS


class Unauthenticated(TaskError):
    status = grpc.StatusCode.UNAUTHENTICATED


_BY_STATUS: dict[grpc.StatusCode, type[TaskError]] = {
    cls.status: cls
    for cls in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_for(
    status: grpc.StatusCode | str,
    message: str,
    *,
    task_id: str = "",
    trailing_metadata: tuple[tuple[str, Any], ...] = (),
) -> TaskError:
    """The family member for a status (or its name, as a failed task or stream item carries
    it); an unknown name gives TaskError with UNKNOWN."""
    if isinstance(status, str):
        status = grpc.StatusCode.__members__.get(status, grpc.StatusCode.UNKNOWN)
    cls = _BY_STATUS.get(status, TaskError)
    return cls(message, task_id=task_id, status=status, trailing_metadata=trailing_metadata)


def from_rpc_error(err: grpc.RpcError) -> TaskError:
    """A gRPC exception (sync or grpc.aio) as the family member for its status."""
    if isinstance(err, TaskError):
        return err
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else ()
    return error_for(code, details or "", trailing_metadata=tuple(trailing or ()))
