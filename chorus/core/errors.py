"""Error families of the mesh, each bound to the gRPC status a caller will see.

Errors cross NATS as the `Nats-Service-Error-Code` / `Nats-Service-Error` headers of the
micro protocol, carrying the gRPC status name, so a member's INVALID_ARGUMENT reaches the
application as INVALID_ARGUMENT with the member's own words.
"""

from __future__ import annotations

import logging
from typing import Protocol

import grpc

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
"""Where a NATS micro service's error reply says its code (a gRPC status name) and message."""

log = logging.getLogger(__name__)


class ChorusError(Exception):
    """Base of every error the mesh reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code_name(self) -> str:
        return self.code.name

    @staticmethod
    def from_code_name(name: str, message: str) -> ChorusError:
        cls = _BY_CODE.get(name, ChorusError)
        return cls(message)


class InvalidArgument(ChorusError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ChorusError):
    code = grpc.StatusCode.NOT_FOUND


class ResourceExhausted(ChorusError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(ChorusError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unavailable(ChorusError):
    code = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(ChorusError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class DataLoss(ChorusError):
    code = grpc.StatusCode.DATA_LOSS


_BY_CODE: dict[str, type[ChorusError]] = {
    cls.code.name: cls
    for cls in (
        ChorusError,
        InvalidArgument,
        NotFound,
        ResourceExhausted,
        DeadlineExceeded,
        Unavailable,
        FailedPrecondition,
        DataLoss,
    )
}
CODE_NAMES: tuple[str, ...] = tuple(_BY_CODE)
"""The gRPC status name of every error family: what a failed call's `outcome` label can be
(lowercased), so metrics can start every outcome's series at 0."""


def describe_error(exc: BaseException) -> str:
    """One line for a connection error; nats-py's own are often empty or bare class names."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ErrorResponder(Protocol):
    """A NATS micro request (nats.micro.request.Request), as far as answering an error."""

    async def respond_error(self, code: str, description: str) -> None: ...


def outcome_label(exc: Exception) -> str:
    """A failed request's metric label: its code's name in lower case, `internal` for an
    error that is not a ChorusError (a bug)."""
    return exc.code_name.lower() if isinstance(exc, ChorusError) else "internal"


async def respond_error(request: ErrorResponder, exc: Exception, where: str) -> str:
    """Answer a NATS micro request whose handler raised `exc`: a ChorusError with its own code
    and words; anything else is a bug, logged with its traceback and answered INTERNAL,
    naming `where` ("model mlp", "fuser"). Returns the outcome's metric label: the code's
    name in lower case."""
    if isinstance(exc, ChorusError):
        await request.respond_error(exc.code_name, exc.message)
    else:
        log.error("%s: %r", where, exc, exc_info=exc)
        await request.respond_error("INTERNAL", f"{where}: {exc!r}")
    return outcome_label(exc)
