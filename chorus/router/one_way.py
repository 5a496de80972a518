"""The one-way data path: router -> members -> fuser -> router.

The router picks a fuser replica, sends it the task (what to expect, from which replica, and
the bodies in case a member must be asked again), and sends each member its share with that
fuser's collect subject as the reply target. Members answer the fuser, which fuses once they
have (retrying or hedging a member that fails or lags) and answers the router. One serial
NATS round trip per task instead of two, and the router no longer parses member replies.

A fuser that is gone or silent costs the task its one-way attempt, not its answer: `run`
returns None and the router asks again over the two-hop path with the time left.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
from dataclasses import replace
from itertools import count
from typing import Any

from opentelemetry.trace import SpanKind

from chorus.core import subjects, tracing
from chorus.core.calls.attempts import Attempt
from chorus.core.calls.client import MemberCalls
from chorus.core.calls.clock import SYSTEM, Clock
from chorus.core.calls.payload import Payload
from chorus.core.calls.request import error_of
from chorus.core.calls.transport import Message, NoResponders, RequestTimeout, Transport
from chorus.core.context import INPUT_SHA256, TASKS, CallContext
from chorus.core.errors import ChorusError
from chorus.core.heartbeat import Heartbeat
from chorus.pb import wire_pb2
from chorus.router.coalesce import Coalescer, Observe
from chorus.router.dispatch import FanOut

MAX_JOINED_TASKS = 64
"""Tasks one joined one-way call may carry: their tokens ride in its reply subject."""
HOLD_P95S = 4
HOLD_WAITS = 8
HOLD_MIN_MS = 50.0
"""A call holds its model's slot until a task it carries is answered, or for this many p95
round trips (service times from heartbeats, until it has a p95), and at least this long."""
FUSER_TTL_S = 3.0
"""A fuser replica silent this long (three heartbeats) gets no more one-way tasks."""
WAIT_SHARE = 1.5
"""The fuser waits for members up to this many attempt timeouts (retries included)."""


class FuserBook:
    """Live fuser replicas, from their heartbeats, with this router's one-way tasks on each."""

    def __init__(self, *, clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self._rng = random.Random()

    async def on_heartbeat(self, msg: Message) -> None:
        replica = msg.data.decode(errors="replace")
        if replica and replica.isalnum():
            self._seen[replica] = self.clock.monotonic()

    def pick(self) -> str | None:
        """The live replica with the fewest of this router's tasks (ties at random)."""
        now = self.clock.monotonic()
        live = [r for r, t in self._seen.items() if now - t <= FUSER_TTL_S]
        if not live:
            return None
        least = min(self._busy.get(r, 0) for r in live)
        return self._rng.choice([r for r in live if self._busy.get(r, 0) == least])

    def gone(self, replica: str) -> None:
        self._seen.pop(replica, None)

    def started(self, replica: str, change: int) -> None:
        self._busy[replica] = self._busy.get(replica, 0) + change


class OneWay:
    def __init__(
        self,
        transport: Transport,
        calls: MemberCalls,
        fusers: FuserBook,
        *,
        coalesce_rows: int = 256,
        observe: Observe | None = None,
        waiting: Observe | None = None,
    ) -> None:
        """Calls to a busy model are joined as on the two-hop path (`coalesce_rows`,
        `observe`, `waiting` as the Coalescer takes them), per fuser replica, since a joined
        call's answer goes to one."""
        self.transport = transport
        self.calls = calls
        self.fusers = fusers
        self._prefix = secrets.token_hex(4)
        self._tokens = count()
        self._joiners: dict[str, Coalescer] = {}
        self._joining = (coalesce_rows, observe, waiting)
        self._answered: dict[str, asyncio.Future[None]] = {}
        self._sent_to: dict[str, str] = {}

    async def run(
        self,
        replicas: dict[str, list[Heartbeat]],
        payloads: dict[str, Payload],
        call: wire_pb2.FuseCall,
        ctx: CallContext,
    ) -> tuple[FanOut, wire_pb2.FuseReply] | None:
        """The members' answers and the fused reply; None when no fuser took the task (none
        live, or the one asked is gone), so the caller can go the two-hop way. A task the
        fuser refused (too few members, bad input) raises its error."""
        fuser = self.fusers.pick()
        if fuser is None:
            return None
        policy = self.calls.policy
        left = ctx.remaining_s()
        # Half the time left at most, so a fuser cut off mid-task leaves the two-hop retry
        # the other half.
        budget = min(left / 2, policy.attempt_timeout_s * (WAIT_SHARE + 1))
        wait_s = min(policy.attempt_timeout_s * WAIT_SHARE, budget * 0.75)
        call.wait_ms = max(1, int(wait_s * 1000))
        call.max_attempts = policy.max_attempts
        call.attempt_timeout_ms = max(1, int(policy.attempt_timeout_s * 1000))
        call.hedge = policy.hedge
        bodies: dict[int, int] = {}
        tags: dict[str, str] = {}
        for model, payload in payloads.items():
            hb = replicas[model][0]
            index = bodies.setdefault(id(payload), len(bodies))
            if index == len(call.bodies):
                call.bodies.append(payload.body)
            tags[model] = f"{self._prefix}{next(self._tokens):x}"
            call.expected.add(
                model=model, call=tags[model], body=index, input_sha256=payload.digest,
                scores_output=hb.scores_output, output_kind=hb.output_kind,
                temperature=hb.temperature,
            )  # fmt: skip
        self.fusers.started(fuser, 1)
        with tracing.span("request fuser", kind=SpanKind.CLIENT, subject=fuser):
            opened = asyncio.ensure_future(
                self.transport.request(
                    subjects.fuse_replica(fuser), call.SerializeToString(),
                    tracing.inject(ctx.to_headers()), budget,
                )
            )  # fmt: skip
        joiner = self._joiner(fuser)
        placing = [
            asyncio.ensure_future(
                joiner.call(model, replicas[model], p.body, p.digest, ctx, tags[model])
            )
            for model, p in payloads.items()
        ]
        try:
            msg = await opened
        except NoResponders:
            self.fusers.gone(fuser)
            return None
        except RequestTimeout:
            return None
        finally:
            self.fusers.started(fuser, -1)
            for tag in tags.values():
                answered = self._answered.pop(tag, None)
                if answered is not None and not answered.done():
                    answered.set_result(None)
            for p in placing:
                p.cancel()  # a call still waiting to be joined is never sent
                p.add_done_callback(_retrieve)
        try:
            err = error_of(msg)
            if err is not None:
                raise type(err)(err.message)
            reply = wire_pb2.FuseReply.FromString(msg.data)
            self._learn(reply)
        finally:
            for tag in tags.values():
                self._sent_to.pop(tag, None)
        return fanned(reply), reply

    def _joiner(self, fuser: str) -> Coalescer:
        joiner = self._joiners.get(fuser)
        if joiner is None:
            rows, observe, waiting = self._joining
            joiner = self._joiners[fuser] = Coalescer(
                functools.partial(self._send, fuser),
                max_rows=rows,
                max_tasks=MAX_JOINED_TASKS,
                observe=observe,
                waiting=waiting,
            )
        return joiner

    async def _send(
        self,
        fuser: str,
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        tasks: list[tuple[str, int]],
    ) -> tuple[wire_pb2.InferReply, float]:
        """One member call answering `fuser`; returns once a task it carries is answered
        (the fuser has the member's answer by then), which frees the model's slot."""
        # No probe of a half-open breaker: the attempt's outcome comes back from the fuser, if
        # at all, so a probe taken here could stay taken.
        chosen = self.calls.pick(replicas, probe=False)
        replica = chosen.replica if chosen is not None else ""
        subject = subjects.infer_replica(model, replica) if replica else subjects.infer(model)
        if len(tasks) == 1:
            token = tasks[0][0]
        else:
            token = "=" + "_".join(f"{tag}-{rows}" for tag, rows in tasks)
        answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for tag, _ in tasks:
            self._answered[tag] = answered
            self._sent_to[tag] = replica
        if replica:
            self.calls.book.sending(replica, 1)
        # The answer goes to the fuser, so the slot is held until a task the call carries
        # is answered, or a few p95 round trips if that is sooner: a task held up by another
        # member (or one that never answers) must not hold this model's slot for long.
        p95 = self.calls.book.p95_ms(model)
        if p95 is None:
            hold_ms = HOLD_WAITS * max((hb.ewma_ms for hb in replicas), default=0.0)
        else:
            hold_ms = HOLD_P95S * p95
        hold_s = max(hold_ms, HOLD_MIN_MS) / 1000
        try:
            reply_to = subjects.collect(fuser, f"{replica or '_'}.{token}")
            with tracing.span(f"request model {model}", kind=SpanKind.PRODUCER, subject=subject):
                headers = {**tracing.inject(ctx.to_headers()), INPUT_SHA256: digest}
                if len(tasks) > 1:
                    headers[TASKS] = str(len(tasks))
                await self.transport.publish(subject, body, reply=reply_to, headers=headers)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.shield(answered), timeout=max(0.0, min(hold_s, ctx.remaining_s()))
                )
        finally:
            if replica:
                self.calls.book.sending(replica, -1)
            for tag, _ in tasks:
                if self._answered.get(tag) is answered:
                    del self._answered[tag]
        return _NOTHING, 0.0

    def _learn(self, reply: wire_pb2.FuseReply) -> None:
        """What the fuser saw of each replica feeds this router's choice and breakers, as
        its own attempts do."""
        for a in reply.attempts:
            attempt = Attempt.from_proto(a)
            if not attempt.replica:
                replica = self._sent_to.get(attempt.call, "")
                if not replica:
                    continue
                attempt = replace(attempt, replica=replica)
            self.calls.record(attempt)
        for answer in reply.answers:
            self.calls.book.record_latency(answer.model, answer.latency_ms)


_NOTHING = wire_pb2.InferReply()
"""What a one-way member call gives its joined tasks in the router: the answer is the fuser's."""


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def fanned(reply: wire_pb2.FuseReply) -> FanOut:
    """The members' answers a fused reply carries, as the two-hop path's fan-out holds them."""
    out = FanOut()
    for a in reply.answers:
        out.replies[a.model] = wire_pb2.InferReply(
            model=a.model, version=a.version, replica=a.replica, outputs=a.outputs
        )
        out.latency_ms[a.model] = a.latency_ms
    for model, why in reply.missing.items():
        out.errors[model] = ChorusError.from_code_name(why.code, why.message)
    return out
