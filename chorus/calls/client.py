"""Calling one member model over NATS: on a replica the chooser picks, retried on another when
one is gone or slow, hedged past the model's p95, behind per-replica circuit breakers, and
with the body's SHA-256 checked both ways. The router's fan-out and the fuser's negotiation,
arbiter and stacking calls all go through `MemberCalls`, so every call to a model has the
same deadline, retry, breaker and digest rules."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge

from chorus import subjects, tracing
from chorus.calls.choice import Candidate, ReplicaChooser
from chorus.calls.replicas import ReplicaBook
from chorus.context import INPUT_SHA256, CallContext
from chorus.errors import ChorusError, DataLoss, DeadlineExceeded, Unavailable
from chorus.heartbeat import Heartbeat
from chorus.pb import wire_pb2

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
RETRYABLE = (Unavailable, DeadlineExceeded)
"""Worth another replica: it is gone or slow. Bad input or a corrupt reply is not."""


@dataclass(frozen=True)
class CallPolicy:
    max_attempts: int = 3
    attempt_timeout_s: float = 2.0
    """One attempt's limit (the task's deadline, if nearer, wins): a hung replica costs this."""
    hedge: bool = True
    hedge_min_ms: float = 2.0
    """A second request goes to another replica once the first has run past the model's p95
    round trip (and at least this long)."""


class CallMetrics(Protocol):
    """The labelled Prometheus metrics a caller counts its member calls in."""

    retries: Any
    hedges: Any
    chosen: Any
    circuit: Any


class CallCounters:
    """Member-call metrics under one service's prefix (chorus_router_…, chorus_fuser_…), the
    same four for every caller."""

    def __init__(self, prefix: str, registry: CollectorRegistry) -> None:
        self.retries = Counter(
            f"{prefix}_retries",
            "Member requests sent again to another replica",
            ["model"],
            registry=registry,
        )
        self.hedges = Counter(
            f"{prefix}_hedges",
            "Second requests sent because the first ran past the model's p95",
            ["model"],
            registry=registry,
        )
        self.chosen = Counter(
            f"{prefix}_replica_requests",
            "Member requests answered, by the replica that answered",
            ["model", "replica"],
            registry=registry,
        )
        self.circuit = Gauge(
            f"{prefix}_circuit_state",
            "Circuit breaker per replica: 0 closed, 1 open, 2 half-open",
            ["model", "replica"],
            registry=registry,
        )


def error_of(msg: Msg) -> ChorusError | None:
    """The error a micro service put in the reply headers, if any."""
    headers = msg.headers or {}
    code = headers.get(ERROR_CODE_HEADER)
    if code is None:
        return None
    return ChorusError.from_code_name(code, headers.get(ERROR_HEADER, ""))


async def request(
    nc: Client,
    subject: str,
    payload: bytes,
    ctx: CallContext,
    who: str,
    extra_headers: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> Msg:
    """One NATS request within the task's deadline (and `timeout_s`), its failures as
    ChorusErrors that name `who`."""
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


class MemberCalls:
    def __init__(
        self,
        nc: Client,
        book: ReplicaBook,
        chooser: ReplicaChooser,
        policy: CallPolicy,
        metrics: CallMetrics | None = None,
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

    async def call(
        self,
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        headers: dict[str, str] | None = None,
        *,
        exclude: set[str] | None = None,
        policy: CallPolicy | None = None,
    ) -> tuple[wire_pb2.InferReply, float]:
        """One member's answer and its round trip in ms: retried on another replica when one
        is gone or too slow. `digest` is the SHA-256 of `body`; the member checks it and
        echoes it. No `replicas` (none known): the model's queue group answers. `exclude`:
        replicas already tried elsewhere; `policy` overrides this caller's own rules."""
        policy = policy or self.policy
        tried: set[str] = set(exclude or ())
        last: ChorusError = Unavailable(f"model {model}: no replica to ask")
        start = time.perf_counter()
        for attempt in range(policy.max_attempts):
            if attempt and self.metrics is not None:
                self.metrics.retries.labels(model).inc()
            first = self._pick(model, replicas, tried)
            try:
                reply = await self._maybe_hedged(
                    model, replicas, first, tried, body, digest, ctx, headers or {}, policy
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
        policy: CallPolicy,
    ) -> wire_pb2.InferReply:
        p95 = self.book.p95_ms(model)
        primary = asyncio.ensure_future(
            self._once(model, first, tried, body, digest, ctx, headers, policy)
        )
        if not policy.hedge or p95 is None or first is None:
            return await primary
        delay = max(p95, policy.hedge_min_ms) / 1000
        done, _ = await asyncio.wait({primary}, timeout=delay)
        if done:
            return primary.result()
        backup_to = self._pick(model, replicas, tried | {first.replica})
        if backup_to is None:
            return await primary
        if self.metrics is not None:
            self.metrics.hedges.labels(model).inc()
        backup = asyncio.ensure_future(
            self._once(model, backup_to, tried, body, digest, ctx, headers, policy)
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
        policy: CallPolicy,
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
            msg = await request(
                self.nc, subject, body, ctx, f"model {model}", {INPUT_SHA256: digest, **headers},
                timeout_s=policy.attempt_timeout_s,
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
        if self.metrics is not None:
            self.metrics.chosen.labels(model, to.replica if to else "queue-group").inc()
        return reply

    def _breaker_metric(self, model: str, to: Candidate | None) -> None:
        if to is not None and self.metrics is not None:
            state = self.book.state(to.replica).breaker.state
            self.metrics.circuit.labels(model, to.replica).set(state.value)
