"""The task clients spread calls over every router a resolver-named target gives (round
robin), so replicas an autoscaler adds behind a headless Service get traffic; two real gRPC
servers on loopback stand in for two router pods."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from itertools import pairwise

import grpc
import pytest

from chorus.client import AsyncTaskClient, TaskClient
from chorus.core.config import SecurityConfig
from chorus.launch.natsserver import free_port
from chorus.pb import task_pb2, task_pb2_grpc


class _Named(task_pb2_grpc.TaskServiceServicer):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        self.name = name

    def ListModels(
        self, request: task_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> task_pb2.ListModelsResponse:
        return task_pb2.ListModelsResponse(models=[task_pb2.ModelInfo(name=self.name)])


@pytest.fixture
def routers() -> Iterator[list[int]]:
    servers, ports = [], []
    for name in ("a", "b"):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        task_pb2_grpc.add_TaskServiceServicer_to_server(_Named(name), server)
        port = free_port()
        assert server.add_insecure_port(f"127.0.0.1:{port}") == port
        server.start()
        servers.append(server)
        ports.append(port)
    yield ports
    for server in servers:
        server.stop(None)


def _target(ports: list[int]) -> str:
    return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)


def _settled(answers: list[str]) -> list[str]:
    """The answers after both routers were first seen (the second connection may still be
    coming up during the first calls)."""
    first_b, first_a = answers.index("b"), answers.index("a")
    return answers[max(first_a, first_b) + 1 :]


def test_sync_client_alternates_between_routers(routers: list[int]) -> None:
    with TaskClient(_target(routers), SecurityConfig()) as client:
        answers = [client.list_models().models[0].name for _ in range(40)]
    settled = _settled(answers)
    assert len(settled) >= 30, answers
    # Round robin, call by call: never the same router twice in a row.
    assert all(x != y for x, y in pairwise(settled)), answers


async def test_async_client_alternates_between_routers(routers: list[int]) -> None:
    async with AsyncTaskClient(_target(routers), SecurityConfig()) as client:
        answers = [(await client.list_models()).models[0].name for _ in range(40)]
    settled = _settled(answers)
    assert len(settled) >= 30, answers
    assert all(x != y for x, y in pairwise(settled)), answers


def test_a_bare_channel_would_stay_on_one_router(routers: list[int]) -> None:
    """What the clients avoid: gRPC's default pick_first sends everything to one address."""
    with grpc.insecure_channel(_target(routers)) as ch:
        stub = task_pb2_grpc.TaskServiceStub(ch)
        answers = {stub.ListModels(task_pb2.ListModelsRequest()).models[0].name for _ in range(20)}
    assert len(answers) == 1


def test_a_dns_target_is_balanced_too(routers: list[int]) -> None:
    """dns:/// is how a headless Service is named; localhost resolves to one address here,
    so this shows the policy is accepted for it and calls get through."""
    with TaskClient(f"dns:///localhost:{routers[0]}", SecurityConfig()) as client:
        assert {client.list_models().models[0].name for _ in range(5)} == {"a"}
