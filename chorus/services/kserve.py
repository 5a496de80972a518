"""KServe v2 (Open Inference Protocol) gRPC servicer for one model.

Standard clients such as tritonclient call the same ONNX session the mesh uses over NATS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

import grpc
import numpy as np

import chorus
from chorus.core.codec import datatype_of, from_bytes, numpy_dtype, to_bytes
from chorus.core.context import CallContext, Priority
from chorus.core.errors import ChorusError, InvalidArgument, NotFound
from chorus.pb import kserve_v2_pb2 as pb
from chorus.pb import kserve_v2_pb2_grpc as pb_grpc
from chorus.services.inference import InferenceCore
from chorus.services.lifecycle import READY, Loaded, ModelHost
from chorus.services.metrics import ModelMetrics

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


_TRITON_TYPE = {
    name.removeprefix("TYPE_").replace("STRING", "BYTES"): value
    for name, value in pb.DataType.items()
}


class KServeServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        host: ModelHost,
        metrics: ModelMetrics,
        core: InferenceCore,
        default_budget_s: float,
    ) -> None:
        """KServe callers queue with the mesh's own requests, at normal priority, and count
        in the load the replica's heartbeats report."""
        self.host = host
        self.name = host.name
        self.core = core
        self.default_budget_s = default_budget_s
        self.metrics = metrics

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.host.ready())

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return server_metadata()

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        if request.name != self.name:
            raise NotFound(self._elsewhere(request.name))
        return pb.ModelReadyResponse(ready=self.host.ready(request.version))

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        if request.name != self.name:
            raise NotFound(self._elsewhere(request.name))
        with self.host.use(request.version) as loaded:
            model, manifest = loaded.model, loaded.manifest
        meta = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=manifest.name,
            versions=[x.version for x in self.host.loaded()],
            platform=manifest.platform,
            inputs=[meta(name=s.name, datatype=s.datatype, shape=s.shape) for s in manifest.inputs],
            outputs=[
                meta(name=s.name, datatype=s.datatype, shape=s.shape) for s in manifest.outputs
            ],
            parameters={
                "execution_provider": pb.InferParameter(string_param=model.provider),
                "instances": pb.InferParameter(int64_param=model.settings.instances),
                "max_batch": pb.InferParameter(int64_param=model.settings.max_batch),
            },
        )

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelConfigResponse:
        if request.name != self.name:
            raise NotFound(self._elsewhere(request.name))
        with self.host.use(request.version) as loaded:
            config = _triton_config(loaded)
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self.infer(request, context.time_remaining(), "grpc")

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for reply in stream_infer(
            request_iterator, lambda request: self.infer(request, None, "grpc_stream")
        ):
            yield reply

    async def infer(
        self, request: pb.ModelInferRequest, time_remaining: float | None, transport: str
    ) -> pb.ModelInferResponse:
        try:
            if request.model_name != self.name:
                raise NotFound(self._elsewhere(request.model_name))
            with self.host.use(request.model_version) as loaded:
                manifest = loaded.manifest
                inputs = decode_inputs(request)
                wanted = [o.name for o in request.outputs] or [s.name for s in manifest.outputs]
                known = {s.name for s in manifest.outputs}
                unknown = [n for n in wanted if n not in known]
                if unknown:
                    raise InvalidArgument(
                        f"outputs: {unknown} not produced by {manifest.name!r}; "
                        f"it has {sorted(known)}"
                    )
                with self.core.serving():
                    budget = time_remaining or self.default_budget_s
                    ctx = CallContext.start(request.id or "kserve", Priority.NORMAL, budget)
                    prediction = await self.core.run(ctx, loaded, inputs)
        except ChorusError as err:
            self.metrics.observe(transport, err.code_name.lower())
            raise
        rows = next(iter(inputs.values())).shape[0]
        self.metrics.observe(transport, "ok", rows, prediction.compute_ms / 1000)
        response = pb.ModelInferResponse(
            model_name=manifest.name, model_version=manifest.version, id=request.id
        )
        for name in wanted:
            array = prediction.outputs[name]
            response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
            response.raw_output_contents.append(to_bytes(array))
        return response

    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=self.name, version=v.version, state=v.state, reason=v.reason)
                for v in self.host.index()
                if not request.ready or v.state == READY
            ]
        )

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        if request.model_name != self.name:
            raise NotFound(self._elsewhere(request.model_name))
        await self.host.load(_version_param(request.parameters) or None)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        if request.model_name != self.name:
            raise NotFound(self._elsewhere(request.model_name))
        await self.host.unload(_version_param(request.parameters))
        return pb.RepositoryModelUnloadResponse()

    def _elsewhere(self, name: str) -> str:
        return f"model_name: model {name!r} is not served here; this service serves {self.name!r}"


def server_metadata() -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name="chorus", version=chorus.__version__, extensions=["model_repository"]
    )


async def stream_infer(
    request_iterator: AsyncIterator[pb.ModelInferRequest],
    infer: Callable[[pb.ModelInferRequest], Awaitable[pb.ModelInferResponse]],
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """Many requests on one stream, served concurrently and answered as each finishes
    (matched by `id`): no call set-up per request, which on a small host is most of what a
    unary call costs. A bad request gets `error_message`; the stream goes on."""
    replies: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()

    async def one(request: pb.ModelInferRequest) -> None:
        try:
            response = await infer(request)
            await replies.put(pb.ModelStreamInferResponse(infer_response=response))
        except ChorusError as err:
            answer = pb.ModelInferResponse(model_name=request.model_name, id=request.id)
            await replies.put(
                pb.ModelStreamInferResponse(
                    error_message=f"{err.code_name}: {err.message}", infer_response=answer
                )
            )

    async def read() -> None:
        serving: set[asyncio.Task[None]] = set()
        try:
            async for request in request_iterator:
                task = asyncio.create_task(one(request))
                serving.add(task)
                task.add_done_callback(serving.discard)
            if serving:
                await asyncio.gather(*serving)
        finally:
            await replies.put(None)

    reader = asyncio.create_task(read())
    try:
        while (reply := await replies.get()) is not None:
            yield reply
    finally:
        reader.cancel()


def _triton_config(loaded: Loaded) -> pb.ModelConfig:
    """The config Triton would report: with batching on, dims lose the row dimension."""
    manifest, settings = loaded.manifest, loaded.model.settings
    batched = settings.max_batch > 1 and all(
        s.shape and s.shape[0] == -1 for s in (*manifest.inputs, *manifest.outputs)
    )

    def dims(shape: tuple[int, ...]) -> list[int]:
        return list(shape[1:] if batched else shape)

    config = pb.ModelConfig(
        name=manifest.name,
        platform=manifest.platform,
        backend="onnxruntime",
        max_batch_size=settings.max_batch if batched else 0,
        input=[
            pb.ModelInput(name=s.name, data_type=_TRITON_TYPE[s.datatype], dims=dims(s.shape))
            for s in manifest.inputs
        ],
        output=[
            pb.ModelOutput(name=s.name, data_type=_TRITON_TYPE[s.datatype], dims=dims(s.shape))
            for s in manifest.outputs
        ],
    )
    if batched:
        config.dynamic_batching.max_queue_delay_microseconds = int(
            settings.max_batch_delay_ms * 1000
        )
    return config


def _version_param(parameters: Mapping[str, pb.ModelRepositoryParameter]) -> str:
    # tritonclient always sends unload_dependents; a model service has no dependents.
    unknown = sorted(set(parameters) - {"version", "unload_dependents"})
    if unknown:
        raise InvalidArgument(
            f"parameters: {unknown} not supported; this service takes 'version' (a string)"
        )
    if "version" not in parameters:
        return ""
    param = parameters["version"]
    if param.WhichOneof("parameter_choice") != "string_param" or not param.string_param:
        raise InvalidArgument("parameters['version']: expected a non-empty string_param")
    return str(param.string_param)


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
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
