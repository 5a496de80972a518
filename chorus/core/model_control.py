"""Operator calls on one model service's repository API: which versions it has, load one,
unload one, over the same KServe gRPC port tritonclient uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chorus.core.config import SecurityConfig
from chorus.core.environment import from_env
from chorus.core.security import call_metadata, channel
from chorus.pb import kserve_v2_pb2 as pb
from chorus.pb import kserve_v2_pb2_grpc as pb_grpc


def _call(
    target: str,
    method: Callable[[pb_grpc.GRPCInferenceServiceStub], Callable[..., Any]],
    request: Any,
    timeout_s: float,
) -> Any:
    security = from_env(SecurityConfig, "security")
    with channel(target, security) as ch:
        rpc = method(pb_grpc.GRPCInferenceServiceStub(ch))
        return rpc(request, timeout=timeout_s, metadata=call_metadata(security))


def _version(version: str) -> dict[str, pb.ModelRepositoryParameter]:
    return {"version": pb.ModelRepositoryParameter(string_param=version)} if version else {}


def index(target: str, timeout_s: float = 10.0) -> list[tuple[str, str, str, str]]:
    """(model, version, state, reason) for every version the service knows of."""
    reply = _call(target, lambda s: s.RepositoryIndex, pb.RepositoryIndexRequest(), timeout_s)
    return [(m.name, m.version, m.state, m.reason) for m in reply.models]


def load(target: str, model: str, version: str = "", timeout_s: float = 120.0) -> None:
    request = pb.RepositoryModelLoadRequest(model_name=model, parameters=_version(version))
    _call(target, lambda s: s.RepositoryModelLoad, request, timeout_s)


def unload(target: str, model: str, version: str = "", timeout_s: float = 30.0) -> None:
    request = pb.RepositoryModelUnloadRequest(model_name=model, parameters=_version(version))
    _call(target, lambda s: s.RepositoryModelUnload, request, timeout_s)
