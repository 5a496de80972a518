"""What both clients share: construction from the caller's settings, and the descriptor that
makes an op function of `chorus.client.ops` a method returning what the client's kind of I/O
gives (`T` for the blocking client, a coroutine of `T` for the asyncio one)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import grpc

from chorus.client.channel import Dial, RetryPolicy, dial
from chorus.client.ops import CLIENT_DEFAULT, Bidi, Last, Op, Stream, Unary, compression, path
from chorus.core.config import SecurityConfig
from chorus.core.environment import from_env

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT_S = 30.0


class Method(Generic[P, R]):
    """An op function as a client method: calling it builds the op, and the client runs it."""

    def __init__(self, op: Callable[P, Any]) -> None:
        self.op = op
        self.rpc: str = op.rpc  # type: ignore[attr-defined]
        self.__doc__ = op.__doc__
        self.__name__ = op.__name__
        self.__wrapped__ = op
        self.attribute = op.__name__

    def __set_name__(self, owner: type[Any], name: str) -> None:
        self.attribute = name

    @overload
    def __get__(self, client: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, client: ClientBase, owner: type[Any]) -> Callable[P, R]: ...
    def __get__(self, client: ClientBase | None, owner: type[Any]) -> Self | Callable[P, R]:
        if client is None:
            return self
        op = self.op

        @functools.wraps(op)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            return client._run(op(*args, **kwargs))

        client.__dict__[self.attribute] = call  # bound once: later lookups skip this
        return call


class ClientBase:
    """Settings both clients take; see `TaskClient` for their meaning."""

    def __init__(
        self,
        target: str | Sequence[str] | None = None,
        security: SecurityConfig | None = None,
        *,
        timeout_s: float | None = DEFAULT_TIMEOUT_S,
        api_key: str | None = None,
        tls: bool = False,
        metadata: Sequence[tuple[str, str]] = (),
        compression: grpc.Compression | str | None = None,
        retry: RetryPolicy | None = RetryPolicy(),  # noqa: B008 (frozen)
    ) -> None:
        security = security or from_env(SecurityConfig, "security")
        self.dial: Dial = dial(
            target, security, tls=tls, api_key=api_key, metadata=metadata, retry=retry
        )
        self.target = self.dial.target
        self.metadata = self.dial.metadata
        self.timeout_s = timeout_s
        self.compression = _compression(compression)
        self._callables: dict[tuple[type, str], Any] = {}
        self._open()

    def _open(self) -> None:
        """Make the channel (`self.channel`) and the generated stub (`self.stub`)."""
        raise NotImplementedError

    def _run(self, op: Op) -> Any:
        raise NotImplementedError

    def _callable(self, op: Op) -> Any:
        """The channel's multi-callable for `op`'s RPC, made once per client (either kind of
        channel makes them the same way)."""
        key = (type(op), path(op))
        found = self._callables.get(key)
        if found is None:
            channel: Any = getattr(self, "channel")  # noqa: B009 (set by _open)
            make = {
                Unary: channel.unary_unary,
                Stream: channel.unary_stream,
                Last: channel.unary_stream,
                Bidi: channel.stream_stream,
            }[type(op)]
            found = make(path(op), request_serializer=_serialize, response_deserializer=op.response)
            self._callables[key] = found
        return found

    def _call_kwargs(self, op: Op) -> dict[str, Any]:
        o = op.options
        timeout = self.timeout_s if o.timeout_s is CLIENT_DEFAULT else o.timeout_s
        kwargs: dict[str, Any] = {"timeout": timeout, "metadata": (*self.metadata, *o.metadata)}
        if o.compression is not None:
            kwargs["compression"] = o.compression
        return kwargs


def _compression(given: grpc.Compression | str | None) -> grpc.Compression | None:
    return compression(given)


class WithMetadata:
    """The generated stub with the client's metadata (the API key) added to every call: for
    callers that send hand-built protobufs (`client.stub.Submit(request)`)."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs["metadata"] = (*self._metadata, *kwargs.get("metadata", ()))
            return method(request, **kwargs)

        return call


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()
