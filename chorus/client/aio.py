"""`AsyncTaskClient`: the task API on a grpc.aio channel, for callers on an event loop (many
tasks in flight from one channel without a thread each)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, overload

import grpc

from chorus.client import ops
from chorus.client.base import ClientBase, Method, WithMetadata
from chorus.client.errors import error_for, from_rpc_error
from chorus.client.ops import Bidi, Last, Op, Stream, Unary
from chorus.core.spawner import cancel
from chorus.pb import task_pb2_grpc

P = ParamSpec("P")
T = TypeVar("T")

STREAM_WRITE_MARGIN_S = 0.05
"""No request is written to a SubmitStream this close to its deadline (see `_bidi`)."""


@overload
def awaiting(op: Callable[P, Unary[T]]) -> Method[P, Coroutine[Any, Any, T]]: ...
@overload
def awaiting(op: Callable[P, Last[T]]) -> Method[P, Coroutine[Any, Any, T]]: ...
@overload
def awaiting(op: Callable[P, Stream[T]]) -> Method[P, AsyncIterator[T]]: ...
@overload
def awaiting(op: Callable[P, Bidi[T]]) -> Method[P, AsyncIterator[T]]: ...
def awaiting(op: Callable[P, Any]) -> Method[P, Any]:
    return Method(op)


class AsyncTaskClient(ClientBase):
    """`TaskClient` on grpc.aio: the same methods and settings, each awaited (or, for
    `watch` and `submit_stream`, iterated with `async for`)."""

    def _open(self) -> None:
        d = self.dial
        if d.credentials is not None:
            self.channel = grpc.aio.secure_channel(
                d.target, d.credentials, options=d.options, compression=self.compression
            )
        else:
            self.channel = grpc.aio.insecure_channel(
                d.target, options=d.options, compression=self.compression
            )
        stub = task_pb2_grpc.TaskServiceStub(self.channel)
        self.stub: Any = WithMetadata(stub, self.metadata) if self.metadata else stub

    submit = awaiting(ops.submit)
    submit_async = awaiting(ops.submit_async)
    result = awaiting(ops.result)
    watch = awaiting(ops.watch)
    wait = awaiting(ops.wait)
    feedback = awaiting(ops.feedback)
    review = awaiting(ops.review)
    list_models = awaiting(ops.list_models)
    submit_stream = awaiting(ops.submit_stream)
    health = awaiting(ops.health)

    def _run(self, op: Op) -> Any:
        if isinstance(op, Unary):
            return self._unary(op)
        if isinstance(op, Last):
            return self._last(op)
        if isinstance(op, Bidi):
            return self._bidi(op)
        return self._stream(op)

    async def _unary(self, op: Unary[T]) -> T:
        try:
            response = await self._callable(op)(op.request, **self._call_kwargs(op))
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        return op.decode(response)

    async def _last(self, op: Last[T]) -> T:
        last = None
        try:
            async for response in self._callable(op)(op.request, **self._call_kwargs(op)):
                last = response
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        if last is None:
            raise error_for("UNAVAILABLE", f"{op.rpc}: the stream ended without an answer")
        return op.decode(last)

    async def _stream(self, op: Stream[T]) -> AsyncIterator[T]:
        call = self._callable(op)(op.request, **self._call_kwargs(op))
        try:
            async for response in call:
                yield op.decode(response)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    async def _bidi(self, op: Bidi[T]) -> AsyncIterator[T]:
        """Requests are written by this client, not handed to gRPC as an iterator, and none
        in the last STREAM_WRITE_MARGIN_S before the deadline: gRPC turns a write that races
        the deadline into an INTERNAL status, where the caller should see DEADLINE_EXCEEDED."""
        kwargs = self._call_kwargs(op)
        timeout_s = kwargs["timeout"]
        call = self._callable(op)(None, **kwargs)
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + timeout_s - STREAM_WRITE_MARGIN_S if timeout_s else None
        requests = op.requests

        async def each() -> AsyncIterator[Any]:
            if isinstance(requests, AsyncIterable):
                async for r in requests:
                    yield r
            else:
                for r in requests:
                    yield r

        async def write() -> None:
            try:
                async for req in each():
                    if stop_at is not None and loop.time() >= stop_at:
                        return  # leave the call open: it ends at its deadline
                    await call.write(req)
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                pass  # the call ended; reading it raises why

        writer = asyncio.ensure_future(write())
        try:
            async for response in call:
                yield op.decode(response)
        except grpc.aio.AioRpcError as err:
            # A write already waiting on flow control when the deadline came fails INTERNAL.
            late = stop_at is not None and loop.time() >= stop_at
            if err.code() == grpc.StatusCode.INTERNAL and late:
                raise error_for(
                    "DEADLINE_EXCEEDED",
                    f"Deadline Exceeded (a write was under way: {err.details()})",
                ) from None
            raise from_rpc_error(err) from None
        finally:
            await cancel(writer)
            call.cancel()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
