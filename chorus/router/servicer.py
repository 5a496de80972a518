"""chorus.v1.TaskService: translates between gRPC and the task runner."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import grpc

from chorus.core import tracing
from chorus.core.errors import ChorusError
from chorus.core.registry import Registry
from chorus.core.security import Authorizer, peer_common_name
from chorus.pb import task_pb2, task_pb2_grpc
from chorus.router.durable import DurableTasks
from chorus.router.task import TaskRunner
from chorus.router.validate import needed_capabilities

log = logging.getLogger(__name__)
SUBMIT_ASYNC_MARGIN_S = 0.1
"""SubmitAsync stops trying to store a task this long before the caller's deadline, so the
caller hears UNAVAILABLE (retry with the same key) rather than DEADLINE_EXCEEDED."""
STREAM_IN_FLIGHT = 64
"""Tasks of one SubmitStream running at once; the router's scheduler still orders them with
every other task by priority."""


class TaskServicer(task_pb2_grpc.TaskServiceServicer):
    def __init__(
        self,
        runner: TaskRunner,
        registry: Registry,
        durable: DurableTasks,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.runner = runner
        self.registry = registry
        self.durable = durable
        self.authorizer = authorizer or Authorizer({}, {})

    def _authorize(
        self, context: grpc.aio.ServicerContext, task: task_pb2.SubmitRequest | None = None
    ) -> None:
        """Who calls (API key or mTLS identity), and may they use what the task needs?"""
        if not self.authorizer.enabled:
            return
        caller = self.authorizer.caller(_metadata(context), peer_common_name(context))
        if task is None:
            return
        for capability in needed_capabilities(self.runner.pipelines, task):
            self.authorizer.check(caller, capability)

    # A ChorusError raised here becomes the call's status (chorus.core.grpcserver.ErrorStatus).

    async def Submit(
        self, request: task_pb2.SubmitRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.SubmitResponse:
        metadata = _metadata(context) if tracing.enabled() else None
        self._authorize(context, request)
        return await self.runner.submit(request, context.time_remaining(), metadata)

    async def SubmitStream(
        self,
        requests: AsyncIterator[task_pb2.SubmitRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[task_pb2.StreamedResult]:
        """Up to STREAM_IN_FLIGHT of the stream's tasks run at once (reading waits beyond
        that, so a fast sender is held back by HTTP/2 flow control, not by memory)."""
        metadata = _metadata(context) if tracing.enabled() else None
        # Bounded, and a task's place freed only once its result is queued: a caller that
        # stops reading stops the stream's reading too.
        results: asyncio.Queue[task_pb2.StreamedResult | None] = asyncio.Queue(STREAM_IN_FLIGHT)
        room = asyncio.Semaphore(STREAM_IN_FLIGHT)
        running: set[asyncio.Task[None]] = set()
        stream_id = uuid.uuid4().hex[:16]

        async def one(n: int, req: task_pb2.SubmitRequest) -> None:
            # Unique across streams: the fuser keeps tasks for Feedback by this id.
            req.task_id = req.task_id or f"{stream_id}-{n}"
            out = task_pb2.StreamedResult(task_id=req.task_id)
            try:
                self._authorize(context, req)
                out.response.CopyFrom(
                    await self.runner.submit(req, context.time_remaining(), metadata)
                )
            except ChorusError as err:
                out.error_code, out.error_message = err.code_name, err.message
            try:
                await results.put(out)
            finally:
                room.release()

        async def read() -> None:
            try:
                n = 0
                async for req in requests:
                    await room.acquire()
                    task = asyncio.create_task(one(n, req))
                    running.add(task)
                    task.add_done_callback(running.discard)
                    n += 1
                if running:
                    await asyncio.gather(*running)
            finally:
                await results.put(None)

        reader = asyncio.create_task(read())
        try:
            while (result := await results.get()) is not None:
                yield result
            await reader  # a failure reading the stream is the call's status
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def Feedback(
        self, request: task_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.FeedbackResponse:
        self._authorize(context)
        return await self.runner.feedback(request)

    async def SubmitAsync(
        self, request: task_pb2.SubmitAsyncRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.SubmitAsyncResponse:
        self._authorize(context, request.task)
        left = context.time_remaining()  # None without a deadline
        within = None if left is None else left - SUBMIT_ASYNC_MARGIN_S
        return await self.durable.submit(request, within)

    async def GetResult(
        self, request: task_pb2.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.TaskResult:
        self._authorize(context)
        return await self.durable.get(request.task_id)

    async def WatchResult(
        self, request: task_pb2.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[task_pb2.TaskResult]:
        self._authorize(context)
        async for result in self.durable.watch(request.task_id):
            yield result

    async def Review(
        self, request: task_pb2.ReviewRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.TaskResult:
        self._authorize(context, task_pb2.SubmitRequest(capability=request.capability))
        result = await self.durable.review(request)
        feedback = task_pb2.FeedbackRequest(
            task_id=request.task_id, labels=request.labels, rows=request.rows
        )
        try:
            await self.runner.feedback(feedback)
        except ChorusError as err:
            log.warning("review of %s taught no weights: %s", request.task_id, err.message)
        return result

    async def ListModels(
        self, request: task_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> task_pb2.ListModelsResponse:
        self._authorize(context)
        by_model: dict[str, task_pb2.ModelInfo] = {}
        now = time.monotonic()
        for hb in self.registry.live(now):
            if request.capability and request.capability not in hb.capabilities:
                continue
            info = by_model.get(hb.model)
            if info is None:
                info = by_model[hb.model] = task_pb2.ModelInfo(
                    name=hb.model,
                    version=hb.version,
                    capabilities=hb.capabilities,
                    inputs=[_spec(s) for s in hb.inputs],
                    outputs=[_spec(s) for s in hb.outputs],
                )
            info.replicas.append(hb.replica)
            info.replica_info.add(
                replica=hb.replica,
                device=hb.device,
                in_flight=hb.in_flight,
                queue=hb.queue,
                ewma_ms=hb.ewma_ms,
                capacity=hb.capacity,
                heartbeat_age_s=self.registry.age_s(hb.replica, now),
            )
            if hb.device not in info.devices:
                info.devices.append(hb.device)
        return task_pb2.ListModelsResponse(
            models=[by_model[m] for m in sorted(by_model)],
            jetstream_replicas=self.durable.replicas,
        )


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _spec(s: object) -> task_pb2.TensorSpec:
    return task_pb2.TensorSpec(
        name=s.name,  # type: ignore[attr-defined]
        datatype=s.datatype,  # type: ignore[attr-defined]
        shape=s.shape,  # type: ignore[attr-defined]
    )
