"""The router's NATS side: ask every member at once (each on a replica it chooses, with
retries, hedging and circuit breakers), then ask the fuser.

Member tensors pass through as received (protobuf bytes fields), so the hot path decodes
nothing it does not need.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from opentelemetry.trace import SpanKind

from chorus import subjects, tracing
from chorus.context import CAPABILITY, INPUT_SHA256, TASKS, CallContext
from chorus.errors import ChorusError, DataLoss, DeadlineExceeded, Unavailable
from chorus.heartbeat import Heartbeat
from chorus.pb import task_pb2, wire_pb2
from chorus.router.choice import Candidate, ReplicaChooser
from chorus.router.coalesce import Coalescer
from chorus.router.metrics import RouterMetrics
from chorus.router.replicas import ReplicaBook

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
RETRYABLE = (Unavailable, DeadlineExceeded)
"""Worth another replica: it is gone or slow. Bad input or a corrupt reply is not."""


@dataclass
class FanOut:
    replies: dict[str, wire_pb2.InferReply] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, ChorusError] = field(default_factory=dict)


@dataclass(frozen=True)
class DispatchPolicy:
    max_attempts: int = 3
    attempt_timeout_s: float = 2.0
    """One attempt's limit (the task's deadline, if nearer, wins): a hung replica costs this."""
    hedge: bool = True
    hedge_min_ms: float = 2.0
    """A second request goes to another replica once the first has run past the model's p95
    round trip (and at least this long)."""
    coalesce_rows: int = 256
    """Rows one joined call may carry when tasks wait for a model (0: every task alone)."""


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
    timeout_s: float | None = None,
) -> Msg:
    left = ctx.check(f"{who} was asked")
    timeout = min(left, timeout_s) if timeout_s else left
    with tracing.span(f"request {who}", kind=SpanKind.CLIENT, subject=subject):
        headers = tracing.inject({**ctx.to_headers(), **(extra_headers or {})})
        try:
            msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
        except NoRespondersError:
            raise Unavailable(f"{who}: no replica is subscribed to {subject}") from None
        except NatsTimeout:
            raise DeadlineExceeded(f"{who}: no answer within {timeout * 1000:.0f} ms") from None
    err = error_of(msg)
    if err is not None:
        raise type(err)(f"{who}: {err.message}")
    return msg


class Dispatcher:
    def __init__(
        self,
        nc: Client,
        book: ReplicaBook,
        chooser: ReplicaChooser,
        policy: DispatchPolicy,
        metrics: RouterMetrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.nc = nc
        self.book = book
        self.chooser = chooser
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
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
        tasks: int,
    ) -> tuple[wire_pb2.InferReply, float]:
        return await self.call(
            model, replicas, body, digest, ctx, {TASKS: str(tasks)} if tasks > 1 else None
        )

    async def fan_out(
        self,
        members: dict[str, list[Heartbeat]],
        payloads: dict[str, bytes],
        ctx: CallContext,
        capability: str = "",
        shared: dict[tuple[str, str], asyncio.Future[tuple[wire_pb2.InferReply, float]]]
        | None = None,
    ) -> FanOut:
        """Each model gets its InferCall concurrently; gather what arrives within the deadline.

        Every body goes out with its SHA-256; a member checks it on arrival and echoes the
        digest it computed, so corruption on either leg is caught.
        """
        digests = {id(b): hashlib.sha256(b).hexdigest() for b in payloads.values()}
        models = list(payloads)

        async def member(m: str) -> tuple[wire_pb2.InferReply, float]:
            replicas, body = members.get(m, []), payloads[m]
            digest = digests[id(body)]
            if not replicas or not replicas[0].heads:
                return await self.coalescer.call(m, replicas, body, digest, ctx)
            if shared is None:
                return await self.call(m, replicas, body, digest, ctx, {CAPABILITY: capability})
            # A multi-task model asked by several stages of one pipeline level about the same
            # input answers them all from one call.
            key = (m, digest)
            if key not in shared:
                shared[key] = asyncio.ensure_future(
                    self.call(m, replicas, body, digest, ctx, {CAPABILITY: ALL_HEADS})
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

    async def call(
        self,
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        headers: dict[str, str] | None = None,
    ) -> tuple[wire_pb2.InferReply, float]:
        """One member's answer: retried on another replica when one is gone or too slow."""
        tried: set[str] = set()
        last: ChorusError = Unavailable(f"model {model}: no replica to ask")
        start = time.perf_counter()
        for attempt in range(self.policy.max_attempts):
            if attempt:
                self.metrics.retries.labels(model).inc()
            first = self._pick(model, replicas, tried)
            try:
                reply = await self._maybe_hedged(
                    model, replicas, first, tried, body, digest, ctx, headers or {}
                )
            except RETRYABLE as err:
                last = err
                if ctx.remaining_s() <= 0:
                    break
                continue
            ms = (time.perf_counter() - start) * 1000
            self.book.record_latency(model, ms)
            return reply, ms
        if isinstance(last, DeadlineExceeded) or ctx.remaining_s() <= 0:
            raise DeadlineExceeded(f"{last.message} (after {len(tried) or 1} attempt(s))")
        raise last

    def _pick(self, model: str, replicas: list[Heartbeat], tried: set[str]) -> Candidate | None:
        candidates = self.book.candidates(replicas, self.clock(), tried)
        chosen = self.chooser.choose(candidates, self.rng)
        if chosen is not None:
            self.book.state(chosen.replica).breaker.allow(self.clock())
        return chosen

    async def _maybe_hedged(
        self,
        model: str,
        replicas: list[Heartbeat],
        first: Candidate | None,
        tried: set[str],
        body: bytes,
        digest: str,
        ctx: CallContext,
        headers: dict[str, str],
    ) -> wire_pb2.InferReply:
        p95 = self.book.p95_ms(model)
        primary = asyncio.ensure_future(self._once(model, first, tried, body, digest, ctx, headers))
        if not self.policy.hedge or p95 is None or first is None:
            return await primary
        delay = max(p95, self.policy.hedge_min_ms) / 1000
        done, _ = await asyncio.wait({primary}, timeout=delay)
        if done:
            return primary.result()
        backup_to = self._pick(model, replicas, tried | {first.replica})
        if backup_to is None:
            return await primary
        self.metrics.hedges.labels(model).inc()
        backup = asyncio.ensure_future(
            self._once(model, backup_to, tried, body, digest, ctx, headers)
        )
        pending = {primary, backup}
        error: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        return task.result()
                    error = task.exception()
        finally:
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ChorusError):
                    await task
        assert error is not None
        raise error

    async def _once(
        self,
        model: str,
        to: Candidate | None,
        tried: set[str],
        body: bytes,
        digest: str,
        ctx: CallContext,
        headers: dict[str, str],
    ) -> wire_pb2.InferReply:
        if to is None:
            subject = subjects.infer(model)
        else:
            subject = subjects.infer_replica(model, to.replica)
            tried.add(to.replica)
        state = self.book.state(to.replica) if to is not None else None
        if state is not None:
            state.outstanding += 1
        start = time.perf_counter()
        try:
            msg = await _request(
                self.nc, subject, body, ctx, f"model {model}", {INPUT_SHA256: digest, **headers},
                timeout_s=self.policy.attempt_timeout_s,
            )  # fmt: skip
            reply = wire_pb2.InferReply.FromString(msg.data)
            if reply.input_sha256 and reply.input_sha256 != digest:
                raise DataLoss(f"model {model}: answered an input other than the one sent")
        except RETRYABLE:
            if state is not None:
                state.breaker.failure(self.clock())
                self._breaker_metric(model, to)
            raise
        finally:
            if state is not None:
                state.outstanding -= 1
        if state is not None:
            state.observe((time.perf_counter() - start) * 1000)
            state.breaker.success()
            self._breaker_metric(model, to)
        self.metrics.chosen.labels(model, to.replica if to else "queue-group").inc()
        return reply

    def _breaker_metric(self, model: str, to: Candidate | None) -> None:
        if to is not None:
            state = self.book.state(to.replica).breaker.state
            self.metrics.circuit.labels(model, to.replica).set(state.value)


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
    nc: Client,
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
            msg = await _request(nc, subjects.FUSE, body, ctx, "fuser", timeout_s=attempt_timeout_s)
            return wire_pb2.FuseReply.FromString(msg.data)
        except RETRYABLE:
            if attempt == attempts - 1 or ctx.remaining_s() <= 0:
                raise
    raise AssertionError("unreachable")


async def feedback(
    nc: Client, req: task_pb2.FeedbackRequest, ctx: CallContext
) -> task_pb2.FeedbackResponse:
    msg = await _request(nc, subjects.FEEDBACK, req.SerializeToString(), ctx, "fuser")
    return task_pb2.FeedbackResponse.FromString(msg.data)
