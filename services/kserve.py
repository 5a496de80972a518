"""KServe v2 (Open Inference Protocol) gRPC servicer for one model.

Standard clients such as tritonclient call the same ONNX session the mesh uses over NATS.
"""

from __future__ import annotations

import grpc
import numpy as np

import chorus
from chorus.codec import datatype_of, from_bytes, numpy_dtype, to_bytes
from chorus.context import CallContext, Priority
from chorus.errors import ChorusError, InvalidArgument, NotFound
from chorus.pb import kserve_v2_pb2 as pb
from chorus.pb import kserve_v2_pb2_grpc as pb_grpc
from chorus.scheduler import PriorityScheduler
from services.batcher import DynamicBatcher
from services.metrics import ModelMetrics
from services.runtime import OnnxModel

_TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        model: OnnxModel,
        metrics: ModelMetrics,
        scheduler: PriorityScheduler,
        default_budget_s: float,
        batcher: DynamicBatcher,
    ) -> None:
        """KServe callers queue with the mesh's own requests, at normal priority."""
        self.model = model
        self.scheduler = scheduler
        self.batcher = batcher
        self.default_budget_s = default_budget_s
        self.manifest = model.manifest
        self.metrics = metrics

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="chorus", version=chorus.__version__, extensions=[])

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            self._check_model(request.name, request.version)
        except NotFound as err:
            await context.abort(err.code, err.message)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            self._check_model(request.name, request.version)
        except NotFound as err:
            await context.abort(err.code, err.message)
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self.manifest.name,
            versions=[self.manifest.version],
            platform=self.manifest.platform,
            inputs=[
                meta(name=s.name, datatype=s.datatype, shape=s.shape) for s in self.manifest.inputs
            ],
            outputs=[
                meta(name=s.name, datatype=s.datatype, shape=s.shape) for s in self.manifest.outputs
            ],
        )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        try:
            self._check_model(request.model_name, request.model_version)
            inputs = _decode_inputs(request)
            wanted = [o.name for o in request.outputs] or [s.name for s in self.manifest.outputs]
            known = {s.name for s in self.manifest.outputs}
            unknown = [n for n in wanted if n not in known]
            if unknown:
                raise InvalidArgument(
                    f"outputs: {unknown} not produced by {self.manifest.name!r}; "
                    f"it has {sorted(known)}"
                )
            self.metrics.in_flight.labels(self.manifest.name).inc()
            try:
                budget = context.time_remaining() or self.default_budget_s
                ctx = CallContext.start(request.id or "kserve", Priority.NORMAL, budget)
                prediction = await self.scheduler.run(
                    ctx, lambda: self.batcher.infer(inputs, int(Priority.NORMAL))
                )
            finally:
                self.metrics.in_flight.labels(self.manifest.name).dec()
        except ChorusError as err:
            self.metrics.observe("grpc", err.code_name.lower())
            await context.abort(err.code, err.message)
        rows = next(iter(inputs.values())).shape[0]
        self.metrics.observe("grpc", "ok", rows, prediction.compute_ms / 1000)
        response = pb.ModelInferResponse(
            model_name=self.manifest.name, model_version=self.manifest.version, id=request.id
        )
        for name in wanted:
            array = prediction.outputs[name]
            response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            response.raw_output_contents.append(to_bytes(array))
        return response

    def _check_model(self, name: str, version: str) -> None:
        if name != self.manifest.name or (version and version != self.manifest.version):
            raise NotFound(
                f"model {name!r} version {version or '(any)'} is not served here; "
                f"this service serves {self.manifest.name!r} version {self.manifest.version}"
            )


def _decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    if not request.inputs:
        raise InvalidArgument("inputs: empty; send at least one input tensor")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents: {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input or none"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, t in enumerate(request.inputs):
        field = f"inputs[{t.name!r}]"
        if raw:
            arrays[t.name] = from_bytes(raw[i], t.datatype, t.shape, field=field)
            continue
        attr = _TYPED_FIELD.get(t.datatype)
        if attr is None:
            raise InvalidArgument(
                f"{field}.datatype: {t.datatype!r} cannot be sent as typed contents"
            )
        values = getattr(t.contents, attr)
        dims = [int(d) for d in t.shape]
        if len(values) != int(np.prod(dims)):
            raise InvalidArgument(
                f"{field}: shape {dims} needs {int(np.prod(dims))} values, got {len(values)}"
            )
        arrays[t.name] = np.asarray(
            values, dtype=numpy_dtype(t.datatype, field=f"{field}.datatype")
        ).reshape(dims)
    return arrays
