"""A bus and a clock for unit tests of member calls, the one-way path and the coalescer: no
network, no real waiting.

`run(main())` runs a coroutine on an event loop whose clock is virtual: when nothing is
ready, time jumps to the next timer instead of sleeping, so a 2 s attempt timeout costs
microseconds, and task deadlines (wall-clock `CallContext`s) read the same virtual time.
`FakeTransport` implements `chorus.core.calls.transport.Transport` over scripted replicas
(`FakeReplica`: slow, failing, silent, gone, or answering for another input), records what
was sent, and delivers one-way answers to whatever `subscribe`d to the reply subject.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import selectors
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

import chorus.core.context
from chorus.core import subjects
from chorus.core.calls.request import ERROR_CODE_HEADER, ERROR_HEADER
from chorus.core.calls.transport import NoResponders, RequestTimeout
from chorus.core.codec import to_tensor
from chorus.core.context import INPUT_SHA256
from chorus.core.heartbeat import Heartbeat
from chorus.core.spec import TensorSpec
from chorus.pb import wire_pb2

T = TypeVar("T")
EPOCH = 1_800_000_000.0
"""The virtual wall clock at loop time 0, in epoch seconds."""


class _JumpingSelector(selectors.DefaultSelector):
    """Never blocks: with nothing ready, the loop's clock moves on by the timeout asked."""

    def __init__(self, loop: VirtualLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        events = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("deadlock: nothing ready and no timer set")
        self._loop.now += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self.now


class LoopClock:
    """The fake clock: the running loop's (virtual) time, and its sleep."""

    def monotonic(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@contextlib.contextmanager
def _virtual_wall(loop: VirtualLoop) -> Iterator[None]:
    real = chorus.core.context.__dict__["time"]
    setattr(chorus.core.context, "time", types.SimpleNamespace(time=lambda: EPOCH + loop.now))  # noqa: B010
    try:
        yield
    finally:
        setattr(chorus.core.context, "time", real)  # noqa: B010


def run(main: Coroutine[Any, Any, T]) -> T:
    """`main` on a virtual-time loop; tasks it left behind are cancelled, as asyncio.run does."""
    loop = VirtualLoop()
    try:
        with _virtual_wall(loop):
            result = loop.run_until_complete(main)
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(_drain(left))
        return result
    finally:
        loop.close()


async def _drain(tasks: set[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


def elapsed() -> float:
    """Virtual seconds since the loop started."""
    return asyncio.get_running_loop().time()


@dataclass(frozen=True)
class FakeMsg:
    subject: str
    data: bytes
    headers: dict[str, str] | None = None


@dataclass
class FakeReplica:
    """One replica of `model`, answering [rows, 2] scores filled with `value`."""

    model: str
    name: str
    delay_s: float = 0.001
    fail: str = ""
    """Answer with this error code (UNAVAILABLE, INVALID_ARGUMENT, ...) instead of scores."""
    silent: bool = False
    """Take requests and never answer."""
    gone: bool = False
    """Not subscribed: requests to it get no responders."""
    wrong_digest: bool = False
    """Echo another input's SHA-256."""
    value: float = 0.5
    ewma_ms: float = 0.0
    calls: int = 0

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            model=self.model, version="1", replica=self.name, capabilities=("classify/x",),
            inputs=(TensorSpec("x", "FP32", (-1, 2)),),
            outputs=(TensorSpec("scores", "FP32", (-1, 2)),),
            labels=("a", "b"), scores_output="scores", device="cpu", ewma_ms=self.ewma_ms,
        )  # fmt: skip

    async def answer(self, subject: str, payload: bytes, headers: dict[str, str]) -> FakeMsg:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.silent:
            await asyncio.get_running_loop().create_future()
        if self.fail:
            return FakeMsg(subject, b"", {ERROR_CODE_HEADER: self.fail, ERROR_HEADER: "boom"})
        call = wire_pb2.InferCall.FromString(payload)
        rows = int(call.inputs[0].shape[0]) if call.inputs else 1
        digest = hashlib.sha256(payload).hexdigest()
        reply = wire_pb2.InferReply(
            model=self.model, version="1", replica=self.name,
            outputs=[to_tensor("scores", np.full((rows, 2), self.value, np.float32))],
            input_sha256="0" * 64 if self.wrong_digest else digest,
        )  # fmt: skip
        return FakeMsg(subject, reply.SerializeToString())


Handler = Callable[[str, bytes, dict[str, str]], Awaitable[FakeMsg]]


@dataclass(frozen=True)
class Sent:
    subject: str
    payload: bytes
    headers: dict[str, str]
    reply: str = ""


@dataclass
class FakeTransport:
    """The bus: replicas answer on their own subject and, round robin, on their model's
    queue group; `on(subject, handler)` answers any other subject (a fuser)."""

    max_payload: int = 1 << 20
    sent: list[Sent] = field(default_factory=list)
    _replicas: dict[str, list[FakeReplica]] = field(default_factory=dict)
    _handlers: dict[str, Handler] = field(default_factory=dict)
    _subscribers: list[tuple[str, Callable[[FakeMsg], Awaitable[None]]]] = field(
        default_factory=list
    )
    _turn: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def add(self, *replicas: FakeReplica) -> list[Heartbeat]:
        for r in replicas:
            self._replicas.setdefault(r.model, []).append(r)
        return [r.heartbeat() for r in replicas]

    def on(self, subject: str, handler: Handler) -> None:
        self._handlers[subject] = handler

    def subscribe(self, subject: str, cb: Callable[[FakeMsg], Awaitable[None]]) -> None:
        """`subject` may end in `>`: every subject under it."""
        self._subscribers.append((subject, cb))

    def to(self, model: str) -> list[str]:
        """The replica (or `*` for the queue group) each request to `model` went to."""
        out = []
        for s in self.sent:
            parts = s.subject.split(".")
            if parts[:3] == ["chorus", "infer", model]:
                out.append(parts[3] if len(parts) > 3 else "*")
        return out

    def _target(self, subject: str) -> Handler | None:
        if subject in self._handlers:
            return self._handlers[subject]
        parts = subject.split(".")
        if parts[:2] != ["chorus", "infer"] or len(parts) < 3:
            return None
        live = [r for r in self._replicas.get(parts[2], []) if not r.gone]
        if len(parts) > 3:
            live = [r for r in live if r.name == parts[3]]
        if not live:
            return None
        self._turn += 1
        return live[self._turn % len(live)].answer

    async def request(
        self, subject: str, payload: bytes, headers: dict[str, str] | None, timeout: float
    ) -> FakeMsg:
        self.sent.append(Sent(subject, payload, dict(headers or {})))
        target = self._target(subject)
        if target is None:
            raise NoResponders(subject)
        try:
            return await asyncio.wait_for(target(subject, payload, dict(headers or {})), timeout)
        except TimeoutError:
            raise RequestTimeout(subject) from None

    async def publish(
        self, subject: str, payload: bytes, *, reply: str = "", headers: dict[str, str] | None
    ) -> None:
        self.sent.append(Sent(subject, payload, dict(headers or {}), reply))
        target = self._target(subject)
        if target is not None and reply:
            task = asyncio.ensure_future(self._answer(target, subject, payload, headers, reply))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def deliver(self, msg: FakeMsg) -> None:
        """`msg` to every subscriber of its subject."""
        for pattern, cb in self._subscribers:
            if pattern == msg.subject or (
                pattern.endswith(">") and msg.subject.startswith(pattern[:-1])
            ):
                await cb(msg)

    async def _answer(
        self,
        target: Handler,
        subject: str,
        payload: bytes,
        headers: dict[str, str] | None,
        reply: str,
    ) -> None:
        msg = await target(subject, payload, dict(headers or {}))
        await self.deliver(FakeMsg(reply, msg.data, msg.headers))


def digest_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def infer_body(rows: int = 1, value: float = 0.0) -> bytes:
    return wire_pb2.InferCall(
        inputs=[to_tensor("x", np.full((rows, 2), value, np.float32))]
    ).SerializeToString()


def headers_of(sent: Sent) -> dict[str, str]:
    return sent.headers


__all__ = [
    "INPUT_SHA256",
    "FakeMsg",
    "FakeReplica",
    "FakeTransport",
    "LoopClock",
    "Sent",
    "VirtualLoop",
    "digest_of",
    "elapsed",
    "infer_body",
    "run",
    "subjects",
]
