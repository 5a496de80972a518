"""Typed clients for the task API, numpy in and out: `TaskClient` (blocking) and
`AsyncTaskClient` (grpc.aio), used by the CLI, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import grpc
import numpy as np

from chorus.core.codec import from_tensor, to_tensor
from chorus.core.config import SecurityConfig
from chorus.core.context import Priority
from chorus.core.environment import from_env
from chorus.core.security import aio_channel, call_metadata, channel
from chorus.core.spawner import cancel
from chorus.pb import task_pb2, task_pb2_grpc


@dataclass(frozen=True)
class TaskResult:
    """The fused outputs by name: "label" and "probabilities" for a classification,
    "value" for a regression; each member's own outputs as it produced them."""

    outputs: dict[str, np.ndarray]
    members: dict[str, dict[str, np.ndarray]]
    response: task_pb2.SubmitResponse

    @property
    def labels(self) -> np.ndarray:
        return self._output("label")

    @property
    def probabilities(self) -> np.ndarray:
        return self._output("probabilities")

    @property
    def value(self) -> np.ndarray:
        return self._output("value")

    def _output(self, name: str) -> np.ndarray:
        try:
            return self.outputs[name]
        except KeyError:
            raise KeyError(
                f"the task's answer has no {name!r} output (it has {sorted(self.outputs)})"
            ) from None


def decode(response: task_pb2.SubmitResponse) -> TaskResult:
    outputs = {t.name: from_tensor(t) for t in response.outputs}
    members = {m.model: {t.name: from_tensor(t) for t in m.outputs} for m in response.members}
    return TaskResult(outputs, members, response)


def submit_request(
    capability: str,
    inputs: dict[str, np.ndarray],
    priority: Priority = Priority.NORMAL,
    deadline_ms: int = 0,
    policy: str = "",
) -> task_pb2.SubmitRequest:
    return task_pb2.SubmitRequest(
        capability=capability,
        inputs=[to_tensor(n, a) for n, a in inputs.items()],
        priority=int(priority),  # type: ignore[arg-type]
        deadline_ms=deadline_ms,
        fusion_policy=policy,
    )


class TaskClient:
    def __init__(self, target: str, security: SecurityConfig | None = None) -> None:
        """`security` defaults to CHORUS_SECURITY_* from the environment (TLS CA, client
        certificate, API key file); all empty means a plaintext loopback channel.

        A `dns:///host:port` target (a headless Service) spreads calls round robin over
        every router it resolves to; a bare `host:port` stays on one connection."""
        security = security or from_env(SecurityConfig, "security")
        self.channel = channel(target, security)
        self.metadata = call_metadata(security)
        stub = task_pb2_grpc.TaskServiceStub(self.channel)
        self.stub = _WithMetadata(stub, self.metadata) if self.metadata else stub

    def submit(
        self,
        capability: str,
        inputs: dict[str, np.ndarray],
        *,
        priority: Priority = Priority.NORMAL,
        deadline_ms: int = 0,
        policy: str = "",
        timeout_s: float | None = 30.0,
    ) -> TaskResult:
        request = submit_request(capability, inputs, priority, deadline_ms, policy)
        return decode(self.stub.Submit(request, timeout=timeout_s))

    def list_models(self, capability: str = "") -> task_pb2.ListModelsResponse:
        return self.stub.ListModels(task_pb2.ListModelsRequest(capability=capability), timeout=10)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncTaskClient:
    """`TaskClient` on grpc.aio, for callers on an event loop: many tasks in flight from one
    channel without a thread each."""

    def __init__(self, target: str, security: SecurityConfig | None = None) -> None:
        security = security or from_env(SecurityConfig, "security")
        self.channel = aio_channel(target, security)
        self.metadata = call_metadata(security)
        stub = task_pb2_grpc.TaskServiceStub(self.channel)
        self.stub = _WithMetadata(stub, self.metadata) if self.metadata else stub

    async def submit(
        self,
        capability: str,
        inputs: dict[str, np.ndarray],
        *,
        priority: Priority = Priority.NORMAL,
        deadline_ms: int = 0,
        policy: str = "",
        timeout_s: float | None = 30.0,
    ) -> TaskResult:
        request = submit_request(capability, inputs, priority, deadline_ms, policy)
        return decode(await self.stub.Submit(request, timeout=timeout_s))

    async def list_models(self, capability: str = "") -> task_pb2.ListModelsResponse:
        request = task_pb2.ListModelsRequest(capability=capability)
        return await self.stub.ListModels(request, timeout=10)

    async def submit_stream(
        self,
        requests: AsyncIterable[task_pb2.SubmitRequest] | Iterable[task_pb2.SubmitRequest],
        *,
        timeout_s: float | None = None,
    ) -> AsyncIterator[task_pb2.StreamedResult]:
        """Many tasks over one SubmitStream call (build them with `submit_request`), each
        result as it finishes: match them by task_id; a failed task carries error_code.

        Requests are written by this client, not handed to gRPC as an iterator, and none in
        the last STREAM_WRITE_MARGIN_S before `timeout_s` runs out: gRPC turns a write that
        races the deadline into an INTERNAL status, where the caller should see
        DEADLINE_EXCEEDED."""
        call = self.stub.SubmitStream(None, timeout=timeout_s)
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + timeout_s - STREAM_WRITE_MARGIN_S if timeout_s else None

        async def write() -> None:
            async def each() -> AsyncIterator[task_pb2.SubmitRequest]:
                if isinstance(requests, AsyncIterable):
                    async for r in requests:
                        yield r
                else:
                    for r in requests:
                        yield r

            try:
                async for req in each():
                    if stop_at is not None and loop.time() >= stop_at:
                        return  # leave the call open: it ends at its deadline
                    await call.write(req)
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                pass  # the call ended; reading it raises why

        writer = asyncio.ensure_future(write())
        try:
            async for result in call:
                yield result
        except grpc.aio.AioRpcError as err:
            # A write already waiting on flow control when the deadline came fails as INTERNAL.
            if stop_at is None or err.code() != grpc.StatusCode.INTERNAL or loop.time() < stop_at:
                raise
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                err.initial_metadata(),
                err.trailing_metadata(),
                f"Deadline Exceeded (a write was under way: {err.details()})",
            ) from None
        finally:
            await cancel(writer)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


STREAM_WRITE_MARGIN_S = 0.05


class _WithMetadata:
    """The stub with the caller's credentials added to every call."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs["metadata"] = (*self._metadata, *kwargs.get("metadata", ()))
            return method(request, **kwargs)

        return call
