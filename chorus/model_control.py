"""Operator calls on one model service's repository API: which versions it has, load one,
unload one, over the same KServe gRPC port tritonclient uses."""

from __future__ import annotations

import grpc

from chorus.config import SecurityConfig, from_env
from chorus.pb import kserve_v2_pb2 as pb
from chorus.pb import kserve_v2_pb2_grpc as pb_grpc
from chorus.security import call_metadata, channel_credentials


def _channel(target: str, security: SecurityConfig) -> grpc.Channel:
    creds = channel_credentials(security)
    return grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)


def _version(version: str) -> dict[str, pb.ModelRepositoryParameter]:
    return {"version": pb.ModelRepositoryParameter(string_param=version)} if version else {}


def index(target: str, timeout_s: float = 10.0) -> list[tuple[str, str, str, str]]:
    """(model, version, state, reason) for every version the service knows of."""
    security = from_env(SecurityConfig, "security")
    with _channel(target, security) as channel:
        reply = pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
            pb.RepositoryIndexRequest(), timeout=timeout_s, metadata=call_metadata(security)
        )
    return [(m.name, m.version, m.state, m.reason) for m in reply.models]


def load(target: str, model: str, version: str = "", timeout_s: float = 120.0) -> None:
    security = from_env(SecurityConfig, "security")
    with _channel(target, security) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(
            pb.RepositoryModelLoadRequest(model_name=model, parameters=_version(version)),
            timeout=timeout_s,
            metadata=call_metadata(security),
        )


def unload(target: str, model: str, version: str = "", timeout_s: float = 30.0) -> None:
    security = from_env(SecurityConfig, "security")
    with _channel(target, security) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(model_name=model, parameters=_version(version)),
            timeout=timeout_s,
            metadata=call_metadata(security),
        )
