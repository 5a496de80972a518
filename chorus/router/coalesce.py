"""Concurrent tasks' calls to one model share NATS requests.

While as many calls to a model are out as its replicas have inference slots, the next tasks'
calls for it (of one priority) wait, and when one returns, the waiting ones of one input shape
go as one InferCall: their rows joined (tensors are raw
bytes, so joining is concatenation), the reply split back by rows. A lone call goes at once,
so nothing waits on a timer; under load, messages, parses and event-loop turns are paid per
batch instead of per task, in the router, nats-server and the members alike.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from chorus.core.calls.rows import split_rows
from chorus.core.context import CallContext
from chorus.core.errors import DeadlineExceeded
from chorus.core.heartbeat import Heartbeat
from chorus.pb import tensor_pb2, wire_pb2

Send = Callable[
    [str, list[Heartbeat], bytes, str, CallContext, list[tuple[str, int]]],
    Awaitable[tuple[wire_pb2.InferReply, float]],
]
"""send(model, replicas, body, digest, ctx, tasks): one call carrying the rows of `tasks`,
each (its tag, its rows), in row order; a lone call is one task."""
Signature = tuple[tuple[str, str, tuple[int, ...]], ...]
Observe = Callable[[str, int], None]
Key = tuple[str, int]


@dataclass
class _Waiting:
    call: wire_pb2.InferCall
    body: bytes
    digest: str
    signature: Signature
    rows: int
    ctx: CallContext
    tag: str
    done: asyncio.Future[tuple[wire_pb2.InferReply, float]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class _Lane:
    out: int = 0
    waiting: list[_Waiting] = field(default_factory=list)


class Coalescer:
    def __init__(
        self,
        send: Send,
        *,
        max_rows: int = 256,
        max_bytes: int = 512 * 1024,
        max_tasks: int = 0,
        observe: Observe | None = None,
        waiting: Observe | None = None,
    ) -> None:
        """`send(model, replicas, body, digest, ctx, tags)` makes one call carrying the
        tagged tasks' rows (with retries and hedging); `max_rows` and `max_bytes` bound one
        joined call (0 rows: never join); `observe` hears how many tasks each call carried,
        `waiting` each change in the tasks waiting for a model."""
        self.send = send
        self.observe = observe or (lambda model, tasks: None)
        self.waiting = waiting or (lambda model, change: None)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_tasks = max_tasks
        """Tasks one joined call may carry (0: as many as fit the rows and bytes)."""
        self._lanes: dict[Key, _Lane] = {}
        self._joined: set[asyncio.Task[None]] = set()

    async def call(
        self,
        model: str,
        replicas: list[Heartbeat],
        body: bytes,
        digest: str,
        ctx: CallContext,
        tag: str = "",
    ) -> tuple[wire_pb2.InferReply, float]:
        """`digest` is the SHA-256 of `body`, computed once by the caller; `tag` names the
        task to `send`."""
        if self.max_rows <= 0:
            return await self.send(model, replicas, body, digest, ctx, [(tag, 0)])
        key = (model, int(ctx.priority))
        lane = self._lanes.setdefault(key, _Lane())
        if lane.out < sum(max(1, hb.capacity) for hb in replicas) or not replicas:
            lane.out += 1
            self.observe(model, 1)
            try:
                return await self.send(model, replicas, body, digest, ctx, [(tag, 0)])
            finally:
                lane.out -= 1
                self._next(key, model, replicas)
        call = wire_pb2.InferCall.FromString(body)
        signature = _signature(call)
        rows = _rows(call)
        if signature is None or call.augment or rows > self.max_rows:
            self.observe(model, 1)
            return await self.send(model, replicas, body, digest, ctx, [(tag, 0)])
        waiting = _Waiting(call, body, digest, signature, rows, ctx, tag)
        lane.waiting.append(waiting)
        self.waiting(model, 1)
        try:
            return await asyncio.wait_for(
                asyncio.shield(waiting.done), timeout=max(0.0, ctx.remaining_s())
            )
        except asyncio.CancelledError:
            waiting.done.cancel()
            raise
        except TimeoutError:
            waiting.done.cancel()  # not sent yet: it never will be
            raise DeadlineExceeded(
                f"model {model}: task {ctx.task_id}'s deadline passed while its call waited "
                "to be joined with others"
            ) from None

    def _next(self, key: Key, model: str, replicas: list[Heartbeat]) -> None:
        """Send the oldest waiting call, joined with the waiting ones shaped like it."""
        lane = self._lanes[key]
        still = [w for w in lane.waiting if not w.done.done()]  # drop the given-up
        if len(still) < len(lane.waiting):
            self.waiting(model, len(still) - len(lane.waiting))
        lane.waiting = still
        if not lane.waiting:
            if lane.out == 0:
                del self._lanes[key]
            return
        signature = lane.waiting[0].signature
        batch: list[_Waiting] = []
        rest: list[_Waiting] = []
        rows = size = 0
        for w in lane.waiting:
            w_size = sum(len(t.raw) for t in w.call.inputs)
            fits = (
                rows + w.rows <= self.max_rows
                and size + w_size <= self.max_bytes
                and (not self.max_tasks or len(batch) < self.max_tasks)
            )
            if w.signature == signature and (not batch or fits):
                batch.append(w)
                rows += w.rows
                size += w_size
            else:
                rest.append(w)
        lane.waiting = rest
        self.waiting(model, -len(batch))
        lane.out += 1
        task = asyncio.ensure_future(self._send_joined(model, replicas, batch))
        self._joined.add(task)
        task.add_done_callback(self._joined.discard)
        task.add_done_callback(lambda _: self._finish(key, model, replicas))

    def _finish(self, key: Key, model: str, replicas: list[Heartbeat]) -> None:
        self._lanes[key].out -= 1
        self._next(key, model, replicas)

    async def _send_joined(
        self, model: str, replicas: list[Heartbeat], batch: list[_Waiting]
    ) -> None:
        live = [w for w in batch if not w.done.done()]
        if not live:
            return
        # The latest deadline bounds the joined call; each task stops waiting at its own.
        ctx = max((w.ctx for w in live), key=lambda c: c.deadline_ms)
        self.observe(model, len(live))
        try:
            if len(live) == 1:
                one = live[0]
                alone = [(one.tag, one.rows)]
                _settle(one, await self.send(model, replicas, one.body, one.digest, ctx, alone))
                return
            body = _join([w.call for w in live]).SerializeToString()
            digest = hashlib.sha256(body).hexdigest()
            tasks = [(w.tag, w.rows) for w in live]
            reply, ms = await self.send(model, replicas, body, digest, ctx, tasks)
            for w, part in zip(live, split_rows(reply, [w.rows for w in live]), strict=True):
                _settle(w, (part, ms))
        except Exception as exc:
            for w in live:
                if not w.done.done():
                    w.done.set_exception(exc)
        except BaseException:
            for w in live:
                w.done.cancel()
            raise


def _settle(w: _Waiting, answer: tuple[wire_pb2.InferReply, float]) -> None:
    if not w.done.done():
        w.done.set_result(answer)


def _signature(call: wire_pb2.InferCall) -> Signature | None:
    """What calls must share to be joined: input names, types and all but the row dimension."""
    out = []
    for t in call.inputs:
        if not t.shape or not t.raw or t.datatype == "BYTES":
            return None  # scalars and strings are sent on their own
        out.append((t.name, t.datatype, tuple(t.shape[1:])))
    return tuple(out) if out else None


def _rows(call: wire_pb2.InferCall) -> int:
    return int(call.inputs[0].shape[0]) if call.inputs and call.inputs[0].shape else 0


def _join(calls: list[wire_pb2.InferCall]) -> wire_pb2.InferCall:
    joined = wire_pb2.InferCall()
    for i, first in enumerate(calls[0].inputs):
        parts = [c.inputs[i] for c in calls]
        joined.inputs.append(
            tensor_pb2.Tensor(
                name=first.name,
                datatype=first.datatype,
                shape=[sum(int(p.shape[0]) for p in parts), *first.shape[1:]],
                raw=b"".join(p.raw for p in parts),
            )
        )
    return joined
