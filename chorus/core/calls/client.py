"""Calling one member model: on a replica the chooser picks, retried on another when one is
gone or slow, hedged once it runs late, behind per-replica circuit breakers, and with the
body's SHA-256 checked both ways. Every caller of a member goes through `MemberCalls`: the
router's fan-out, the fuser's negotiation, arbiter and stacking calls, and the fuser's
collector on the one-way path, whose first attempt the router sent (`InFlight`), so every call
to a model has the same deadline, retry, hedging, breaker and digest rules, written once.

Each attempt ends as an `Attempt`: applied to this caller's replica view and breakers
(`record`, also how the router applies the attempts the fuser reports) and, when the caller
asks, appended to its report."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from chorus.core import subjects
from chorus.core.calls.attempts import FAILED, OUTRUN, Attempt, InFlight
from chorus.core.calls.breaker import State
from chorus.core.calls.choice import Candidate, ReplicaChooser
from chorus.core.calls.clock import SYSTEM, Clock
from chorus.core.calls.replicas import ReplicaBook
from chorus.core.calls.request import NotSubscribed, checked, request
from chorus.core.calls.transport import Transport
from chorus.core.context import INPUT_SHA256, CallContext
from chorus.core.errors import ChorusError, DeadlineExceeded, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.pb import wire_pb2

RETRYABLE = (Unavailable, DeadlineExceeded)
"""Worth another replica: it is gone or slow. Bad input or a corrupt reply is not."""
UNMEASURED_WAITS = 4
UNMEASURED_MS = 5.0
"""A model with no p95 yet: a first attempt sent elsewhere is waited for this many service
times plus this long before another replica is asked."""
ALONE_P95S = 4
"""A model's only replica is asked again after this many p95 round trips, not one."""
VIEW_S = 0.5
"""How long a model's heartbeat view (service time, a second replica or not) is reused."""
GONE = "gone"
"""The cancel message of an attempt given up because no replica is subscribed at all."""


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


@dataclass(slots=True)
class _Call:
    model: str
    replicas: list[Heartbeat]
    body: bytes
    digest: str
    ctx: CallContext
    headers: dict[str, str]
    policy: CallPolicy
    tried: set[str]
    report: list[Attempt] | None
    nobody: bool = False
    """The model's queue group had no responder: no replica of it is subscribed at all."""


class MemberCalls:
    def __init__(
        self,
        transport: Transport,
        book: ReplicaBook,
        chooser: ReplicaChooser,
        policy: CallPolicy,
        metrics: CallMetrics | None = None,
        *,
        clock: Clock = SYSTEM,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.book = book
        self.chooser = chooser
        self.policy = policy
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self._views: dict[str, tuple[float, float, bool]] = {}
        self._shown: dict[str, State] = {}
        """The breaker state each replica's circuit gauge last showed."""

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
        first: InFlight | None = None,
        report: list[Attempt] | None = None,
    ) -> tuple[wire_pb2.InferReply, float]:
        """One member's answer and its round trip in ms: retried on another replica when one
        is gone or too slow, hedged when one runs late. `digest` is the SHA-256 of `body`; the
        member checks it and echoes it. No `replicas` (none known): the model's queue group
        answers. `exclude`: replicas not to ask; `policy` overrides this caller's own rules;
        `first`: the first attempt, already sent by another process; `report` gets every
        attempt's `Attempt` as it ends."""
        policy = policy or self.policy
        sent = {INPUT_SHA256: digest, **headers} if headers else {INPUT_SHA256: digest}
        tried = set(exclude) if exclude else set()
        c = _Call(model, replicas, body, digest, ctx, sent, policy, tried, report)
        start = first.started if first is not None else self.clock.monotonic()
        try:
            reply = await self._rounds(c, policy.max_attempts, first)
        except RETRYABLE as err:
            if isinstance(err, DeadlineExceeded) or ctx.remaining_s() <= 0:
                raise DeadlineExceeded(
                    f"{err.message} (after {len(tried) or 1} attempt(s))"
                ) from None
            raise
        ms = (self.clock.monotonic() - start) * 1000
        self.book.record_latency(model, ms)
        return reply, ms

    def pick(
        self, replicas: list[Heartbeat], exclude: set[str] | None = None, *, probe: bool = True
    ) -> Candidate | None:
        """The replica the chooser picks among those whose breakers let a request through
        (None: the model's queue group). `probe`: take a half-open breaker's one probe; a
        caller that never hears how its request went leaves it for one that does."""
        now = self.clock.monotonic()
        chosen = self.chooser.choose(
            self.book.candidates(replicas, now, exclude or set()), self.rng
        )
        if chosen is not None and probe:
            self.book.state(chosen.replica).breaker.allow(now)
        return chosen

    def record(self, attempt: Attempt) -> None:
        """One attempt into this caller's replica view, breakers and metrics: its own, and
        those another process reports (the fuser's, on the one-way path)."""
        replica = attempt.replica
        if not replica:
            if attempt.answered and self.metrics is not None:
                self.metrics.chosen.labels(attempt.model, "queue-group").inc()
            return
        st = self.book.state(replica)
        if attempt.answered:
            st.observe(attempt.latency_ms)
            st.breaker.success()
            if self.metrics is not None:
                self.metrics.chosen.labels(attempt.model, replica).inc()
        elif attempt.code == OUTRUN:
            st.observe(attempt.latency_ms)
            return
        elif attempt.code in FAILED:
            st.breaker.failure(self.clock.monotonic())
        else:
            return
        state = st.breaker.state
        if self.metrics is not None and self._shown.get(replica) is not state:
            # Only when it changes: a gauge label lookup on every answer costs the hot path.
            self._shown[replica] = state
            self.metrics.circuit.labels(attempt.model, replica).set(state.value)

    def patience(
        self,
        model: str,
        replicas: Callable[[str], list[Heartbeat]],
        policy: CallPolicy,
        ctx: CallContext,
    ) -> float | None:
        """How long a first attempt sent by another process is waited for alone before
        another replica is asked (None: until it ends): the model's p95 round trip, or, until
        it has one, a few of its heartbeats' service times. No-responders goes to the sender,
        not here, so a replica that is gone shows only as silence, and waiting out a whole
        attempt timeout for it would cost the task most of its time."""
        if not policy.hedge or policy.max_attempts < 2:
            return None
        p95 = self.book.p95_ms(model)
        service, alone = self._view(model, replicas)
        if p95 is None:
            p95 = UNMEASURED_WAITS * service + UNMEASURED_MS
        elif alone:
            # No other replica: a second request lands on the same one (its queue group),
            # so it is sent only when the first is very late.
            p95 *= ALONE_P95S
        bound = min(policy.attempt_timeout_s, max(0.0, ctx.remaining_s()))
        return min(bound, max(p95, policy.hedge_min_ms) / 1000)

    def _view(self, model: str, replicas: Callable[[str], list[Heartbeat]]) -> tuple[float, bool]:
        """The model's slowest heartbeat service time, and whether one replica at most can
        be asked; refreshed every VIEW_S rather than for every member of every task."""
        now = self.clock.monotonic()
        seen = self._views.get(model)
        if seen is None or now - seen[0] > VIEW_S:
            live = replicas(model)
            service = max((hb.ewma_ms for hb in live), default=0.0)
            alone = len(self.book.candidates(live, now, set())) < 2
            seen = self._views[model] = (now, service, alone)
        return seen[1], seen[2]

    async def _rounds(self, c: _Call, left: int, first: InFlight | None) -> wire_pb2.InferReply:
        """`left` attempts at most, the first of them `first` when given: each waited for
        alone until it runs late, then raced against the rest (a hedge), or followed by the
        rest when it fails in a way another replica may not."""
        if first is not None:
            primary = asyncio.ensure_future(self._wait_for(c, first))
            delay = first.patience
            if delay is not None:
                delay -= self.clock.monotonic() - first.started
        else:
            to = self.pick(c.replicas, c.tried)
            primary = asyncio.ensure_future(self._once(c, to))
            delay = self._hedge_delay(c.model, c.policy) if to is not None else None
        try:
            if left > 1 and delay is not None:
                if delay > 0:
                    await asyncio.wait({primary}, timeout=delay)
                if not primary.done() and (first is not None or self._another(c)):
                    if self.metrics is not None:
                        self.metrics.hedges.labels(c.model).inc()
                    return await self._race(c, primary, left)
            try:
                return await primary
            except RETRYABLE:
                if left <= 1 or c.ctx.remaining_s() <= 0:
                    raise
        finally:
            if not primary.done():
                primary.cancel()
        if self.metrics is not None:
            self.metrics.retries.labels(c.model).inc()
        return await self._rounds(c, left - 1, None)

    async def _race(
        self, c: _Call, primary: asyncio.Future[wire_pb2.InferReply], left: int
    ) -> wire_pb2.InferReply:
        """The late attempt against the rest of the attempts: the first answer wins."""
        rest = asyncio.ensure_future(self._rounds(c, left - 1, None))
        pending: set[asyncio.Future[wire_pb2.InferReply]] = {primary, rest}
        error: BaseException | None = None
        given_up: asyncio.Future[wire_pb2.InferReply] | None = None
        """The late attempt, given up, until its cancellation has reported it."""
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in (primary, rest):
                    if task not in done:
                        continue
                    err = task.exception()
                    if err is None:
                        return task.result()
                    if task is rest or error is None:
                        error = err
                    if task is rest and c.nobody and primary in pending:
                        # No replica is subscribed at all: the late one will not answer either.
                        # (One replica gone says nothing of the one the late attempt went to.)
                        pending.discard(primary)
                        primary.cancel(GONE)
                        given_up = primary
        finally:
            for task in pending:
                task.cancel()
            ended = [*pending, given_up] if given_up is not None else pending
            for task in ended:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        assert error is not None
        raise error

    def _another(self, c: _Call) -> bool:
        """Could a hedge go to a replica not yet tried?"""
        return bool(self.book.candidates(c.replicas, self.clock.monotonic(), c.tried))

    def _hedge_delay(self, model: str, policy: CallPolicy) -> float | None:
        """Past the model's p95 round trip (and at least hedge_min_ms), once it has one."""
        if not policy.hedge:
            return None
        p95 = self.book.p95_ms(model)
        return None if p95 is None else max(p95, policy.hedge_min_ms) / 1000

    async def _once(self, c: _Call, to: Candidate | None) -> wire_pb2.InferReply:
        model = c.model
        if to is None:
            replica, subject = "", subjects.infer(model)
        else:
            replica = to.replica
            subject = subjects.infer_replica(model, replica)
            c.tried.add(replica)
            self.book.sending(replica, 1)
        start = self.clock.monotonic()
        code = ""
        try:
            msg = await request(
                self.transport, subject, c.body, c.ctx, f"model {model}", c.headers,
                timeout_s=c.policy.attempt_timeout_s,
            )  # fmt: skip
            return checked(model, wire_pb2.InferReply.FromString(msg.data), c.digest)
        except BaseException as err:
            code = _code(err)
            c.nobody = c.nobody or (to is None and isinstance(err, NotSubscribed))
            raise
        finally:
            if replica:
                self.book.sending(replica, -1)
            attempt = Attempt(model, replica, (self.clock.monotonic() - start) * 1000, code)
            self.record(attempt)
            if c.report is not None:
                c.report.append(attempt)

    async def _wait_for(self, c: _Call, first: InFlight) -> wire_pb2.InferReply:
        """The first attempt another process sent, bounded as one of ours would be. Its
        Attempt is reported, not recorded: the sender applies it to its own breakers."""
        code = ""
        try:
            if not first.answer.done():
                left = min(
                    first.started + c.policy.attempt_timeout_s - self.clock.monotonic(),
                    c.ctx.remaining_s(),
                )
                await asyncio.wait({first.answer}, timeout=max(0.0, left))
            if not first.answer.done():
                waited = (self.clock.monotonic() - first.started) * 1000
                raise DeadlineExceeded(f"model {c.model}: no answer within {waited:.0f} ms")
            return first.answer.result()
        except BaseException as err:
            code = _code(err)
            raise
        finally:
            if first.replica:
                c.tried.add(first.replica)
            if c.report is not None:
                ms = (self.clock.monotonic() - first.started) * 1000
                c.report.append(Attempt(c.model, first.replica, ms, code, first.call))


def _code(err: BaseException) -> str:
    """The code an attempt that ended in `err` is reported with. One given up as gone
    counts as failed; one cancelled otherwise (another answered first), as slow."""
    if isinstance(err, ChorusError):
        return err.code_name
    if isinstance(err, asyncio.CancelledError):
        return "DEADLINE_EXCEEDED" if err.args and err.args[0] == GONE else OUTRUN
    return "INTERNAL"
