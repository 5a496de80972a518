"""A co-hosted group as one KServe v2 model, as Triton serves an ensemble: `ModelInfer` (or
`ModelStreamInfer`) naming the group runs every member on the request's inputs and fuses their
scores in this process, with the strategies, conflict policies, weights and calibration a
router's task gets. No router stands in front, so nothing is retried on another replica,
queued by priority across the mesh or kept in JetStream: the call is as durable as a call to
one model, and a client that wants more submits a task. The same port serves each member as
its own model (what the member's own port serves), so one address answers every model here,
as one Triton server does.

A request may set parameters: `capability` (default: the first its members share, in the
first member's manifest order), `policy` and `conflict` (the fuser's strategy and conflict
policy; the router's defaults otherwise), `min_members` (fewer answers is UNAVAILABLE;
default 1) and `priority` (Triton's levels: 1 critical, 2 normal, 3 batch, 0 the default, for
the members' queues). Its deadline is the call's own. The response's parameters say which
capability, strategy and conflict policy answered, which members did and which did not, and
the task's id: the fuser keeps the task as it keeps a router's (CHORUS_FUSER_KEEP_TASKS), so
`chorus feedback` on that id teaches the weights as for a submitted task. Calls asked alike
that come while one runs join one task (chorus.group.joining), each still answered, and kept,
as its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Hashable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, cast

import grpc
import numpy as np

from chorus.core import needs
from chorus.core.codec import datatype_of, from_tensor, to_bytes
from chorus.core.config import GroupConfig
from chorus.core.context import CallContext, Priority
from chorus.core.errors import InvalidArgument, NotFound, Unavailable
from chorus.core.spec import TensorSpec
from chorus.core.wire import DEFAULT_POLICY, REGRESSION_POLICY
from chorus.group.joining import Joiner, Part
from chorus.pb import kserve_v2_pb2 as pb
from chorus.pb import kserve_v2_pb2_grpc as pb_grpc
from chorus.pb import wire_pb2
from chorus.services import heads
from chorus.services.app import ModelService
from chorus.services.kserve import (
    KServeServicer,
    decode_inputs,
    server_metadata,
    stream_infer,
)
from chorus.services.manifest import Manifest


class Group(Protocol):
    """What the endpoint needs of the group it fronts (chorus.group.service.GroupService)."""

    config: GroupConfig
    members: dict[str, ModelService]

    def ready(self) -> tuple[bool, str]: ...

    async def answer_call(
        self,
        call: wire_pb2.FuseCall,
        ctx: CallContext,
        headers: dict[str, str] | None = None,
        digest: str = "",
        *,
        outputs: bool = True,
        arrays: dict[str, np.ndarray] | None = None,
        tasks: Sequence[tuple[str, int, int]] = (),
    ) -> wire_pb2.InferReply: ...

    def counted(self, transport: str) -> AbstractContextManager[None]: ...


VERSION = "1"
PLATFORM = "ensemble"
OUTPUTS = {
    "probabilities": TensorSpec("probabilities", "FP32", (-1, -1)),
    "label": TensorSpec("label", "INT64", (-1,)),
    "status": TensorSpec("status", "BYTES", (-1,)),
}
"""The fused scores (a regression's values), and for a classification each row's label and
how it was decided (agreed, resolved, conflicted, unresolved, needs_review)."""
INTEGER = ("int64_param", "uint64_param")
PARAMETERS: dict[str, tuple[str, ...]] = {
    "capability": ("string_param",),
    "policy": ("string_param",),
    "conflict": ("string_param",),
    "priority": INTEGER,
    "min_members": INTEGER,
}


class EnsembleServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, group: Group, default_conflict_policy: str = "none", *, join_rows: int = 256
    ) -> None:
        """`join_rows`: the most rows concurrent calls asked alike join into one task
        (chorus.group.joining); 0 runs every call as a task of its own."""
        self.group = group
        self.name = group.config.name
        self.default_conflict_policy = default_conflict_policy
        self.joiner = Joiner(self._joined, max_rows=join_rows) if join_rows > 0 else None

    def _member(self, name: str) -> KServeServicer:
        member = self.group.members.get(name)
        if member is None or member.kserve is None:
            raise NotFound(
                f"model_name: model {name!r} is not served here; this group serves "
                f"{', '.join([self.name, *self.group.members])}"
            )
        return member.kserve

    def _manifests(self) -> list[Manifest]:
        found = []
        for name, member in self.group.members.items():
            current = member.host.current if member.host is not None else None
            if current is None:
                raise Unavailable(f"model {name}: not loaded yet")
            found.append(current.manifest)
        return found

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.group.ready()[0])

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return server_metadata()

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        if request.name != self.name:
            return await self._member(request.name).ModelReady(request, context)
        return pb.ModelReadyResponse(ready=self.group.ready()[0])

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        if request.name != self.name:
            return await self._member(request.name).ModelMetadata(request, context)
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self.name,
            versions=[VERSION],
            platform=PLATFORM,
            inputs=[
                meta(name=s.name, datatype=s.datatype, shape=s.shape)
                for s in _inputs(self._manifests()).values()
            ],
            outputs=[
                meta(name=s.name, datatype=s.datatype, shape=s.shape) for s in OUTPUTS.values()
            ],
            parameters={
                "members": pb.InferParameter(string_param=",".join(self.group.members)),
                "capabilities": pb.InferParameter(
                    string_param=",".join(_shared_capabilities(self._manifests()))
                ),
            },
        )

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        if request.name != self.name:
            return await self._member(request.name).ModelConfig(request, context)
        raise NotFound(
            f"name: {self.name!r} is a co-hosted group, which has no Triton model config; "
            "ModelMetadata describes it"
        )

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse()
        ready = self.group.ready()[0]
        if ready or not request.ready:
            index.models.add(
                name=self.name, version=VERSION, state="READY" if ready else "UNAVAILABLE"
            )
        for name in self.group.members:
            members = await self._member(name).RepositoryIndex(request, context)
            index.models.extend(members.models)
        return index

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        if request.model_name == self.name:
            raise InvalidArgument(_whole(self.name, "loaded"))
        return await self._member(request.model_name).RepositoryModelLoad(request, context)

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        if request.model_name == self.name:
            raise InvalidArgument(_whole(self.name, "unloaded"))
        return await self._member(request.model_name).RepositoryModelUnload(request, context)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        if request.model_name != self.name:
            return await self._member(request.model_name).ModelInfer(request, context)
        return await self.infer(request, context.time_remaining(), "grpc")

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async def one(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
            if request.model_name != self.name:
                return await self._member(request.model_name).infer(request, None, "grpc_stream")
            return await self.infer(request, None, "grpc_stream")

        async for reply in stream_infer(request_iterator, one):
            yield reply

    async def infer(
        self, request: pb.ModelInferRequest, time_remaining: float | None, transport: str
    ) -> pb.ModelInferResponse:
        """The whole task on the group: its members run and fused here."""
        with self.group.counted(transport):
            return await self._infer(request, time_remaining)

    async def _infer(
        self, request: pb.ModelInferRequest, time_remaining: float | None
    ) -> pb.ModelInferResponse:
        if request.model_version not in ("", VERSION):
            raise NotFound(
                f"model_version: group {self.name} has version {VERSION}, "
                f"got {request.model_version!r}"
            )
        params = _parameters(request.parameters)
        manifests = self._manifests()
        capability = _capability(self.name, manifests, str(params.get("capability", "")))
        inputs = decode_inputs(request)
        taken = _inputs(manifests)
        extra = sorted(set(inputs) - set(taken))
        if extra:
            raise InvalidArgument(
                f"inputs: {extra} taken by no member of group {self.name}; "
                f"its members take {sorted(taken)}"
            )
        wanted = [o.name for o in request.outputs] or list(OUTPUTS)
        unknown = [n for n in wanted if n not in OUTPUTS]
        if unknown:
            raise InvalidArgument(
                f"outputs: {unknown} not produced by group {self.name}; it has {list(OUTPUTS)}"
            )
        call = self.call(manifests, capability, params)
        priority = _priority(int(params.get("priority", 0)))
        task_id = uuid.uuid4().hex
        budget_s = time_remaining or self.group.config.default_budget_s
        if self.joiner is not None and needs.stackable(
            call.policy, call.conflict.name, call.conflict.then
        ):
            signature = tuple((n, a.dtype.str, a.shape[1:]) for n, a in sorted(inputs.items()))
            key = (call.SerializeToString(deterministic=True), priority, signature)
            reply, part = await self.joiner.ask(key, task_id, inputs, budget_s)
            rows = slice(part.start, part.stop)
        else:
            call.task_id = task_id
            ctx = CallContext.start(task_id, priority, budget_s)
            reply = await self.group.answer_call(call, ctx, outputs=False, arrays=inputs)
            rows = slice(None)
        response = _response(request, reply.fused, wanted, self.name, rows)
        response.parameters["task_id"].string_param = task_id
        response.parameters["capability"].string_param = capability
        return response

    async def _joined(
        self,
        key: Hashable,
        inputs: dict[str, np.ndarray],
        parts: list[Part],
        budget_s: float,
    ) -> wire_pb2.InferReply:
        """Calls joined by the Joiner, as one task: each part kept for feedback under its own
        id, as if fused alone."""
        encoded, priority, _ = cast(tuple[bytes, Priority, object], key)
        call = wire_pb2.FuseCall.FromString(encoded)
        ctx = CallContext.start(parts[0].tag, priority, budget_s)
        tasks = [(p.tag, p.start, p.stop) for p in parts]
        return await self.group.answer_call(call, ctx, outputs=False, arrays=inputs, tasks=tasks)

    def call(
        self,
        manifests: list[Manifest],
        capability: str,
        params: Mapping[str, str | int],
    ) -> wire_pb2.FuseCall:
        """The task a router would send this group for `capability`, built from the members'
        own manifests (what their heartbeats tell a router), less the inputs: the group has
        them decoded already, and encodes them only for a fuser that reads them."""
        regression = all(m.regression for m in manifests)
        call = wire_pb2.FuseCall(
            policy=str(params.get("policy", ""))
            or (REGRESSION_POLICY if regression else DEFAULT_POLICY),
            labels=heads.primary_labels(manifests[0]),
            capability=capability,
            min_members=int(params.get("min_members", 1)),
        )
        call.conflict.name = str(params.get("conflict", "")) or self.default_conflict_policy
        for m in manifests:
            call.expected.add(
                model=m.name, scores_output=m.scores_output, output_kind=m.output_kind,
                temperature=m.temperature,
            )  # fmt: skip
        return call


def _whole(name: str, done: str) -> str:
    return f"model_name: {name!r} is a co-hosted group; its members are {done}, not the group"


def _parameters(given: Mapping[str, pb.InferParameter]) -> dict[str, str | int]:
    unknown = sorted(set(given) - set(PARAMETERS))
    if unknown:
        raise InvalidArgument(
            f"parameters: {unknown} not supported; a group takes {list(PARAMETERS)}"
        )
    found: dict[str, str | int] = {}
    for name, param in given.items():
        kind = param.WhichOneof("parameter_choice")
        if kind not in PARAMETERS[name]:
            raise InvalidArgument(
                f"parameters[{name!r}]: expected {' or '.join(PARAMETERS[name])}, "
                f"got {kind or 'nothing'}"
            )
        found[name] = getattr(param, kind)
    return found


def _priority(level: int) -> Priority:
    """Triton's levels, 1 first and 0 the default: here critical 1, normal 2, batch 3."""
    if level == 0:
        return Priority.NORMAL
    try:
        return Priority(level)
    except ValueError:
        raise InvalidArgument(
            f"parameters['priority']: expected 0 (the default), 1 (critical), 2 (normal) or "
            f"3 (batch), got {level}"
        ) from None


def _shared_capabilities(manifests: list[Manifest]) -> list[str]:
    shared = set.intersection(*(set(m.capabilities) for m in manifests))
    return [c for c in manifests[0].capabilities if c in shared]


def _capability(group: str, manifests: list[Manifest], asked: str) -> str:
    shared = _shared_capabilities(manifests)
    if asked:
        if asked not in shared:
            raise InvalidArgument(
                f"parameters['capability']: group {group} answers {shared}, got {asked!r}"
            )
        return asked
    if not shared:
        raise InvalidArgument(
            f"model_name: group {group}'s members share no capability, so nothing fuses them"
        )
    return shared[0]


def _inputs(manifests: list[Manifest]) -> dict[str, TensorSpec]:
    found: dict[str, TensorSpec] = {}
    for m in manifests:
        for spec in m.inputs:
            found.setdefault(spec.name, spec)
    return found


def _response(
    request: pb.ModelInferRequest,
    fused: wire_pb2.FuseReply,
    wanted: list[str],
    name: str,
    rows: slice,
) -> pb.ModelInferResponse:
    """The answer to one call: its `rows` of the fused task (all of them, unless joined)."""
    arrays = {"probabilities": from_tensor(fused.probabilities)[rows]}
    if fused.rows:
        mine = fused.rows[rows]
        arrays["label"] = np.array([r.label for r in mine], dtype=np.int64)
        arrays["status"] = np.array([r.status for r in mine], dtype=object)
    response = pb.ModelInferResponse(model_name=name, model_version=VERSION, id=request.id)
    for out in wanted:
        if out not in arrays:
            raise InvalidArgument(f"outputs: {out!r} is given for a classification only")
        array = arrays[out]
        response.outputs.add(name=out, datatype=datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(to_bytes(array))
    response.parameters["policy"].string_param = fused.policy
    response.parameters["conflict_policy"].string_param = fused.conflict_policy
    response.parameters["members"].string_param = ",".join(a.model for a in fused.answers)
    if fused.missing:
        response.parameters["missing"].string_param = "; ".join(
            f"{m}: {e.code}: {e.message}" for m, e in fused.missing.items()
        )
    return response
