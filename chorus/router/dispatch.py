"""The router's NATS side: ask every member at once (each through the core's MemberCalls:
a replica it chooses, retries, hedging, circuit breakers), then ask the fuser.

Member tensors pass through as received (protobuf bytes fields), so the hot path decodes
nothing it does not need.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from chorus.core import subjects
from chorus.core.calls.choice import ReplicaChooser
from chorus.core.calls.client import RETRYABLE, CallPolicy, MemberCalls
from chorus.core.calls.clock import SYSTEM, Clock
from chorus.core.calls.payload import Payload
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.request import request
from chorus.core.calls.transport import Transport
from chorus.core.config import RouterConfig
from chorus.core.context import CAPABILITY, TASKS, CallContext
from chorus.core.errors import ChorusError, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.pb import task_pb2, wire_pb2
from chorus.router.coalesce import Coalescer
from chorus.router.metrics import RouterMetrics


@dataclass
class FanOut:
    replies: dict[str, wire_pb2.InferReply] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, ChorusError] = field(default_factory=dict)


@dataclass(frozen=True)
class DispatchPolicy:
    calls: CallPolicy = field(default_factory=CallPolicy)
    coalesce_rows: int = RouterConfig().coalesce_rows
    """Rows one joined call may carry when tasks wait for a model (0: every task alone); the
    default is CHORUS_ROUTER_COALESCE_ROWS's."""


class Dispatcher:
    def __init__(
        self,
        transport: Transport,
        book: ReplicaBook,
        chooser: ReplicaChooser,
        policy: DispatchPolicy,
        metrics: RouterMetrics,
        *,
        clock: Clock = SYSTEM,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.policy = policy
        self.calls = MemberCalls(
            transport, book, chooser, policy.calls, metrics, clock=clock, rng=rng
        )
        self.coalescer = Coalescer(
            self._send,
            max_rows=policy.coalesce_rows,
            observe=lambda model, tasks: metrics.call_tasks.labels(model).observe(tasks),
            waiting=lambda model, change: metrics.member_waiting.labels(model).inc(change),
        )

    async def _send(
        self,
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        tasks: list[tuple[str, int]],
    ) -> tuple[wire_pb2.InferReply, float]:
        n = len(tasks)
        return await self.calls.call(
            model, replicas, body, digest, ctx, {TASKS: str(n)} if n > 1 else None
        )

    async def fan_out(
        self,
        members: dict[str, list[Heartbeat]],
        payloads: dict[str, Payload],
        ctx: CallContext,
        capability: str = "",
        shared: dict[tuple[str, str], asyncio.Future[tuple[wire_pb2.InferReply, float]]]
        | None = None,
    ) -> FanOut:
        """Each model gets its InferCall concurrently; gather what arrives within the deadline.

        Every body goes out with its SHA-256; a member checks it on arrival and echoes the
        digest it computed, so corruption on either leg is caught.
        """
        models = list(payloads)

        async def member(m: str) -> tuple[wire_pb2.InferReply, float]:
            replicas, payload = members.get(m, []), payloads[m]
            body, digest = payload.body, payload.digest
            if not replicas or not replicas[0].heads:
                return await self.coalescer.call(m, replicas, body, digest, ctx)
            if shared is None:
                return await self.calls.call(
                    m, replicas, body, digest, ctx, {CAPABILITY: capability}
                )
            # A multi-task model asked by several stages of one pipeline level about the same
            # input answers them all from one call.
            key = (m, digest)
            if key not in shared:
                shared[key] = asyncio.ensure_future(
                    self.calls.call(m, replicas, body, digest, ctx, {CAPABILITY: ALL_HEADS})
                )
            reply, ms = await asyncio.shield(shared[key])
            return _head(reply, capability), ms

        results = await asyncio.gather(*(member(m) for m in models), return_exceptions=True)
        out = FanOut()
        for model, result in zip(models, results, strict=True):
            if isinstance(result, ChorusError):
                out.errors[model] = result
            elif isinstance(result, BaseException):
                out.errors[model] = ChorusError(f"model {model}: {result!r}")
            else:
                reply, ms = result
                out.replies[model] = reply
                out.latency_ms[model] = ms
        return out


ALL_HEADS = "*"


def _head(reply: wire_pb2.InferReply, capability: str) -> wire_pb2.InferReply:
    """One capability's outputs out of a multi-task model's every-head reply."""
    prefix = f"{capability}/"
    out = wire_pb2.InferReply(
        model=reply.model, version=reply.version, replica=reply.replica,
        compute_ms=reply.compute_ms, input_sha256=reply.input_sha256,
    )  # fmt: skip
    for t in reply.outputs:
        if t.name.startswith(prefix):
            renamed = out.outputs.add()
            renamed.CopyFrom(t)
            renamed.name = t.name[len(prefix) :]
    if not out.outputs:
        raise Unavailable(f"model {reply.model}: no head for {capability!r} in its reply")
    return out


async def fuse(
    transport: Transport,
    call: wire_pb2.FuseCall,
    ctx: CallContext,
    *,
    attempts: int = 2,
    attempt_timeout_s: float | None = None,
) -> wire_pb2.FuseReply:
    """The fuser's answer; a fuser that died or hangs is retried once (the queue group
    hands the retry to another replica), within the task's deadline."""
    body = call.SerializeToString()
    for attempt in range(attempts):
        try:
            msg = await request(
                transport, subjects.FUSE, body, ctx, "fuser", timeout_s=attempt_timeout_s
            )
            return wire_pb2.FuseReply.FromString(msg.data)
        except RETRYABLE:
            if attempt == attempts - 1 or ctx.remaining_s() <= 0:
                raise
    raise AssertionError("unreachable")


async def feedback(
    transport: Transport, req: task_pb2.FeedbackRequest, ctx: CallContext
) -> task_pb2.FeedbackResponse:
    msg = await request(transport, subjects.FEEDBACK, req.SerializeToString(), ctx, "fuser")
    return task_pb2.FeedbackResponse.FromString(msg.data)
