"""A grpc.aio server with what every Chorus gRPC endpoint carries: health and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection


def make_server(max_message_bytes: int, max_concurrent_streams: int = 256) -> grpc.aio.Server:
    """Oversized messages are refused with RESOURCE_EXHAUSTED by gRPC itself; streams beyond
    the limit per connection wait at the client."""
    return grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_concurrent_streams", max_concurrent_streams),
        ]
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
    bound = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind gRPC on {host}:{port}")
    return bound
