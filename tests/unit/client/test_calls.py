"""The clients' calls on real gRPC over loopback, against a scripted TaskService (the seam
is the router's gRPC API, which these tests own): retries of idempotent calls only, errors
as one family carrying the status, metadata, compression, several router addresses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest

from chorus.client import (
    AsyncTaskClient,
    InvalidArgument,
    NotFound,
    RetryPolicy,
    State,
    TaskClient,
    TaskError,
    Unavailable,
)
from chorus.core.codec import to_tensor
from chorus.core.config import SecurityConfig
from chorus.launch.natsserver import free_port
from chorus.pb import task_pb2, task_pb2_grpc

FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.01, max_backoff_s=0.05)


class Scripted(task_pb2_grpc.TaskServiceServicer):  # type: ignore[misc]
    """Fails each RPC UNAVAILABLE `fail_first[rpc]` times, then answers; records calls."""

    def __init__(self, name: str = "a") -> None:
        self.name = name
        self.fail_first: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def _enter(self, rpc: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.calls[rpc] = self.calls.get(rpc, 0) + 1
            self.metadata.append(dict(context.invocation_metadata()))
            failing = self.fail_first.get(rpc, 0) >= self.calls[rpc]
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{rpc}: not yet")

    def GetResult(self, request, context):  # type: ignore[no-untyped-def]
        self._enter("GetResult", context)
        if request.task_id == "gone":
            context.abort(grpc.StatusCode.NOT_FOUND, "no async task 'gone'")
        return _done(request.task_id)

    def WatchResult(self, request, context):  # type: ignore[no-untyped-def]
        self._enter("WatchResult", context)
        yield task_pb2.TaskResult(task_id=request.task_id, status=task_pb2.TASK_STATUS_RUNNING)
        if request.task_id == "doomed":
            yield task_pb2.TaskResult(
                task_id="doomed", status=task_pb2.TASK_STATUS_FAILED,
                error_code="INVALID_ARGUMENT", error_message="bad rows",
            )  # fmt: skip
        else:
            yield _done(request.task_id)

    def Feedback(self, request, context):  # type: ignore[no-untyped-def]
        self._enter("Feedback", context)
        return task_pb2.FeedbackResponse(capability="c", weights={"m": 0.5})

    def SubmitAsync(self, request, context):  # type: ignore[no-untyped-def]
        self._enter("SubmitAsync", context)
        return task_pb2.SubmitAsyncResponse(task_id=request.idempotency_key)

    def ListModels(self, request, context):  # type: ignore[no-untyped-def]
        self._enter("ListModels", context)
        return task_pb2.ListModelsResponse(models=[task_pb2.ModelInfo(name=self.name)])


def _done(task_id: str) -> task_pb2.TaskResult:
    response = task_pb2.SubmitResponse(
        task_id=task_id, outputs=[to_tensor("label", np.array([3], np.int64))]
    )
    return task_pb2.TaskResult(task_id=task_id, status=task_pb2.TASK_STATUS_DONE,
                               response=response, attempts=1)  # fmt: skip


def _serve(servicer: Scripted) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    task_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = free_port()
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    return server, port


@pytest.fixture
def router() -> Iterator[tuple[Scripted, str]]:
    servicer = Scripted()
    server, port = _serve(servicer)
    yield servicer, f"127.0.0.1:{port}"
    server.stop(None)


def _client(target: str, **kw) -> TaskClient:  # type: ignore[no-untyped-def]
    return TaskClient(target, SecurityConfig(), retry=FAST, timeout_s=5, **kw)


def test_idempotent_calls_are_retried_and_the_others_are_not(router) -> None:  # type: ignore[no-untyped-def]
    servicer, target = router
    servicer.fail_first = {"GetResult": 2, "SubmitAsync": 1, "Feedback": 1}
    with _client(target) as client:
        state = client.result("t1")
        accepted = client.submit_async("c", {"x": np.zeros((1, 2), np.float32)})
        with pytest.raises(Unavailable) as info:
            client.feedback("t1", labels=[1])
    assert state.state is State.DONE and state.result is not None
    assert state.result.labels.tolist() == [3]
    assert servicer.calls["GetResult"] == 3
    # The client's own idempotency key makes the repeated SubmitAsync safe.
    assert servicer.calls["SubmitAsync"] == 2 and len(accepted.task_id) == 32
    assert servicer.calls["Feedback"] == 1
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert isinstance(info.value, grpc.RpcError) and info.value.details() == "Feedback: not yet"


def test_no_retry_policy_means_one_try(router) -> None:  # type: ignore[no-untyped-def]
    servicer, target = router
    servicer.fail_first = {"GetResult": 1}
    with TaskClient(target, SecurityConfig(), retry=None) as client, pytest.raises(Unavailable):
        client.result("t1")
    assert servicer.calls["GetResult"] == 1


async def test_the_asyncio_client_retries_alike_and_raises_the_family(router) -> None:  # type: ignore[no-untyped-def]
    servicer, target = router
    servicer.fail_first = {"GetResult": 2, "WatchResult": 1}
    async with AsyncTaskClient(target, SecurityConfig(), retry=FAST) as client:
        state = await client.result("t2")
        states = [s.state async for s in client.watch("t2")]
        assert (await client.wait("t3")).labels.tolist() == [3]
        with pytest.raises(NotFound) as info:
            await client.result("gone")
        with pytest.raises(InvalidArgument) as failed:
            await client.wait("doomed")
    assert state.finished and servicer.calls["GetResult"] == 4
    assert states == [State.RUNNING, State.DONE]
    assert "no async task 'gone'" in str(info.value)
    assert failed.value.task_id == "doomed" and failed.value.message == "bad rows"


def test_a_failed_task_raises_its_own_error_from_wait(router) -> None:  # type: ignore[no-untyped-def]
    _, target = router
    with _client(target) as client:
        with pytest.raises(InvalidArgument) as info:
            client.wait("doomed")
        states = list(client.watch("doomed"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(info.value, TaskError)
    assert [s.state for s in states] == [State.RUNNING, State.FAILED]
    assert states[-1].error is not None and states[-1].error.message == "bad rows"


def test_metadata_api_key_and_compression_reach_the_router(router) -> None:  # type: ignore[no-untyped-def]
    servicer, target = router
    with _client(target, api_key="k-1", metadata=[("x-team", "blue")],
                 compression="gzip") as client:  # fmt: skip
        client.list_models(metadata=[("x-request", "42")], compression="deflate")
    seen = servicer.metadata[-1]
    assert seen["x-api-key"] == "k-1" and seen["x-team"] == "blue" and seen["x-request"] == "42"


def test_arguments_the_client_can_check_are_refused_before_sending(router) -> None:  # type: ignore[no-untyped-def]
    servicer, target = router
    with _client(target) as client:
        with pytest.raises(InvalidArgument, match=r"labels \(classification\) or values"):
            client.feedback("t", labels=[1], values=[1.0])
        with pytest.raises(InvalidArgument, match="feedback: labels: expected a list of integers"):
            client.feedback("t", labels=[0.5])
        with pytest.raises(InvalidArgument, match="compression: expected one of"):
            client.list_models(compression="zstd")
        with pytest.raises(ValueError, match="priority: expected critical, normal or batch"):
            client.submit("c", {"x": np.zeros((1, 1))}, priority="urgent")
        with pytest.raises(InvalidArgument, match="task_id: empty"):
            client.result("")
    assert servicer.calls == {}


@pytest.mark.parametrize("kind", ["list", "comma"])
def test_several_router_addresses_share_the_calls(kind: str) -> None:
    servers, addresses = [], []
    for name in ("a", "b"):
        server, port = _serve(Scripted(name))
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    target = addresses if kind == "list" else ",".join(addresses)
    try:
        with TaskClient(target, SecurityConfig()) as client:
            answers = [client.list_models().models[0].name for _ in range(30)]
    finally:
        for server in servers:
            server.stop(None)
    assert client.target == "ipv4:" + ",".join(addresses)
    assert answers[-10:].count("a") == 5 and answers[-10:].count("b") == 5


def test_the_router_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHORUS_ROUTER", "10.1.2.3:7000")
    with TaskClient(security=SecurityConfig()) as client:
        assert client.target == "10.1.2.3:7000"
    monkeypatch.delenv("CHORUS_ROUTER")
    with TaskClient(security=SecurityConfig()) as client:
        assert client.target == "127.0.0.1:50051"
