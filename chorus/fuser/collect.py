"""The fuser's end of the one-way path: members answer here, not to the router.

The router sends each member its share with this replica's collect subject as the reply
target, and the fuser the task with what to expect (`FuseCall.expected`). Whatever arrives
first, the task or an answer, waits for the other. A member whose first answer does not come
in time is handed to `MemberCalls` with that first attempt in flight (`InFlight`), so the
retries, hedging and breakers on this side are the router's own code; every attempt goes back
to the router in `FuseReply.attempts`, for its own replica choice and breakers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from chorus.core.calls.attempts import Attempt, InFlight
from chorus.core.calls.client import CallPolicy, MemberCalls
from chorus.core.calls.quorum import too_few_members
from chorus.core.calls.request import checked, error_of
from chorus.core.calls.rows import split_rows
from chorus.core.calls.transport import Message
from chorus.core.context import CallContext
from chorus.core.errors import ChorusError, DataLoss, DeadlineExceeded, InvalidArgument, Unavailable
from chorus.core.heartbeat import Heartbeat
from chorus.pb import tensor_pb2, wire_pb2

EARLY_KEEP_S = 10.0
"""Answers whose task has not arrived (or has finished) are kept this long, then dropped."""
NO_RESPONDERS = "503"


Outcome = wire_pb2.InferReply | ChorusError


@dataclass(slots=True)
class _Member:
    expected: wire_pb2.Expected
    body: bytes
    first: InFlight
    """The router's call; `first.replica` is filled from the reply subject when it answers."""
    answer: wire_pb2.InferReply | None = None
    latency_ms: float = 0.0
    error: ChorusError | None = None
    joined: bool = False
    """Its first answer came in a call that joined several tasks' rows."""


@dataclass
class Collected:
    """The task as it is to be fused, and what the router needs back about the members."""

    task: wire_pb2.FuseCall = field(default_factory=wire_pb2.FuseCall)
    """The call as received (which is left as it came), with the members' scores that came and
    the task's inputs where a policy needs them; without the bodies and expectations."""
    answers: list[wire_pb2.MemberAnswer] = field(default_factory=list)
    missing: dict[str, ChorusError] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)
    joined: bool = False
    """A member answered in a joined call, so other tasks finished collecting with this one
    and can be fused with it (fuser.batch)."""

    def outcomes(self) -> dict[str, str]:
        """Each expected member's outcome for the `collected` metric: `ok` when the router's
        own attempt answered, `retried` when another did (a retry, or a hedge that won),
        `missing` when none did. A hedge outrun by the router's attempt leaves it `ok`."""
        first_ok = {a.model for a in self.attempts if a.answered and a.call}
        out = {a.model: "ok" if a.model in first_ok else "retried" for a in self.answers}
        out.update(dict.fromkeys(self.missing, "missing"))
        return out

    def report(self, reply: wire_pb2.FuseReply) -> None:
        reply.answers.extend(self.answers)
        for model, err in self.missing.items():
            why = reply.missing[model]
            why.code, why.message = err.code_name, err.message
        reply.attempts.extend(a.to_proto() for a in self.attempts)


class Collector:
    def __init__(
        self,
        calls: MemberCalls,
        replicas: Callable[[str], list[Heartbeat]],
    ) -> None:
        """`calls` asks members again, on its clock (the collector's too: first attempts in
        flight are timed on it); `replicas(model)`: the model's live replicas."""
        self.calls = calls
        self.replicas = replicas
        self.clock = calls.clock
        self._waiting: dict[str, _Member] = {}
        self._early: OrderedDict[str, tuple[float, str, Outcome, bool]] = OrderedDict()

    async def on_answer(self, msg: Message) -> None:
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
        now = self.clock.monotonic()
        self._early[tag] = (now, replica, outcome, joined)
        while self._early and next(iter(self._early.values()))[0] < now - EARLY_KEEP_S:
            self._early.popitem(last=False)

    async def collect(self, call: wire_pb2.FuseCall, ctx: CallContext) -> Collected:
        """Waits for the expected members (asking again where one fails or lags) and returns
        the task to fuse with their scores in it (`Collected.task`); too few answering fails
        the task as the router's two-hop path would. `call` is not changed."""
        start = self.clock.monotonic()
        wait_s = (call.wait_ms / 1000) if call.wait_ms else ctx.remaining_s()
        wait_ctx = ctx
        if ctx.remaining_s() > wait_s:
            wait_ctx = CallContext.start(ctx.task_id, ctx.priority, wait_s)
        policy = CallPolicy(
            max_attempts=max(1, call.max_attempts or 3),
            attempt_timeout_s=(call.attempt_timeout_ms or 2000) / 1000,
            hedge=call.hedge,
        )
        loop = asyncio.get_running_loop()
        first_bound = min(policy.attempt_timeout_s, max(0.0, wait_ctx.remaining_s()))
        members = []
        for e in call.expected:
            if e.body >= len(call.bodies):
                raise InvalidArgument(
                    f"expected[{e.model!r}].body: {e.body} is past the "
                    f"{len(call.bodies)} bodies sent"
                )
            patience = self.calls.patience(e.model, self.replicas, policy, wait_ctx)
            first = InFlight(loop.create_future(), start, e.call, patience=patience)
            m = _Member(e, call.bodies[e.body], first)
            members.append(m)
            early = self._early.pop(e.call, None)
            if early is not None:
                m.joined = early[3]
                _settle_first(m, early[1], early[2])
            else:
                self._waiting[e.call] = m
        collected = Collected()
        until = start + max(0.0, min(wait_s, ctx.remaining_s()))
        alone = min(first_bound if m.first.patience is None else m.first.patience for m in members)
        await _all_or_timeout(
            [m.first.answer for m in members], min(alone, until - self.clock.monotonic())
        )
        slow = []
        for m in members:
            if m.first.answer.done() and m.first.answer.exception() is None:
                self._took_first(m, start, collected)
            else:
                slow.append(m)
        tasks = [asyncio.ensure_future(self._member(m, wait_ctx, policy, collected)) for m in slow]
        try:
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, until - self.clock.monotonic()))
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for m in members:
                self._waiting.pop(m.expected.call, None)
        waited = (self.clock.monotonic() - start) * 1000
        errors: dict[str, ChorusError] = {}
        scored: list[wire_pb2.MemberScores] = []
        for m in members:
            model = m.expected.model
            if m.answer is None:
                err = m.error or DeadlineExceeded(
                    f"model {model}: no answer within {waited:.0f} ms"
                )
                errors[model] = err
                collected.missing[model] = err
                continue
            try:
                scores = _output(m.answer, m.expected.scores_output)
            except ChorusError as err:
                errors[model] = err
                collected.missing[model] = err
                continue
            scored.append(
                wire_pb2.MemberScores(
                    model=model,
                    version=m.answer.version,
                    probabilities=scores,
                    scores_output=m.expected.scores_output,
                    output_kind=m.expected.output_kind,
                    temperature=m.expected.temperature,
                )
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
        if len(scored) < needed:
            raise too_few_members(call.capability, errors, len(scored), needed)
        inputs = (
            inputs_of(call.bodies) if call.inputs_in_bodies and not call.inputs else call.inputs
        )
        collected.task = wire_pb2.FuseCall(
            policy=call.policy, labels=call.labels, capability=call.capability,
            task_id=call.task_id, conflict=call.conflict, min_members=call.min_members,
            members=scored, inputs=inputs,
        )  # fmt: skip
        return collected

    async def _member(
        self, m: _Member, ctx: CallContext, policy: CallPolicy, collected: Collected
    ) -> None:
        """A member the first wait did not settle: the router's attempt still in flight,
        handed to MemberCalls, which waits it out, retries and hedges."""
        e = m.expected
        try:
            m.answer, m.latency_ms = await self.calls.call(
                e.model, self.replicas(e.model), m.body, e.input_sha256, ctx,
                policy=policy, first=m.first, report=collected.attempts,
            )  # fmt: skip
        except ChorusError as err:
            m.error = err
        except Exception as err:
            m.error = Unavailable(f"model {e.model}: {err!r}")

    def _took_first(self, m: _Member, start: float, collected: Collected) -> None:
        """The router's attempt answered in time: the common case, no MemberCalls needed."""
        e = m.expected
        m.answer = m.first.answer.result()
        m.latency_ms = (self.clock.monotonic() - start) * 1000
        self.calls.book.record_latency(e.model, m.latency_ms)
        collected.attempts.append(Attempt(e.model, m.first.replica, m.latency_ms, call=e.call))


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


def _outcome(msg: Message) -> Outcome:
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
    answer = m.first.answer
    if answer.done():
        return
    model = m.expected.model
    m.first.replica = replica
    if isinstance(outcome, ChorusError):
        answer.set_exception(type(outcome)(f"model {model}: {outcome.message}"))
        return
    try:
        answer.set_result(checked(model, outcome, m.expected.input_sha256))
    except DataLoss as err:
        answer.set_exception(err)


def inputs_of(bodies: Sequence[bytes]) -> list[tensor_pb2.Tensor]:
    """The task's inputs out of the members' InferCall bodies: each tensor once, in the order
    first seen (a body holds the inputs its member takes, in the task's order)."""
    seen: dict[str, tensor_pb2.Tensor] = {}
    for body in bodies:
        try:
            call = wire_pb2.InferCall.FromString(body)
        except Exception:
            raise InvalidArgument("bodies: one is not an InferCall") from None
        for t in call.inputs:
            seen.setdefault(t.name, t)
    return list(seen.values())


def _output(reply: wire_pb2.InferReply, name: str) -> tensor_pb2.Tensor:
    for t in reply.outputs:
        if t.name == name:
            return t
    raise Unavailable(f"model {reply.model}: reply has no {name!r} output")
