"""The clients cover the task API: every RPC of the TaskService descriptor has a method on
both clients, and every field of every request message is a parameter of that method."""

from __future__ import annotations

import inspect

from chorus.client import AsyncTaskClient, TaskClient
from chorus.client.base import Method
from chorus.pb import task_pb2

SERVICE = task_pb2.DESCRIPTOR.services_by_name["TaskService"]
# Request fields whose parameter has another name, or that the client fills in itself.
RENAMED = {"fusion_policy": "policy"}
# SubmitAsyncRequest.task is the task's own fields, given as for submit.
EXPANDED = {"task": [f.name for f in task_pb2.SubmitRequest.DESCRIPTOR.fields]}


def methods(client: type) -> dict[str, list[Method]]:  # type: ignore[type-arg]
    found: dict[str, list[Method]] = {}  # type: ignore[type-arg]
    for name in dir(client):
        attr = inspect.getattr_static(client, name)
        if isinstance(attr, Method):
            found.setdefault(attr.rpc, []).append(attr)
    return found


def test_every_rpc_has_a_method_on_both_clients() -> None:
    rpcs = {m.name for m in SERVICE.methods}
    for client in (TaskClient, AsyncTaskClient):
        missing = rpcs - set(methods(client))
        assert not missing, f"{client.__name__} has no method for {sorted(missing)}"


def test_every_request_field_is_a_parameter() -> None:
    by_rpc = methods(TaskClient)
    for rpc in SERVICE.methods:
        fields: list[str] = []
        for f in rpc.input_type.fields:
            fields += EXPANDED.get(f.name, [f.name])
        for method in by_rpc[rpc.name]:
            params = set(inspect.signature(method.op).parameters)
            if rpc.name == "SubmitStream":  # each streamed task is a Task or SubmitRequest
                assert "tasks" in params
                continue
            missing = [f for f in fields if RENAMED.get(f, f) not in params]
            assert not missing, f"{method.__name__} ({rpc.name}) has no parameter for {missing}"


def test_both_clients_have_the_same_methods_from_one_definition() -> None:
    def ops(client: type) -> dict[str, object]:
        return {n: a.op for n, a in vars(client).items() if isinstance(a, Method)}

    assert ops(TaskClient) == ops(AsyncTaskClient)
    assert TaskClient.submit.__doc__ and "fused answer" in TaskClient.submit.__doc__
