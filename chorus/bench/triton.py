"""NVIDIA Triton as the bench's baseline: the `nvidia-pytriton` wheel's own `tritonserver`.

The wheel bundles a real `tritonserver` binary, its Python backend and a backend stub per
Python version, but no ONNX Runtime backend, so every model here is a Python-backend model
running ONNX Runtime (`triton_model.py`). The wheel pins numpy<2, so it lives in a virtualenv
of its own, built on first use under the user's cache (`default_venv`) and reused after; the
server is run from it directly (pytriton's own Python API is not used: it cannot express an
ensemble), with a model repository of `config.pbtxt` files written here.

Every model is configured as Triton's docs advise for a CPU host: dynamic batching on with
its defaults, one instance (`KIND_CPU`) per model; the bench's own gRPC callers drive it over
KServe v2 `ModelInfer`, the same protocol and stubs as a Chorus model service.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psutil

from chorus.launch.natsserver import Running, free_port

PYTRITON = "nvidia-pytriton==0.7.0"
MODEL_FILE = Path(__file__).with_name("triton_model.py")
MARKER = ".chorus-triton"
PIP_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 120.0
SERVER_READY = "/inference.GRPCInferenceService/ServerReady"
READY = b"\x08\x01"
"""ServerReadyResponse{ready: true} on the wire: field 1, varint, 1."""
MAX_BATCH = 64
"""Each model's max_batch_size: above the callers' concurrency, so one batch can take all."""


class TritonUnavailable(RuntimeError):
    """Triton cannot run here; the message says why."""


def requirements() -> tuple[str, ...]:
    """What the Triton virtualenv holds: the wheel, numpy<2 (which it pins), and the ONNX
    Runtime this process runs, so that both sides of a comparison run the same one. The
    virtualenv's marker file records them, and a change rebuilds it."""
    try:
        import onnxruntime

        ort = f"onnxruntime=={onnxruntime.__version__}"
    except ImportError:
        ort = "onnxruntime>=1.23,<2"
    return (PYTRITON, ort, "numpy<2")


def default_venv() -> Path:
    """`$XDG_CACHE_HOME/chorus/triton-venv` (`~/.cache/chorus/triton-venv` without it)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "chorus" / "triton-venv"


@dataclass(frozen=True)
class TritonEnv:
    """Where the wheel put the server, its libraries, the Python backend and its stub."""

    venv: Path
    site: Path
    """The virtualenv's site-packages."""
    python_version: str
    """`3.11`: picks the backend stub built for the virtualenv's Python."""

    @classmethod
    def at(cls, venv: Path) -> TritonEnv:
        """The Triton files in a built virtualenv, or TritonUnavailable saying what is missing."""
        found = sorted(venv.glob("lib/python3.*/site-packages/pytriton/tritonserver/bin"))
        if not found:
            raise TritonUnavailable(f"no nvidia-pytriton in {venv}")
        site = found[0].parents[2]
        env = cls(venv, site, site.parent.name.removeprefix("python"))
        for path in (env.binary, env.backend_library, env.stub):
            if not path.exists():
                raise TritonUnavailable(f"the nvidia-pytriton wheel in {venv} has no {path}")
        return env

    @property
    def server_dir(self) -> Path:
        return self.site / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def backend_library(self) -> Path:
        return self.server_dir / "backends" / "python" / "libtriton_python.so"

    @property
    def stub(self) -> Path:
        return (
            self.server_dir / "python_backend_stubs" / self.python_version
        ) / "triton_python_backend_stub"

    def version(self, dist: str = "nvidia_pytriton") -> str:
        for info in self.site.glob(f"{dist}-*.dist-info"):
            return info.name.removeprefix(f"{dist}-").removesuffix(".dist-info")
        return "?"

    def settings(self) -> dict[str, object]:
        """How Triton was set up, for the bench's record."""
        return {
            "nvidia_pytriton": self.version(),
            "onnxruntime": self.version("onnxruntime"),
            "numpy": self.version("numpy"),
            "virtualenv": str(self.venv),
            "backend": "python (the wheel has no ONNX Runtime backend), one ORT thread a session",
        }


def ensure_venv(venv: Path | None = None, *, build: bool = True) -> TritonEnv:
    """The Triton virtualenv at `venv` (default_venv() if None), built with pip from the
    package index when it is missing or was built for other requirements() and `build` is on.
    Raises TritonUnavailable when it is absent and `build` is off, or when pip fails."""
    venv = venv or default_venv()
    wanted = "\n".join(requirements()) + "\n"
    marker = venv / MARKER
    if marker.exists() and marker.read_text() == wanted:
        return TritonEnv.at(venv)
    if not build:
        if marker.exists():
            raise TritonUnavailable(
                f"the Triton virtualenv at {venv} holds {marker.read_text().split()}, "
                f"not {list(requirements())}: it is rebuilt on next use"
            )
        raise TritonUnavailable(f"no Triton virtualenv at {venv} (built on first use)")
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        lock = open(venv.parent / f"{venv.name}.lock", "w")  # noqa: SIM115
    except OSError as e:
        raise TritonUnavailable(f"cannot build a virtualenv at {venv}: {e}") from None
    with lock:
        # Two builders (a bench and a test) take turns; the second finds the first's venv.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted:
            return TritonEnv.at(venv)
        shutil.rmtree(venv, ignore_errors=True)
        python = venv / "bin" / "python"
        try:
            _run([sys.executable, "-m", "venv", str(venv)])
            _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  *requirements()])  # fmt: skip
        except TritonUnavailable:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        env = TritonEnv.at(venv)
        marker.write_text(wanted)
        return env


def _run(cmd: list[str]) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise TritonUnavailable(f"{' '.join(cmd[:4])} ...: {e}") from None
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-1500:]
        raise TritonUnavailable(f"{' '.join(cmd[:4])} ... failed:\n{tail}")


# The model repository -----------------------------------------------------------------------


@dataclass(frozen=True)
class Batching:
    """Every model's batching and instances. The defaults are what Triton's docs advise first:
    `dynamic_batching { }` with all its defaults (no added wait), one instance (what Triton
    itself gives a Python-backend model); the batcher guide's next step is to raise the delay
    while latency allows, which `queue_delay_us` is for."""

    max_batch: int = MAX_BATCH
    queue_delay_us: int = 0
    """max_queue_delay_microseconds."""
    instances: int = 1
    """instance_group count, KIND_CPU."""

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.queue_delay_us < 0 or self.instances < 1:
            raise ValueError(
                f"Triton batching: max_batch >= 1, queue_delay_us >= 0 and instances >= 1 "
                f"expected, got {self}"
            )

    def pbtxt(self) -> str:
        delay = (
            f" max_queue_delay_microseconds: {self.queue_delay_us}" if self.queue_delay_us else ""
        )
        return (
            f"dynamic_batching {{{delay} }}\n"
            f"instance_group [ {{ count: {self.instances} kind: KIND_CPU }} ]\n"
        )

    def describe(self) -> str:
        return f"max_batch_size {self.max_batch}, " + " ".join(self.pbtxt().split())


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str
    """Triton's: TYPE_FP32, TYPE_INT64."""
    dims: tuple[int, ...]
    """Without the batch dimension."""

    def pbtxt(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f'{{ name: "{self.name}" data_type: {self.dtype} dims: [ {dims} ] }}'


def _config(
    name: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    body: str,
    max_batch: int,
) -> str:
    return (
        f'name: "{name}"\n'
        f"max_batch_size: {max_batch}\n"
        f"input [ {', '.join(t.pbtxt() for t in inputs)} ]\n"
        f"output [ {', '.join(t.pbtxt() for t in outputs)} ]\n"
        f"{body}"
    )


def _python_model(
    root: Path,
    name: str,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    params: dict[str, str],
    batching: Batching,
) -> None:
    """A Python-backend model, batched and instanced as `batching` says."""
    body = 'backend: "python"\n' + batching.pbtxt()
    for key, value in params.items():
        value_pb = f"{{ string_value: {json.dumps(value)} }}"
        body += f"parameters {{ key: {json.dumps(key)} value: {value_pb} }}\n"
    (root / name / "1").mkdir(parents=True)
    shutil.copyfile(MODEL_FILE, root / name / "1" / "model.py")
    (root / name / "config.pbtxt").write_text(
        _config(name, inputs, outputs, body, batching.max_batch)
    )


def member_model(
    root: Path, name: str, onnx: Path, x: Tensor, probs: Tensor, batching: Batching = Batching()
) -> None:
    """One ONNX file as one model: `x` in, its `probs` out."""
    params = {"role": "member", "models": json.dumps([str(onnx)]), "onnx_output": probs.name}
    _python_model(root, name, [x], [probs], params, batching)


def _label(probs: Tensor) -> Tensor:
    return Tensor("label", "TYPE_INT64", (1,))


def whole_model(
    root: Path,
    name: str,
    onnx: Sequence[Path],
    x: Tensor,
    probs: Tensor,
    batching: Batching = Batching(),
) -> None:
    """Every session in one model and the soft vote after them: one call a request."""
    params = {"role": "whole", "models": json.dumps([str(p) for p in onnx]),
              "onnx_output": probs.name}  # fmt: skip
    _python_model(root, name, [x], [probs, _label(probs)], params, batching)


def ensemble_models(
    root: Path,
    name: str,
    members: dict[str, Path],
    x: Tensor,
    probs: Tensor,
    batching: Batching = Batching(),
    vote: str = "soft_vote",
) -> None:
    """A model per member, a `vote` model averaging their probabilities, and an ensemble
    `name` wiring them: Triton's own way to compose models, scheduled inside the server."""
    for member, onnx in members.items():
        member_model(root, member, onnx, x, probs, batching)
    votes = [Tensor(f"p_{m}", probs.dtype, probs.dims) for m in members]
    _python_model(root, vote, votes, [probs, _label(probs)], {"role": "vote"}, batching)
    steps = [
        f'{{ model_name: "{m}" model_version: -1 input_map {{ key: "{x.name}" value: "{x.name}" }}'
        f' output_map {{ key: "{probs.name}" value: "p_{m}" }} }}'
        for m in members
    ]
    wiring = " ".join(f'input_map {{ key: "p_{m}" value: "p_{m}" }}' for m in members)
    steps.append(
        f'{{ model_name: "{vote}" model_version: -1 {wiring}'
        f' output_map {{ key: "{probs.name}" value: "{probs.name}" }}'
        ' output_map { key: "label" value: "label" } }'
    )
    body = (
        'platform: "ensemble"\nensemble_scheduling { step [\n  ' + ",\n  ".join(steps) + "\n] }\n"
    )
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(
        _config(name, [x], [probs, _label(probs)], body, batching.max_batch)
    )


# The server ---------------------------------------------------------------------------------


class TritonServer(Running):
    """`tritonserver` on a loopback gRPC port serving `repository`; HTTP and metrics off."""

    def __init__(self, env: TritonEnv, repository: Path, scratch: Path) -> None:
        self.env = env
        self.repository = repository
        self.scratch = scratch
        self.log = scratch / "tritonserver.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Self:
        if self.proc is not None:
            return self
        backends = self.scratch / "backends"
        python = backends / "python"
        python.mkdir(parents=True, exist_ok=True)
        for source in (
            self.env.backend_library,
            self.env.stub,
            self.env.backend_library.with_name("triton_python_backend_utils.py"),
        ):
            with contextlib.suppress(FileExistsError):
                (python / source.name).symlink_to(source)
        self.port = free_port()
        env = {
            **os.environ,
            "LD_LIBRARY_PATH": str(self.env.site / "nvidia_pytriton.libs"),
            # The stub takes its modules from PYTHONPATH and finds Python on PATH.
            "PYTHONPATH": str(self.env.site),
            "PATH": f"{self.env.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        cmd = [
            str(self.env.binary),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--grpc-port={self.port}",
            "--allow-http=false",
            "--allow-metrics=false",
            "--allow-gpu-metrics=false",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
            # Its own shared-memory names, so servers side by side (a test, a bench) never meet.
            f"--backend-config=python,shm-region-prefix-name=chorus{os.getpid()}_{self.port}_",
        ]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        """Until KServe v2 ServerReady says so (with --strict-readiness: every model loaded).

        Asked as raw bytes, not through the KServe stubs: a process that already holds
        tritonclient's copy of that proto (the test suite) cannot load Chorus's."""
        import grpc

        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with grpc.insecure_channel(self.target) as channel:
            server_ready = channel.unary_unary(SERVER_READY)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"tritonserver exited ({self.log}):\n{self.log_tail()}")
                with contextlib.suppress(grpc.RpcError):
                    if server_ready(b"", timeout=1.0) == READY:
                        return
                time.sleep(0.2)
        raise RuntimeError(f"tritonserver not ready in {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        stubs = _children(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stub in stubs:
            with contextlib.suppress(psutil.NoSuchProcess):
                stub.kill()


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
