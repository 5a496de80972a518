"""`TaskClient`: the task API on a blocking gRPC channel."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar, overload

import grpc

from chorus.client import ops
from chorus.client.base import ClientBase, Method, WithMetadata
from chorus.client.errors import error_for, from_rpc_error
from chorus.client.ops import Bidi, Last, Op, Stream, Unary
from chorus.pb import task_pb2_grpc

P = ParamSpec("P")
T = TypeVar("T")


@overload
def blocking(op: Callable[P, Unary[T]]) -> Method[P, T]: ...
@overload
def blocking(op: Callable[P, Last[T]]) -> Method[P, T]: ...
@overload
def blocking(op: Callable[P, Stream[T]]) -> Method[P, Iterator[T]]: ...
@overload
def blocking(op: Callable[P, Bidi[T]]) -> Method[P, Iterator[T]]: ...
def blocking(op: Callable[P, Any]) -> Method[P, Any]:
    return Method(op)


class TaskClient(ClientBase):
    """The task API for blocking callers, numpy in and out; `AsyncTaskClient` is the same
    on asyncio. Every failure raises a `TaskError` subclass (`NotFound`, `Unavailable`, ...)
    carrying the gRPC status.

    `target`: "host:port"; several routers as a list or "a:1,b:2" (calls spread round
    robin); "dns:///name:port" for every address a name resolves to (a headless Service);
    None reads $CHORUS_ROUTER, else 127.0.0.1:50051.
    `security` defaults to CHORUS_SECURITY_* from the environment (TLS CA, client
    certificate, API key file); all empty means plaintext. `tls=True` without a CA verifies
    the router against the system's roots; `api_key` sends that key instead of the file's.
    `timeout_s` is every call's deadline unless the call gives its own (None: no deadline);
    `metadata` goes with every call, each call's own after it; `compression` ("gzip",
    "deflate") applies to every request. `retry` is gRPC's retry policy for the idempotent
    calls (None turns retries off).
    """

    def _open(self) -> None:
        d = self.dial
        if d.credentials is not None:
            self.channel = grpc.secure_channel(
                d.target, d.credentials, options=d.options, compression=self.compression
            )
        else:
            self.channel = grpc.insecure_channel(
                d.target, options=d.options, compression=self.compression
            )
        stub = task_pb2_grpc.TaskServiceStub(self.channel)
        self.stub: Any = WithMetadata(stub, self.metadata) if self.metadata else stub

    submit = blocking(ops.submit)
    submit_async = blocking(ops.submit_async)
    result = blocking(ops.result)
    watch = blocking(ops.watch)
    wait = blocking(ops.wait)
    feedback = blocking(ops.feedback)
    review = blocking(ops.review)
    list_models = blocking(ops.list_models)
    submit_stream = blocking(ops.submit_stream)
    health = blocking(ops.health)

    def _run(self, op: Op) -> Any:
        call = self._callable(op)
        kwargs = self._call_kwargs(op)
        if isinstance(op, Unary):
            try:
                response = call(op.request, **kwargs)
            except grpc.RpcError as err:
                raise from_rpc_error(err) from None
            return op.decode(response)
        if isinstance(op, Last):
            last = None
            try:
                for response in call(op.request, **kwargs):
                    last = response
            except grpc.RpcError as err:
                raise from_rpc_error(err) from None
            if last is None:
                raise error_for("UNAVAILABLE", f"{op.rpc}: the stream ended without an answer")
            return op.decode(last)
        if isinstance(op, Bidi):
            if not isinstance(op.requests, Iterable):
                raise TypeError("TaskClient.submit_stream takes an iterable; "
                                "AsyncTaskClient takes async iterables")  # fmt: skip
            return _iterate(call(iter(op.requests), **kwargs), op.decode)
        return _iterate(call(op.request, **kwargs), op.decode)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _iterate(call: Any, decode: Callable[[Any], T]) -> Iterator[T]:
    """The call's answers decoded, its failure as the error family; leaving the loop early
    cancels the call."""
    try:
        for response in call:
            yield decode(response)
    except grpc.RpcError as err:
        raise from_rpc_error(err) from None
    finally:
        call.cancel()
