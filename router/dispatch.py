"""The router's NATS side: ask every member at once, then ask the fuser.

Member tensors pass through as received (protobuf bytes fields), so the hot path decodes
nothing it does not need.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from opentelemetry.trace import SpanKind

from chorus import subjects, tracing
from chorus.context import INPUT_SHA256, CallContext
from chorus.errors import ChorusError, DataLoss, DeadlineExceeded, Unavailable
from chorus.pb import task_pb2, wire_pb2

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"


@dataclass
class FanOut:
    replies: dict[str, wire_pb2.InferReply] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, ChorusError] = field(default_factory=dict)


def error_of(msg: Msg) -> ChorusError | None:
    """The error a micro service put in the reply headers, if any."""
    headers = msg.headers or {}
    code = headers.get(ERROR_CODE_HEADER)
    if code is None:
        return None
    return ChorusError.from_code_name(code, headers.get(ERROR_HEADER, ""))


async def _request(
    nc: Client,
    subject: str,
    payload: bytes,
    ctx: CallContext,
    who: str,
    extra_headers: dict[str, str] | None = None,
) -> Msg:
    timeout = ctx.check(f"{who} was asked")
    with tracing.span(f"request {who}", kind=SpanKind.CLIENT, subject=subject):
        headers = tracing.inject({**ctx.to_headers(), **(extra_headers or {})})
        try:
            msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
        except NoRespondersError:
            raise Unavailable(f"{who}: no replica is subscribed to {subject}") from None
        except NatsTimeout:
            raise DeadlineExceeded(
                f"{who}: no answer within the task's {timeout * 1000:.0f} ms"
            ) from None
    err = error_of(msg)
    if err is not None:
        raise type(err)(f"{who}: {err.message}")
    return msg


async def fan_out(nc: Client, payloads: dict[str, bytes], ctx: CallContext) -> FanOut:
    """Send each model its InferCall concurrently; gather what arrives within the deadline.

    Every body goes out with its SHA-256; a member checks it on arrival and echoes the digest
    it computed, so corruption on either leg is caught.
    """
    digests = {id(b): hashlib.sha256(b).hexdigest() for b in payloads.values()}

    async def one(model: str) -> tuple[str, wire_pb2.InferReply, float]:
        start = time.perf_counter()
        body = payloads[model]
        digest = digests[id(body)]
        msg = await _request(
            nc, subjects.infer(model), body, ctx, f"model {model}", {INPUT_SHA256: digest}
        )
        reply = wire_pb2.InferReply()
        reply.ParseFromString(msg.data)
        if reply.input_sha256 and reply.input_sha256 != digest:
            raise DataLoss(f"model {model}: answered an input other than the one sent")
        return model, reply, (time.perf_counter() - start) * 1000

    models = list(payloads)
    results = await asyncio.gather(*(one(m) for m in models), return_exceptions=True)
    out = FanOut()
    for model, result in zip(models, results, strict=True):
        if isinstance(result, ChorusError):
            out.errors[model] = result
        elif isinstance(result, BaseException):
            out.errors[model] = ChorusError(f"model {model}: {result!r}")
        else:
            _, reply, ms = result
            out.replies[model] = reply
            out.latency_ms[model] = ms
    return out


async def fuse(nc: Client, call: wire_pb2.FuseCall, ctx: CallContext) -> wire_pb2.FuseReply:
    msg = await _request(nc, subjects.FUSE, call.SerializeToString(), ctx, "fuser")
    reply = wire_pb2.FuseReply()
    reply.ParseFromString(msg.data)
    return reply


async def feedback(
    nc: Client, req: task_pb2.FeedbackRequest, ctx: CallContext
) -> task_pb2.FeedbackResponse:
    msg = await _request(nc, subjects.FEEDBACK, req.SerializeToString(), ctx, "fuser")
    return task_pb2.FeedbackResponse.FromString(msg.data)
