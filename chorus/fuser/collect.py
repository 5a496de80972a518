"""The fuser's end of the one-way path: members answer here, not to the router.

The router sends each member its share with this replica's collect subject as the reply
target, and the fuser the task with what to expect (`FuseCall.expected`). Whatever arrives
first, the task or an answer, waits for the other. A member that fails, or runs past its
p95 round trip, is asked again on another replica through the same `MemberCalls` the router
uses, so retries, hedging and breakers keep their rules; what each replica did goes back to
the router in `FuseReply.attempts`, for its own replica choice and breakers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from nats.aio.msg import Msg

from chorus.calls.client import RETRYABLE, CallPolicy, MemberCalls, error_of
from chorus.calls.quorum import too_few_members
from chorus.calls.rows import split_rows
from chorus.context import CallContext
from chorus.errors import ChorusError, DataLoss, DeadlineExceeded, InvalidArgument, Unavailable
from chorus.heartbeat import Heartbeat
from chorus.pb import tensor_pb2, wire_pb2

EARLY_KEEP_S = 10.0
"""Answers whose task has not arrived (or has finished) are kept this long, then dropped."""
NO_RESPONDERS = "503"
UNMEASURED_WAITS = 4
UNMEASURED_MS = 5.0
"""A model with no p95 yet is waited for this many service times plus this long."""
VIEW_S = 0.5
"""How long a model's heartbeat view (service time, a second replica or not) is reused."""
ALONE_P95S = 4
"""A model's only replica is asked again after this many p95 round trips, not one."""
OUTRUN = "CANCELLED"
"""An attempt another replica answered first: slow, not failed."""


Outcome = wire_pb2.InferReply | ChorusError


@dataclass
class _Member:
    expected: wire_pb2.Expected
    body: bytes
    asked: str = ""
    """The replica the router's call went to, from the reply subject ("" until it answers)."""
    first: asyncio.Future[wire_pb2.InferReply] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    answer: wire_pb2.InferReply | None = None
    latency_ms: float = 0.0
    error: ChorusError | None = None
    joined: bool = False
    """Its first answer came in a call that joined several tasks' rows."""


@dataclass
class Collected:
    """What the router needs back about the members, beside the fused answer."""

    answers: list[wire_pb2.MemberAnswer] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)
    attempts: list[wire_pb2.Attempt] = field(default_factory=list)
    joined: bool = False
    """A member answered in a joined call, so other tasks finished collecting with this one
    and can be fused with it (fuser.batch)."""

    def report(self, reply: wire_pb2.FuseReply) -> None:
        reply.answers.extend(self.answers)
        reply.missing.update(self.missing)
        reply.attempts.extend(self.attempts)


class Collector:
    def __init__(
        self,
        calls: MemberCalls,
        replicas: Callable[[str], list[Heartbeat]],
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.calls = calls
        self.replicas = replicas
        self.clock = clock
        self._waiting: dict[str, _Member] = {}
        self._early: OrderedDict[str, tuple[float, str, Outcome, bool]] = OrderedDict()
        self._views: dict[str, tuple[float, float, bool]] = {}

    async def on_answer(self, msg: Msg) -> None:
        """A member's answer (or NATS's no-responders status) on
        collect.<me>.<replica or _>.<call>; a joined call's is cut by rows for each task."""
        _, replica, token = msg.subject.rsplit(".", 2)
        replica = "" if replica == "_" else replica
        outcome = _outcome(msg)
        if not token.startswith("="):
            self._deliver(token, replica, outcome)
            return
        try:
            tasks = [(t, int(n)) for t, _, n in (p.partition("-") for p in token[1:].split("_"))]
        except ValueError:
            return  # not a subject this fuser's routers write
        parts: list[Outcome]
        if isinstance(outcome, ChorusError):
            parts = [outcome] * len(tasks)
        else:
            try:
                parts = list(split_rows(outcome, [n for _, n in tasks]))
            except DataLoss as err:
                parts = [err] * len(tasks)
            for part in parts:
                if isinstance(part, wire_pb2.InferReply):
                    part.input_sha256 = ""  # the joined body's; each task checks its own
        for (tag, _), part in zip(tasks, parts, strict=True):
            self._deliver(tag, replica, part, joined=True)

    def _deliver(self, tag: str, replica: str, outcome: Outcome, joined: bool = False) -> None:
        member = self._waiting.pop(tag, None)
        if member is not None:
            member.joined = joined
            _settle_first(member, replica, outcome)
            return
        now = self.clock()
        self._early[tag] = (now, replica, outcome, joined)
        while self._early and next(iter(self._early.values()))[0] < now - EARLY_KEEP_S:
            self._early.popitem(last=False)

    async def collect(self, call: wire_pb2.FuseCall, ctx: CallContext) -> Collected:
        """Waits for the expected members (asking again where one fails or lags) and puts
        their scores into `call.members`; too few answering fails the task as the router's
        two-hop path would."""
        start = self.clock()
        wait_s = (call.wait_ms / 1000) if call.wait_ms else ctx.remaining_s()
        wait_ctx = CallContext(
            ctx.task_id,
            ctx.priority,
            min(ctx.deadline_ms, int((time.time() + wait_s) * 1000)),
        )
        policy = CallPolicy(
            max_attempts=max(1, call.max_attempts or 3),
            attempt_timeout_s=(call.attempt_timeout_ms or 2000) / 1000,
            hedge=call.hedge,
        )
        members = []
        for e in call.expected:
            if e.body >= len(call.bodies):
                raise InvalidArgument(
                    f"expected[{e.model!r}].body: {e.body} is past the "
                    f"{len(call.bodies)} bodies sent"
                )
            m = _Member(e, call.bodies[e.body])
            members.append(m)
            early = self._early.pop(e.call, None)
            if early is not None:
                m.joined = early[3]
                _settle_first(m, early[1], early[2])
            else:
                self._waiting[e.call] = m
        collected = Collected()
        until = start + max(0.0, min(wait_s, ctx.remaining_s()))
        patience = min(self._patience(m, policy, wait_ctx) for m in members)
        await _all_or_timeout([m.first for m in members], min(patience, until - self.clock()))
        slow = [m for m in members if not self._took_first(m, start, collected)]
        tasks = [
            asyncio.ensure_future(self._member(m, start, wait_ctx, policy, collected)) for m in slow
        ]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, until - self.clock()))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for m in members:
                self._waiting.pop(m.expected.call, None)
        waited = (self.clock() - start) * 1000
        errors: dict[str, ChorusError] = {}
        for m in members:
            model = m.expected.model
            if m.answer is None:
                err = m.error or DeadlineExceeded(
                    f"model {model}: no answer within {waited:.0f} ms"
                )
                errors[model] = err
                collected.missing[model] = f"{err.code_name}: {err.message}"
                continue
            try:
                scores = _output(m.answer, m.expected.scores_output)
            except ChorusError as err:
                errors[model] = err
                collected.missing[model] = f"{err.code_name}: {err.message}"
                continue
            call.members.add(
                model=model,
                version=m.answer.version,
                probabilities=scores,
                scores_output=m.expected.scores_output,
                output_kind=m.expected.output_kind,
                temperature=m.expected.temperature,
            )
            collected.answers.append(
                wire_pb2.MemberAnswer(
                    model=model,
                    version=m.answer.version,
                    replica=m.answer.replica,
                    outputs=m.answer.outputs,
                    latency_ms=m.latency_ms,
                )
            )
        collected.joined = any(m.joined for m in members if m.answer is not None)
        needed = min(max(1, call.min_members), len(members))
        if len(call.members) < needed:
            raise too_few_members(call.capability, errors, len(call.members), needed)
        return collected

    async def _member(
        self,
        m: _Member,
        start: float,
        ctx: CallContext,
        policy: CallPolicy,
        collected: Collected,
    ) -> None:
        """A member the first wait did not settle: waits out its own patience, then asks
        another replica (or, with no retries allowed, waits out the first attempt)."""
        e = m.expected
        first_timeout = min(policy.attempt_timeout_s, max(0.0, ctx.remaining_s()))
        patience = self._patience(m, policy, ctx)
        if not m.first.done():
            await asyncio.wait({m.first}, timeout=max(0.0, start + patience - self.clock()))
        if self._took_first(m, start, collected):
            return
        if policy.max_attempts < 2 or (m.first.done() and not _retryable(m.first)):
            if not m.first.done():
                await asyncio.wait({m.first}, timeout=max(0.0, first_timeout - patience))
            if not self._took_first(m, start, collected):
                self._first_failed(m, start, collected)
            return
        retry = asyncio.ensure_future(
            self.calls.call(
                e.model, self.replicas(e.model), m.body, e.input_sha256, ctx,
                exclude={m.asked} if m.asked else None,
                policy=replace(policy, max_attempts=policy.max_attempts - 1),
            )
        )  # fmt: skip
        retry_start = self.clock()
        pending: set[asyncio.Future[object]] = {retry}  # type: ignore[arg-type]
        if m.first.done():
            self._first_failed(m, start, collected)
        else:
            pending.add(m.first)  # type: ignore[arg-type]
        first_deadline = start + first_timeout
        try:
            while pending:
                timeout = first_deadline - self.clock() if m.first in pending else None
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # the first attempt ran out of time; the retry goes on
                    pending.discard(m.first)
                    self._first_failed(m, start, collected)
                    continue
                if m.first in done and self._took_first(m, start, collected):
                    return
                if m.first in done:
                    self._first_failed(m, start, collected)
                if retry in done:
                    if retry.exception() is None:
                        reply, _ = retry.result()
                        m.answer = reply
                        m.latency_ms = (self.clock() - start) * 1000
                        collected.attempts.append(
                            wire_pb2.Attempt(
                                model=e.model,
                                replica=reply.replica,
                                latency_ms=(self.clock() - retry_start) * 1000,
                            )
                        )
                        if not m.first.done():
                            self._outrun(m, start, collected)
                        return
                    err = retry.exception()
                    m.error = err if isinstance(err, ChorusError) else Unavailable(repr(err))
                    if isinstance(m.error, Unavailable) and m.first in pending:
                        # No other replica to ask; none subscribed at all, most likely, so
                        # the first will not answer either.
                        pending.discard(m.first)
                        self._first_failed(m, start, collected)
        finally:
            if not retry.done():
                retry.cancel()
                with contextlib.suppress(asyncio.CancelledError, ChorusError):
                    await retry

    def _patience(self, m: _Member, policy: CallPolicy, ctx: CallContext) -> float:
        """How long the first attempt is waited for alone before another replica is asked:
        the model's p95 round trip, or, until it has one, a few of its heartbeats' service
        times. No-responders goes to the router, not here, so a replica that is gone shows
        only as silence, and waiting out a whole attempt timeout for it would cost the task
        most of its wait."""
        patience = min(policy.attempt_timeout_s, max(0.0, ctx.remaining_s()))
        if not policy.hedge or policy.max_attempts < 2:
            return patience
        model = m.expected.model
        p95 = self.calls.book.p95_ms(model)
        service, alone = self._view(model)
        if p95 is None:
            p95 = UNMEASURED_WAITS * service + UNMEASURED_MS
        elif alone:
            # No other replica: a second request lands on the same one (its queue group),
            # so it is sent only when the first is very late.
            p95 *= ALONE_P95S
        return min(patience, max(p95, policy.hedge_min_ms) / 1000)

    def _view(self, model: str) -> tuple[float, bool]:
        """The model's slowest heartbeat service time, and whether one replica at most can
        be asked; refreshed every VIEW_S rather than for every member of every task."""
        now = self.calls.clock()
        seen = self._views.get(model)
        if seen is None or now - seen[0] > VIEW_S:
            replicas = self.replicas(model)
            service = max((hb.ewma_ms for hb in replicas), default=0.0)
            alone = len(self.calls.book.candidates(replicas, now, set())) < 2
            seen = self._views[model] = (now, service, alone)
        return seen[1], seen[2]

    def _took_first(self, m: _Member, start: float, collected: Collected) -> bool:
        """The first attempt's answer, taken if it came and is good."""
        if not m.first.done() or m.first.exception() is not None:
            return False
        e = m.expected
        m.answer = m.first.result()
        m.latency_ms = (self.clock() - start) * 1000
        self.calls.book.record_latency(e.model, m.latency_ms)
        collected.attempts.append(
            wire_pb2.Attempt(model=e.model, replica=m.asked, latency_ms=m.latency_ms, call=e.call)
        )
        return True

    def _first_failed(self, m: _Member, start: float, collected: Collected) -> None:
        e = m.expected
        if m.first.done():
            exc = m.first.exception()
            err = exc if isinstance(exc, ChorusError) else Unavailable(repr(exc))
        else:
            err = DeadlineExceeded(
                f"model {e.model}: no answer within {(self.clock() - start) * 1000:.0f} ms"
            )
        m.error = m.error or err
        collected.attempts.append(
            wire_pb2.Attempt(
                model=e.model,
                replica=m.asked,
                latency_ms=(self.clock() - start) * 1000,
                code=err.code_name,
                call=e.call,
            )
        )

    def _outrun(self, m: _Member, start: float, collected: Collected) -> None:
        collected.attempts.append(
            wire_pb2.Attempt(
                model=m.expected.model,
                replica=m.asked,
                latency_ms=(self.clock() - start) * 1000,
                code=OUTRUN,
                call=m.expected.call,
            )
        )


async def _all_or_timeout(
    futures: list[asyncio.Future[wire_pb2.InferReply]], timeout: float
) -> None:
    """Until every future is done or `timeout` passes: one future and one timer for the
    task, not a task per member (the common case is every member answering in time)."""
    pending = [f for f in futures if not f.done()]
    if not pending or timeout <= 0:
        return
    loop = asyncio.get_running_loop()
    all_in: asyncio.Future[None] = loop.create_future()
    left = len(pending)

    def one_in(_: object) -> None:
        nonlocal left
        left -= 1
        if left == 0 and not all_in.done():
            all_in.set_result(None)

    def give_up() -> None:
        if not all_in.done():
            all_in.set_result(None)

    for f in pending:
        f.add_done_callback(one_in)
    timer = loop.call_later(timeout, give_up)
    try:
        await all_in
    finally:
        timer.cancel()
        for f in pending:
            f.remove_done_callback(one_in)


def _outcome(msg: Msg) -> Outcome:
    headers = msg.headers or {}
    if headers.get("Status") == NO_RESPONDERS:
        return Unavailable("no replica is subscribed to the subject it was sent on")
    err = error_of(msg)
    if err is not None:
        return err
    try:
        return wire_pb2.InferReply.FromString(msg.data)
    except Exception:
        return DataLoss("reply is not an InferReply")


def _settle_first(m: _Member, replica: str, outcome: Outcome) -> None:
    if m.first.done():
        return
    e = m.expected
    m.asked = replica
    if isinstance(outcome, ChorusError):
        m.first.set_exception(type(outcome)(f"model {e.model}: {outcome.message}"))
    elif outcome.input_sha256 and outcome.input_sha256 != e.input_sha256:
        m.first.set_exception(
            DataLoss(f"model {e.model}: answered an input other than the one sent")
        )
    else:
        m.first.set_result(outcome)


def _retryable(fut: asyncio.Future[wire_pb2.InferReply]) -> bool:
    return isinstance(fut.exception(), RETRYABLE)


def _output(reply: wire_pb2.InferReply, name: str) -> tensor_pb2.Tensor:
    for t in reply.outputs:
        if t.name == name:
            return t
    raise Unavailable(f"model {reply.model}: reply has no {name!r} output")
