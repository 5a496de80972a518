"""One mapping from Chorus errors to gRPC statuses, for every servicer on a Chorus server:
a real server on loopback, of each engine (pygrpc-native and grpc.aio), with handlers that
fail in each way a handler can."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from chorus.core.config import GRPC_ENGINES
from chorus.core.errors import InvalidArgument, NotFound
from chorus.core.grpcserver import bind, make_server
from chorus.launch.natsserver import free_port
from chorus.pb import task_pb2, task_pb2_grpc


class Failing(task_pb2_grpc.TaskServiceServicer):
    async def Submit(
        self, request: task_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.SubmitResponse:
        raise InvalidArgument("capability: empty; expected a capability name")

    async def GetResult(
        self, request: task_pb2.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.TaskResult:
        if request.task_id == "ok":
            return task_pb2.TaskResult(task_id="ok")
        raise RuntimeError("a bug")

    async def WatchResult(
        self, request: task_pb2.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_pb2.TaskResult]:
        yield task_pb2.TaskResult(task_id=request.task_id)
        raise NotFound(f"task_id: no async task {request.task_id!r}")


ENGINES = pytest.mark.parametrize("engine", GRPC_ENGINES)


async def test_a_tls_port_is_grpc_aio_s_and_a_plaintext_one_the_engine_asked_for() -> None:
    """pygrpc-native has no TLS: a port with credentials must never be handed to it."""
    import pygrpc_native.aio

    assert isinstance(make_server(1 << 20), pygrpc_native.aio.Server)
    assert not isinstance(make_server(1 << 20, tls=True), pygrpc_native.aio.Server)
    assert not isinstance(make_server(1 << 20, engine="grpcio"), pygrpc_native.aio.Server)


@ENGINES
async def test_errors_become_statuses_and_the_server_goes_on(engine: str) -> None:
    server = make_server(1 << 20, engine=engine)
    task_pb2_grpc.add_TaskServiceServicer_to_server(Failing(), server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = task_pb2_grpc.TaskServiceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Submit(task_pb2.SubmitRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "capability: empty; expected a capability name"

            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetResult(task_pb2.GetResultRequest(task_id="x"), timeout=5)
            assert info.value.code() == grpc.StatusCode.INTERNAL
            assert "/chorus.v1.TaskService/GetResult" in info.value.details()
            assert "a bug" in info.value.details()

            got = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for r in stub.WatchResult(task_pb2.GetResultRequest(task_id="t"), timeout=5):
                    got.append(r.task_id)
            assert got == ["t"]  # what was sent before the error still arrives
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

            ok = await stub.GetResult(task_pb2.GetResultRequest(task_id="ok"), timeout=5)
            assert ok.task_id == "ok"
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ListModels(task_pb2.ListModelsRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED  # gRPC's own, untouched
    finally:
        await server.stop(None)


@ENGINES
async def test_a_port_held_by_another_server_is_refused_not_shared(engine: str) -> None:
    """With gRPC's default SO_REUSEPORT both servers would bind and split the connections,
    and a router's callers could reach a model service (UNIMPLEMENTED)."""
    first = make_server(1 << 20, engine=engine)
    task_pb2_grpc.add_TaskServiceServicer_to_server(Failing(), first)
    port = bind(first, "127.0.0.1", 0)
    await first.start()
    try:
        second = make_server(1 << 20, engine=engine)
        with pytest.raises(OSError, match=f"could not bind gRPC on 127.0.0.1:{port}"):
            bind(second, "127.0.0.1", port)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = task_pb2_grpc.TaskServiceStub(ch)
            for _ in range(20):  # every connection still reaches the first server
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Submit(task_pb2.SubmitRequest(), timeout=5)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await first.stop(None)
