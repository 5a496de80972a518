"""One request to a member or a service within the task's deadline, and what its reply says:
the error a micro service put in the headers, or a reply that answered another input.
Transport failures become ChorusErrors that name who was asked, so every caller reports them
alike."""

from __future__ import annotations

from opentelemetry.trace import SpanKind

from chorus.core import errors, tracing
from chorus.core.calls.transport import Message, NoResponders, RequestTimeout, Transport
from chorus.core.context import CallContext
from chorus.core.errors import ChorusError, DataLoss, DeadlineExceeded, Unavailable
from chorus.pb import wire_pb2

ERROR_CODE_HEADER = errors.ERROR_CODE_HEADER
ERROR_HEADER = errors.ERROR_HEADER


def checked(model: str, reply: wire_pb2.InferReply, digest: str) -> wire_pb2.InferReply:
    """`reply`, unless it echoes the SHA-256 of an input other than the one sent."""
    if reply.input_sha256 and reply.input_sha256 != digest:
        raise DataLoss(f"model {model}: answered an input other than the one sent")
    return reply


def error_of(msg: Message) -> ChorusError | None:
    """The error a micro service put in the reply headers, if any."""
    headers = msg.headers or {}
    code = headers.get(ERROR_CODE_HEADER)
    if code is None:
        return None
    return ChorusError.from_code_name(code, headers.get(ERROR_HEADER, ""))


class NotSubscribed(Unavailable):
    """NATS's no-responders: nobody is subscribed to the subject asked. On one replica's
    subject that replica is gone; on a model's queue group, every replica is."""


async def request(
    transport: Transport,
    subject: str,
    payload: bytes,
    ctx: CallContext,
    who: str,
    extra_headers: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> Message:
    """One request within the task's deadline (and `timeout_s`), its failures as
    ChorusErrors that name `who`."""
    left = ctx.check(f"{who} was asked")
    timeout = min(left, timeout_s) if timeout_s else left
    with tracing.span(f"request {who}", kind=SpanKind.CLIENT, subject=subject):
        headers = tracing.inject({**ctx.to_headers(), **(extra_headers or {})})
        try:
            msg = await transport.request(subject, payload, headers, timeout)
        except NoResponders:
            raise NotSubscribed(f"{who}: no replica is subscribed to {subject}") from None
        except RequestTimeout:
            raise DeadlineExceeded(f"{who}: no answer within {timeout * 1000:.0f} ms") from None
    err = error_of(msg)
    if err is not None:
        raise type(err)(f"{who}: {err.message}")
    return msg
