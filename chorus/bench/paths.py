"""The serving paths under test, each driven by the same closed-loop clients.

Every path offers the same three steps to the runner: `warm` (unmeasured calls, so a phase
never pays for connection set-up or first-run allocation), `drive` (CONCURRENCY callers, each
sending its next request as soon as the last one answers, until N are done) and the processes
to charge CPU time to. The runner samples CPU and GPU use around `drive` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import psutil

from chorus.launch.mesh import Mesh

if TYPE_CHECKING:
    pass

CAPABILITY = "classify/digits"
WORKLOAD = "one digit (1x64 FP32) per request; 3 members (logreg, forest, mlp); soft vote"
WARM_UP = 50
STREAM = "-stream"
"""The suffix of a path that streams its requests (ModelStreamInfer) instead of unary calls."""
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Workload:
    repository: Path
    members: tuple[str, ...]
    rows: list[np.ndarray]
    """One 1x64 FP32 digit per request, cycled."""

    def onnx_path(self, member: str) -> Path:
        from chorus.services import repository

        return repository.load(self.repository, member).onnx_path


def load_workload(repository: Path) -> tuple[Workload, list[Path]]:
    """The held-out digits and the demo members, building whichever members are missing."""
    from chorus.demo.build import build_demo
    from chorus.demo.datasets import digits_split
    from chorus.demo.members import MEMBERS

    members = tuple(MEMBERS)
    built = build_demo(repository, names=list(members))
    x = digits_split().x_test
    return Workload(repository, members, [x[i : i + 1] for i in range(len(x))]), built


@dataclass
class Phase:
    """Filled in by `drive` while it runs, so the progress bar can watch it without a hook
    on every request."""

    latencies_s: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    reported: int = 0
    """Requests a remote driver says it has finished, before it sends the latencies."""

    @property
    def done(self) -> int:
        return max(len(self.latencies_s), self.reported)


class BenchPath(Protocol):
    name: str

    def warm(self, n: int) -> None: ...

    def drive(self, concurrency: int, requests: int, phase: Phase) -> None: ...

    def clients(self) -> list[psutil.Process]:
        """Where the load is generated; its CPU time is the client's share."""
        ...

    def services(self) -> list[tuple[str, psutil.Process]] | None:
        """The serving processes by name, or None where serving happens in the client."""
        ...


class BarePath:
    """The three sessions and a numpy soft vote in this process: the floor any serving adds to.

    Concurrency here is threads: ONNX Runtime releases the GIL while it runs, so several
    callers do overlap, as they would in an application embedding the models.
    """

    name = "bare"

    def __init__(self, workload: Workload) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.rows = workload.rows
        self.sessions = [
            ort.InferenceSession(
                str(workload.onnx_path(m)), opts, providers=["CPUExecutionProvider"]
            )
            for m in workload.members
        ]

    def _once(self, i: int) -> None:
        row = self.rows[i % len(self.rows)]
        probs = [s.run(["probabilities"], {"input": row})[0] for s in self.sessions]
        np.argmax(np.mean(probs, axis=0), axis=1)

    def warm(self, n: int) -> None:
        for i in range(n):
            self._once(i)

    def drive(self, concurrency: int, requests: int, phase: Phase) -> None:
        todo = iter(range(requests))
        start = threading.Barrier(concurrency + 1)

        def caller() -> None:
            start.wait()
            for i in todo:
                t0 = time.perf_counter()
                self._once(i)
                phase.latencies_s.append(time.perf_counter() - t0)

        threads = [threading.Thread(target=caller) for _ in range(concurrency)]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        phase.elapsed_s = time.perf_counter() - t0

    def clients(self) -> list[psutil.Process]:
        return [psutil.Process()]

    def services(self) -> list[tuple[str, psutil.Process]] | None:
        return None


def _event_loop_runner() -> asyncio.Runner:
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


class GrpcPath:
    """A gRPC method driven by asyncio clients on one channel, as the services' users do.

    One event loop lives as long as the path, since a grpc.aio channel belongs to the loop
    that opened it and should outlive a phase.
    """

    def __init__(
        self,
        name: str,
        target: str,
        method: Callable[[Any], Callable[..., Awaitable[Any]]],
        messages: list[Any],
        services: Callable[[], list[tuple[str, psutil.Process]]],
    ) -> None:
        """`method` picks the stub's method off a channel; `services` lists who serves it."""
        self.name = name
        self.messages = messages
        self._services = services
        self._runner = _event_loop_runner()
        self._channel, self._call = self._runner.run(self._connect(target, method))

    async def _connect(
        self, target: str, method: Callable[[Any], Callable[..., Awaitable[Any]]]
    ) -> tuple[Any, Callable[..., Awaitable[Any]]]:
        """The connection (closed with the path) and the call each request makes."""
        import grpc

        channel = grpc.aio.insecure_channel(target)
        return channel, method(channel)

    def warm(self, n: int) -> None:
        async def calls() -> None:
            for i in range(n):
                await self._call(self.messages[i % len(self.messages)], timeout=TIMEOUT_S)

        self._runner.run(calls())

    def drive(self, concurrency: int, requests: int, phase: Phase) -> None:
        todo = iter(range(requests))

        async def caller() -> None:
            for i in todo:
                t0 = time.perf_counter()
                await self._call(self.messages[i % len(self.messages)], timeout=TIMEOUT_S)
                phase.latencies_s.append(time.perf_counter() - t0)

        async def callers() -> None:
            t0 = time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(concurrency)))
            phase.elapsed_s = time.perf_counter() - t0

        self._runner.run(callers())

    def clients(self) -> list[psutil.Process]:
        return [psutil.Process()]

    def services(self) -> list[tuple[str, psutil.Process]] | None:
        return self._services()

    def close(self) -> None:
        self._runner.run(self._channel.close())
        self._runner.close()


class StreamPath(GrpcPath):
    """ModelStreamInfer: every caller's requests on one bidirectional stream, each answer
    matched to its request by id, as tritonclient's `start_stream` and `async_stream_infer`
    ask a server; `messages` carry ids unique among the requests in flight."""

    async def _connect(
        self, target: str, method: Callable[[Any], Callable[..., Awaitable[Any]]]
    ) -> tuple[Any, Callable[..., Awaitable[Any]]]:
        import grpc

        channel = grpc.aio.insecure_channel(target)
        stream: Any = method(channel)()
        waiting: dict[str, asyncio.Future[Any]] = {}
        writing = asyncio.Lock()

        async def read() -> None:
            async for reply in stream:
                answered = waiting.pop(reply.infer_response.id, None)
                if answered is None or answered.done():
                    continue
                if reply.error_message:
                    answered.set_exception(RuntimeError(reply.error_message))
                else:
                    answered.set_result(reply.infer_response)

        self._reader = asyncio.ensure_future(read())

        async def call(message: Any, timeout: float) -> Any:
            answered = asyncio.get_running_loop().create_future()
            waiting[message.id] = answered
            async with writing:
                await stream.write(message)
            return await asyncio.wait_for(answered, timeout)

        return channel, call

    def close(self) -> None:
        self._reader.cancel()
        super().close()


def _process(pid: int, name: str) -> list[tuple[str, psutil.Process]]:
    try:
        return [(name, psutil.Process(pid))]
    except psutil.NoSuchProcess:
        return []


def kserve_requests(workload: Workload, model: str) -> list[Any]:
    """One KServe v2 ModelInferRequest per row for `model`: what a model service, a group's
    model and Triton are each sent, from the same stubs; each request's id is its row's."""
    from chorus.pb import kserve_v2_pb2 as kpb

    messages = []
    for i, row in enumerate(workload.rows):
        req = kpb.ModelInferRequest(model_name=model, id=str(i), raw_input_contents=[row.tobytes()])
        req.inputs.add(name="input", datatype="FP32", shape=row.shape)
        messages.append(req)
    return messages


def kserve_path(
    name: str,
    target: str,
    model: str,
    workload: Workload,
    services: Callable[[], list[tuple[str, psutil.Process]]],
) -> GrpcPath:
    """ModelInfer on `model` at `target`, driven like the mesh's Submit; a path named
    `...-stream` sends the same requests on one ModelStreamInfer stream instead."""
    from chorus.pb import kserve_v2_pb2_grpc as kpb_grpc

    stream = name.endswith(STREAM)
    method = "ModelStreamInfer" if stream else "ModelInfer"
    return (StreamPath if stream else GrpcPath)(
        name,
        target,
        lambda ch: getattr(kpb_grpc.GRPCInferenceServiceStub(ch), method),
        kserve_requests(workload, model),
        services,
    )


def service_path(mesh: Mesh, workload: Workload) -> GrpcPath:
    """One member alone over KServe v2 ModelInfer: what a single service costs, no NATS."""
    member = mesh.child(workload.members[-1])
    return kserve_path(
        "service",
        str(member.ready["grpc"]),
        member.name,
        workload,
        lambda: _process(member.proc.pid, member.name),
    )


def group_model_path(mesh: Mesh, workload: Workload, name: str) -> GrpcPath:
    """The co-hosted group as one KServe v2 model (chorus.group.ensemble): ModelInfer to the
    group's process, which runs the members and fuses them, with no router; asked as Triton's
    ensemble is."""
    group = mesh.child(f"group-{COHOSTED_GROUP}")
    return kserve_path(
        name, str(group.ready["grpc"]), COHOSTED_GROUP, workload, _mesh_services(mesh)
    )


def _submits(workload: Workload) -> list[Any]:
    from chorus.core.codec import to_tensor
    from chorus.pb import task_pb2

    return [
        task_pb2.SubmitRequest(capability=CAPABILITY, inputs=[to_tensor("input", row)])
        for row in workload.rows
    ]


def _mesh_services(mesh: Mesh) -> Callable[[], list[tuple[str, psutil.Process]]]:
    def services() -> list[tuple[str, psutil.Process]]:
        # Everything this process started is the mesh, nats-server included.
        named = {c.proc.pid: c.name for c in mesh.children}
        return [(named.get(p.pid, p.name()), p) for p in psutil.Process().children(True)]

    return services


def mesh_path(mesh: Mesh, workload: Workload, name: str = "mesh") -> GrpcPath:
    """The router's Submit: router -> members over NATS -> fuser over NATS -> router; or,
    with the members co-hosted (`name` "cohosted"), router -> the group's process -> router."""
    from chorus.pb import task_pb2_grpc

    return GrpcPath(
        name,
        mesh.router_target,
        lambda ch: task_pb2_grpc.TaskServiceStub(ch).Submit,
        _submits(workload),
        _mesh_services(mesh),
    )


class NatsSubmitPath(GrpcPath):
    """The router's Submit on the bus (`chorus.submit`), driven like the gRPC paths: the same
    SubmitRequest bytes, one NATS request per task, from a connection of its own (`target`
    is the NATS URL)."""

    async def _connect(
        self, target: str, method: Callable[[Any], Callable[..., Awaitable[Any]]]
    ) -> tuple[Any, Callable[..., Awaitable[Any]]]:
        import nats

        from chorus.core.errors import ERROR_CODE_HEADER
        from chorus.core.subjects import SUBMIT

        nc = await nats.connect(target)

        async def call(body: bytes, timeout: float) -> Any:
            msg = await nc.request(SUBMIT, body, timeout=timeout)
            if msg.headers and ERROR_CODE_HEADER in msg.headers:
                raise RuntimeError(f"{SUBMIT}: {msg.headers}")
            return msg

        return nc, call


def nats_submit_path(mesh: Mesh, workload: Workload, name: str) -> NatsSubmitPath:
    """The task API on the bus in front of the same mesh: router -> ... -> router."""
    bodies = [m.SerializeToString() for m in _submits(workload)]
    return NatsSubmitPath(name, mesh.nats_url, _no_stub, bodies, _mesh_services(mesh))


def _no_stub(channel: Any) -> Callable[..., Awaitable[Any]]:
    raise AssertionError("a NATS path calls no gRPC stub")


@contextlib.contextmanager
def running_mesh(
    workload: Workload, *, full: bool, keep_tasks: bool, cohosted: bool = False
) -> Iterator[Mesh]:
    """The whole mesh, or with `full` off only nats-server and the one member that the
    service path measures, so that idle services do not share its cores. `cohosted`: the
    members and a fuser in one `chorus serve group` process instead of one each."""
    env = {"CHORUS_FUSER_KEEP_TASKS": "1" if keep_tasks else "0"}
    members = list(workload.members)
    groups = {COHOSTED_GROUP: members} if cohosted else None
    with tempfile.TemporaryDirectory(prefix="chorus-bench-") as tmp:
        mesh = Mesh(workload.repository, Path(tmp), models=members, extra_env=env, groups=groups)
        try:
            if full:
                mesh.start()
            else:
                assert mesh.nats is not None
                mesh.nats.start()
                member = workload.members[-1]
                mesh.spawn(member, mesh.model_command(member))
            yield mesh
        finally:
            mesh.stop()


COHOSTED_GROUP = "bench"
