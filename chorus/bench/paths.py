"""The serving paths under test, each driven by the same closed-loop clients.

Every path offers the same three steps to the runner: `warm` (unmeasured calls, so a phase
never pays for connection set-up or first-run allocation), `drive` (CONCURRENCY callers, each
sending its next request as soon as the last one answers, until N are done) and the processes
to charge CPU time to. The runner samples CPU and GPU use around `drive` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import subprocess
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
from chorus.launch.natsserver import free_port

if TYPE_CHECKING:
    from chorus.bench.triton import Batching, TritonEnv, TritonServer

CAPABILITY = "classify/digits"
WORKLOAD = "one digit (1x64 FP32) per request; 3 members (logreg, forest, mlp); soft vote"
WARM_UP = 50
TIMEOUT_S = 10.0
RAY_SCRIPT = Path(__file__).with_name("ray_serve.py")


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
        import grpc

        self.name = name
        self.messages = messages
        self._services = services
        self._runner = _event_loop_runner()

        async def connect() -> tuple[Any, Callable[..., Awaitable[Any]]]:
            channel = grpc.aio.insecure_channel(target)
            return channel, method(channel)

        self._channel, self._call = self._runner.run(connect())

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


def _process(pid: int, name: str) -> list[tuple[str, psutil.Process]]:
    try:
        return [(name, psutil.Process(pid))]
    except psutil.NoSuchProcess:
        return []


def service_path(mesh: Mesh, workload: Workload) -> GrpcPath:
    """One member alone over KServe v2 ModelInfer: what a single service costs, no NATS."""
    from chorus.pb import kserve_v2_pb2 as kpb
    from chorus.pb import kserve_v2_pb2_grpc as kpb_grpc

    member = mesh.child(workload.members[-1])
    messages = []
    for row in workload.rows:
        req = kpb.ModelInferRequest(model_name=member.name, raw_input_contents=[row.tobytes()])
        req.inputs.add(name="input", datatype="FP32", shape=row.shape)
        messages.append(req)
    return GrpcPath(
        "service",
        str(member.ready["grpc"]),
        lambda ch: kpb_grpc.GRPCInferenceServiceStub(ch).ModelInfer,
        messages,
        lambda: _process(member.proc.pid, member.name),
    )


def mesh_path(mesh: Mesh, workload: Workload, name: str = "mesh") -> GrpcPath:
    """The router's Submit: router -> members over NATS -> fuser over NATS -> router; or,
    with the members co-hosted (`name` "cohosted"), router -> the group's process -> router."""
    from chorus.core.codec import to_tensor
    from chorus.pb import task_pb2, task_pb2_grpc

    messages = [
        task_pb2.SubmitRequest(capability=CAPABILITY, inputs=[to_tensor("input", row)])
        for row in workload.rows
    ]

    def services() -> list[tuple[str, psutil.Process]]:
        # Everything this process started is the mesh, nats-server included.
        named = {c.proc.pid: c.name for c in mesh.children}
        return [(named.get(p.pid, p.name()), p) for p in psutil.Process().children(True)]

    return GrpcPath(
        name,
        mesh.router_target,
        lambda ch: task_pb2_grpc.TaskServiceStub(ch).Submit,
        messages,
        services,
    )


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


RAY_LAYOUTS = {"ray": "graph", "ray-single": "single"}
"""Bench path -> ray_serve.py layout: Ray's composition graph, and its one-deployment best case."""


class RayPath:
    """Ray Serve in its own interpreter (see ray_serve.py), steered over its stdin."""

    def __init__(
        self, python: Path, workload: Workload, scratch: Path, name: str, max_ongoing: int
    ) -> None:
        """`max_ongoing` is every deployment's max_ongoing_requests: set it above the
        callers' concurrency."""
        self.name = name
        self.max_ongoing = max_ongoing
        inputs = scratch / "rows.npy"
        np.save(inputs, np.concatenate(workload.rows))
        self.log = scratch / f"{name}.log"
        models = [str(workload.onnx_path(m)) for m in workload.members]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [str(python), str(RAY_SCRIPT), "--models", *models,
                 "--inputs", str(inputs), "--port", str(free_port()),
                 "--layout", RAY_LAYOUTS[name], "--max-ongoing", str(max_ongoing)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.info = json.loads(self._expect("READY", 300.0) or "{}")
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _expect(self, word: str, timeout_s: float, phase: Phase | None = None) -> str:
        """The rest of the next line that starts with `word`; other lines are Ray's chatter."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"Ray Serve did not answer {word} in {timeout_s}s") from None
            if line is None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Ray Serve exited ({self.log}):\n{tail}")
            head, _, rest = line.partition(" ")
            if head == word:
                return rest
            if head == "TICK" and phase is not None:
                phase.reported = int(rest)

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def warm(self, n: int) -> None:
        self._send(f"WARM {n}")
        self._expect("OK", 120.0)

    def drive(self, concurrency: int, requests: int, phase: Phase) -> None:
        self._send(f"DRIVE {concurrency} {requests}")
        done = json.loads(self._expect("DONE", 60.0 + requests * TIMEOUT_S, phase))
        phase.latencies_s, phase.elapsed_s = done["latencies_s"], done["elapsed_s"]

    def clients(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid)]

    def services(self) -> list[tuple[str, psutil.Process]] | None:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [(_ray_name(p), p) for p in children]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self._send("STOP")
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _ray_name(proc: psutil.Process) -> str:
    """Ray retitles its workers `ray::Deployment...`; the title is the useful name."""
    try:
        title = " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "ray"
    if title.startswith("ray::"):
        return title.split()[0].split(".")[0].split(":")[-1] or "ray"
    return proc.name()


TRITON_LAYOUTS = {"triton-ensemble": "ensemble", "triton-single": "single"}
"""Bench path -> layout: Triton's ensemble of a model per member and a vote model, and one
model holding the three sessions and the vote."""
TRITON_MODEL = "digits"
"""The model the callers ask for, in both layouts."""


@contextlib.contextmanager
def running_triton(
    env: TritonEnv, workload: Workload, layout: str, batching: Batching | None = None
) -> Iterator[TritonServer]:
    """tritonserver serving the workload's members in `layout` as model TRITON_MODEL, every
    model batched as `batching` says (default: as Triton's docs advise first)."""
    from chorus.bench.triton import Batching, Tensor, TritonServer, ensemble_models, whole_model

    batching = batching or Batching()

    x = Tensor("input", "TYPE_FP32", (workload.rows[0].shape[1],))
    probs = Tensor("probabilities", "TYPE_FP32", (_classes(workload),))
    with tempfile.TemporaryDirectory(prefix="chorus-triton-") as tmp:
        root = Path(tmp) / "models"
        if layout == "ensemble":
            members = {m: workload.onnx_path(m) for m in workload.members}
            ensemble_models(root, TRITON_MODEL, members, x, probs, batching)
        elif layout == "single":
            whole_model(root, TRITON_MODEL, [workload.onnx_path(m) for m in workload.members],
                        x, probs, batching)  # fmt: skip
        else:
            raise ValueError(f"Triton layout {layout!r}: expected one of ensemble, single")
        with TritonServer(env, root, Path(tmp)) as server:
            yield server


def _classes(workload: Workload) -> int:
    import onnxruntime as ort

    session = ort.InferenceSession(
        str(workload.onnx_path(workload.members[0])), providers=["CPUExecutionProvider"]
    )
    (probs,) = (o for o in session.get_outputs() if o.name == "probabilities")
    return int(probs.shape[1])


def triton_infer_requests(workload: Workload) -> list[Any]:
    """One KServe v2 ModelInferRequest per row for TRITON_MODEL: what a Chorus model service
    is sent too, from the same stubs."""
    from chorus.pb import kserve_v2_pb2 as kpb

    messages = []
    for row in workload.rows:
        req = kpb.ModelInferRequest(model_name=TRITON_MODEL, raw_input_contents=[row.tobytes()])
        req.inputs.add(name="input", datatype="FP32", shape=row.shape)
        messages.append(req)
    return messages


def triton_path(server: TritonServer, workload: Workload, name: str) -> GrpcPath:
    """Triton's ModelInfer, driven like the mesh's Submit: the same callers on one channel."""
    from chorus.pb import kserve_v2_pb2_grpc as kpb_grpc

    def services() -> list[tuple[str, psutil.Process]]:
        if server.proc is None:
            return []
        try:
            root = psutil.Process(server.proc.pid)
            return [("tritonserver", root)] + [
                (_triton_name(p), p) for p in root.children(recursive=True)
            ]
        except psutil.NoSuchProcess:
            return []

    return GrpcPath(
        name,
        server.target,
        lambda ch: kpb_grpc.GRPCInferenceServiceStub(ch).ModelInfer,
        triton_infer_requests(workload),
        services,
    )


def _triton_name(proc: psutil.Process) -> str:
    """A Python backend stub is named by its model: its first argument is
    `<repository>/<model>/<version>/model.py`."""
    try:
        args = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "triton"
    if len(args) > 1 and args[1].endswith("model.py"):
        return Path(args[1]).parents[1].name
    return proc.name()
