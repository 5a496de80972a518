"""A gRPC server with what every Chorus gRPC endpoint carries: health, reflection, and
one mapping from Chorus errors to gRPC statuses."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from chorus.core.errors import ChorusError

log = logging.getLogger(__name__)


def make_server(
    max_message_bytes: int,
    max_concurrent_streams: int = 256,
    *,
    engine: str = "native",
    tls: bool = False,
) -> grpc.aio.Server:
    """`engine` "native" serves a plaintext port with pygrpc-native: HTTP/2 and gRPC framing
    run on Rust threads outside the GIL and calls reach the event loop in batches, so the
    loop spends its time on the calls and concurrent ones batch together (a co-hosted
    group's members over gRPC: 1.00 rows a run on grpc.aio, about 5.7 on it; bench/README.md).
    Its bidirectional methods (ModelStreamInfer, reflection) go to a grpc.aio server behind
    it. A TLS port, or "grpcio", is grpc.aio's own, as pygrpc-native has no TLS yet.

    Oversized messages are refused with RESOURCE_EXHAUSTED by gRPC itself; streams beyond
    the limit per connection wait at the client. SO_REUSEPORT, which grpc.aio sets by
    default, is off: with it a second server on a port already held binds without error and
    the kernel splits connections between the two, so a caller of the router can reach a
    model service and be told UNIMPLEMENTED. Without it the later bind fails and says which
    port."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_concurrent_streams", max_concurrent_streams),
        ("grpc.so_reuseport", 0),
    ]
    if engine == "native" and not tls:
        import pygrpc_native.aio

        server: grpc.aio.Server = pygrpc_native.aio.server(
            interceptors=[ErrorStatus()], options=options
        )
        return server
    return grpc.aio.server(interceptors=[ErrorStatus()], options=options)


class GrpcSettings(Protocol):
    """What a service's settings say of its gRPC server (ModelServiceConfig, RouterConfig)."""

    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_concurrent_streams(self) -> int: ...
    @property
    def grpc_engine(self) -> str: ...


def server_for(
    settings: GrpcSettings, credentials: grpc.ServerCredentials | None
) -> grpc.aio.Server:
    """The server `settings` ask for, to be bound with `credentials` (TLS) when given."""
    return make_server(
        settings.max_message_bytes,
        settings.max_concurrent_streams,
        engine=settings.grpc_engine,
        tls=credentials is not None,
    )


def add_health_and_reflection(
    server: grpc.aio.Server, service_names: list[str]
) -> health.aio.HealthServicer:
    """Health starts NOT_SERVING; the owner flips it once it can really serve."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    names = [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)
    return servicer


async def set_serving(servicer: health.aio.HealthServicer, names: list[str], serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ["", *names]:
        await servicer.set(name, status)


def bind(
    server: grpc.aio.Server, host: str, port: int, creds: grpc.ServerCredentials | None = None
) -> int:
    """Listen on host:port, with TLS when `creds` are given (then plaintext is refused)."""
    address = f"{host}:{port}"
    refused = f"could not bind gRPC on {address}: the port is in use or not allowed"
    try:
        bound = (
            server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
        )
    except RuntimeError as err:  # grpcio raises here; older releases returned 0
        raise OSError(refused) from err
    if bound == 0:
        raise OSError(refused)
    return bound


class ErrorStatus(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Every handler may raise a ChorusError: the call ends with its status and message.
    Anything unexpected ends it INTERNAL, naming the cause, and is logged with its trace;
    either way the server goes on serving. A method's wrapped handler is made once and
    kept: a server's handlers do not change once it serves, and building them per call cost
    about a tenth of a bare unary call's CPU (bench/grpc_unary.py)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        wrapped = self._wrapped.get(details.method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:
                return handler
            wrapped = self._wrapped[details.method] = _wrap(handler, details.method)
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(_unary(handler.unary_unary, method), **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(_unary(handler.stream_unary, method), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, method), **codec
        )
    return grpc.stream_stream_rpc_method_handler(_streaming(handler.stream_stream, method), **codec)


async def _abort(context: grpc.aio.ServicerContext, method: str, exc: Exception) -> None:
    if isinstance(exc, ChorusError):
        await context.abort(exc.code, exc.message)
    log.error("%s failed", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"{method}: {exc!r}")


def _unary(behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await behaviour(request, context)
        except (grpc.aio.AbortError, NotImplementedError):  # the latter: generated stubs
            raise
        except Exception as exc:
            await _abort(context, method, exc)

    return call


def _streaming(behaviour: Callable[..., Any], method: str) -> Callable[..., Any]:
    async def call(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            answers = behaviour(request, context)
            if hasattr(answers, "__aiter__"):
                async for response in answers:
                    yield response
            else:  # a handler that writes through context.write (health's Watch)
                await answers
        except (grpc.aio.AbortError, NotImplementedError):  # the latter: generated stubs
            raise
        except Exception as exc:
            await _abort(context, method, exc)

    return call
