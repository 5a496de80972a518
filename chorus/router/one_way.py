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
import hashlib
import random
import secrets
import time
from collections.abc import Callable
from itertools import count

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from chorus import subjects, tracing
from chorus.calls.client import MemberCalls, error_of
from chorus.context import INPUT_SHA256, CallContext
from chorus.errors import ChorusError
from chorus.heartbeat import Heartbeat
from chorus.pb import wire_pb2
from chorus.router.dispatch import FanOut

FUSER_TTL_S = 3.0
"""A fuser replica silent this long (three heartbeats) gets no more one-way tasks."""
WAIT_SHARE = 1.5
"""The fuser waits for members up to this many attempt timeouts (retries included)."""
OUTRUN = "CANCELLED"


class FuserBook:
    """Live fuser replicas, from their heartbeats, with this router's one-way tasks on each."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._seen: dict[str, float] = {}
        self._busy: dict[str, int] = {}
        self._rng = random.Random()

    async def on_heartbeat(self, msg: Msg) -> None:
        replica = msg.data.decode(errors="replace")
        if replica and replica.isalnum():
            self._seen[replica] = self.clock()

    def pick(self) -> str | None:
        """The live replica with the fewest of this router's tasks (ties at random)."""
        now = self.clock()
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
    def __init__(self, nc: Client, calls: MemberCalls, fusers: FuserBook) -> None:
        self.nc = nc
        self.calls = calls
        self.fusers = fusers
        self._prefix = secrets.token_hex(4)
        self._tokens = count()

    async def run(
        self,
        replicas: dict[str, list[Heartbeat]],
        payloads: dict[str, bytes],
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
        wait_s = min(left, policy.attempt_timeout_s * WAIT_SHARE)
        call.wait_ms = max(1, int(wait_s * 1000))
        call.max_attempts = policy.max_attempts
        call.attempt_timeout_ms = max(1, int(policy.attempt_timeout_s * 1000))
        call.hedge = policy.hedge
        bodies: dict[int, int] = {}
        digests = {id(b): hashlib.sha256(b).hexdigest() for b in payloads.values()}
        sends: list[tuple[str, bytes, str, str]] = []
        for model, body in payloads.items():
            hb = replicas[model][0]
            index = bodies.setdefault(id(body), len(bodies))
            if index == len(call.bodies):
                call.bodies.append(body)
            chosen = self.calls.chooser.choose(
                self.calls.book.candidates(replicas[model], self.calls.clock(), set()),
                self.calls.rng,
            )
            replica = chosen.replica if chosen is not None else ""
            token = f"{self._prefix}{next(self._tokens):x}"
            digest = digests[id(body)]
            call.expected.add(
                model=model, replica=replica, call=token, body=index, input_sha256=digest,
                scores_output=hb.scores_output, output_kind=hb.output_kind,
                temperature=hb.temperature,
            )  # fmt: skip
            subject = subjects.infer_replica(model, replica) if replica else subjects.infer(model)
            sends.append((subject, body, digest, token))
        headers = tracing.inject(ctx.to_headers())
        timeout = min(left, wait_s + policy.attempt_timeout_s)
        states = [self.calls.book.state(e.replica) for e in call.expected if e.replica]
        for st in states:
            st.outstanding += 1
        self.fusers.started(fuser, 1)
        try:
            opened = self.nc.request(
                subjects.fuse_replica(fuser), call.SerializeToString(), timeout=timeout,
                headers=headers,
            )  # fmt: skip
            pending = asyncio.ensure_future(opened)
            collect_to = subjects.collect(fuser, "")
            for subject, body, digest, token in sends:
                await self.nc.publish(
                    subject, body, reply=collect_to + token,
                    headers={**headers, INPUT_SHA256: digest},
                )  # fmt: skip
            try:
                msg = await pending
            except NoRespondersError:
                self.fusers.gone(fuser)
                return None
            except NatsTimeout:
                return None
        finally:
            self.fusers.started(fuser, -1)
            for st in states:
                st.outstanding -= 1
        err = error_of(msg)
        if err is not None:
            raise type(err)(err.message)
        reply = wire_pb2.FuseReply.FromString(msg.data)
        self._learn(reply)
        return _fan(reply), reply

    def _learn(self, reply: wire_pb2.FuseReply) -> None:
        """What the fuser saw of each replica feeds this router's choice and breakers."""
        book, now = self.calls.book, self.calls.clock()
        for a in reply.attempts:
            if not a.replica:
                continue
            st = book.state(a.replica)
            if not a.code:
                st.observe(a.latency_ms)
                st.breaker.success()
                if self.calls.metrics is not None:
                    self.calls.metrics.chosen.labels(a.model, a.replica).inc()
            elif a.code == OUTRUN:
                st.observe(a.latency_ms)
            elif a.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
                st.observe(a.latency_ms)
                st.breaker.failure(now)
        for a in reply.answers:
            book.record_latency(a.model, a.latency_ms)


def _fan(reply: wire_pb2.FuseReply) -> FanOut:
    out = FanOut()
    for a in reply.answers:
        out.replies[a.model] = wire_pb2.InferReply(
            model=a.model, version=a.version, replica=a.replica, outputs=a.outputs
        )
        out.latency_ms[a.model] = a.latency_ms
    for model, why in reply.missing.items():
        code, _, message = why.partition(": ")
        out.errors[model] = ChorusError.from_code_name(code, message)
    return out
