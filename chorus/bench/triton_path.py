"""The NVIDIA Triton baselines as bench paths: the server run (chorus.bench.triton) and driven
by the mesh's own gRPC callers over KServe v2 ModelInfer."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from chorus.bench.triton import Batching, TritonEnv, TritonServer

from chorus.bench.paths import GrpcPath, Workload, kserve_path

TRITON_LAYOUTS = {
    "triton-ensemble": "ensemble",
    "triton-single": "single",
    "triton-ensemble-stream": "ensemble",
    "triton-single-stream": "single",
}
"""Bench path -> layout: Triton's ensemble of a model per member and a vote model, and one
model holding the three sessions and the vote; `-stream`: asked on one ModelStreamInfer
stream, as tritonclient's `async_stream_infer` asks."""
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


def triton_path(server: TritonServer, workload: Workload, name: str) -> GrpcPath:
    """Triton's ModelInfer, driven like the mesh's Submit: the same callers on one channel."""

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

    return kserve_path(name, server.target, TRITON_MODEL, workload, services)


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
