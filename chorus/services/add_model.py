"""`chorus models add`: a user's ONNX file into the repository, with a manifest it need not write.

The graph says the tensors; the user says only what the graph cannot: the model's name, what
it answers (capability), its class names and what its scores are. One dummy inference checks
that the file runs and that its scores look like the kind claimed (probabilities that do not
sum to 1 are usually logits), before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from chorus.core.codec import numpy_dtype
from chorus.core.spec import TensorSpec
from chorus.services import graph, repository
from chorus.services.manifest import ManifestError, parse
from chorus.services.manifest_keys import OUTPUT_KINDS

SUM_TOLERANCE = 1e-3


class AddError(ValueError):
    """Why the model was not added, and what to pass instead."""


@dataclass(frozen=True)
class AddRequest:
    onnx_file: Path
    repository: Path
    name: str
    capabilities: tuple[str, ...]
    labels: tuple[str, ...] = ()
    output_kind: str = "probabilities"
    version: str = ""
    scores_output: str = ""
    temperature: float | None = None
    replicas: int = 1
    description: str = ""
    force: bool = False


def add(req: AddRequest) -> repository.ModelVersion:
    if req.output_kind not in OUTPUT_KINDS:
        raise AddError(f"--kind: expected one of {OUTPUT_KINDS}, got {req.output_kind!r}")
    if not req.onnx_file.is_file():
        raise AddError(f"{req.onnx_file}: no such file")
    try:
        specs = graph.read(req.onnx_file)
    except graph.GraphError as exc:
        raise AddError(str(exc)) from None
    scores = req.scores_output or _pick_scores(specs, req.output_kind)
    outputs = _dummy_run(req.onnx_file, specs.inputs)
    if scores not in outputs:
        raise AddError(f"--scores-output: {scores!r} is not an output of {req.onnx_file.name} "
                       f"(outputs: {sorted(outputs)})")  # fmt: skip
    labels = req.labels or _default_labels(outputs[scores], req.output_kind)
    _check_kind(outputs[scores], scores, req.output_kind, labels)
    version = req.version or _next_version(req.repository, req.name)
    folder = req.repository / req.name / version
    if (folder / repository.MANIFEST).exists() and not req.force:
        raise AddError(f"--version: {req.name} v{version} is already in {req.repository} "
                       "(pass --force to replace it, or another --version)")  # fmt: skip
    raw: dict[str, Any] = {
        "name": req.name,
        "version": version,
        "capabilities": list(req.capabilities),
        "output_kind": req.output_kind,
        "labels": list(labels),
        "scores_output": scores,
        "inputs": [_json_spec(s) for s in specs.inputs],
        "outputs": [_json_spec(s) for s in specs.outputs],
        "replicas": req.replicas,
        "description": req.description or f"added from {req.onnx_file.name}",
    }
    if req.temperature is not None:
        raw["temperature"] = req.temperature
    try:
        manifest = parse(raw, source=folder / repository.MANIFEST, folder=folder,
                         graph_specs=specs)  # fmt: skip
    except ManifestError as exc:
        raise AddError(str(exc)) from None
    return repository.write(req.repository, manifest, req.onnx_file.read_bytes())


def _json_spec(s: TensorSpec) -> dict[str, Any]:
    return {"name": s.name, "datatype": s.datatype, "shape": list(s.shape)}


def _pick_scores(specs: graph.GraphSpecs, kind: str) -> str:
    candidates = graph.score_candidates(specs.outputs, kind)
    if len(candidates) == 1:
        return candidates[0]
    shown = [(s.name, s.datatype, list(s.shape)) for s in specs.outputs]
    if not candidates:
        raise AddError(f"no output can hold {kind} scores (outputs: {shown}); "
                       "check --kind")  # fmt: skip
    raise AddError(f"{candidates} could each be the scores; pass --scores-output NAME")


def _dummy_run(path: Path, inputs: tuple[TensorSpec, ...]) -> dict[str, np.ndarray]:
    """The model's outputs on two rows of zeros (empty strings for text)."""
    feed: dict[str, np.ndarray] = {}
    for s in inputs:
        shape = [2 if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(s.shape)]
        if s.datatype == "BYTES":
            feed[s.name] = np.full(shape, "", dtype=object)
        else:
            feed[s.name] = np.zeros(shape, dtype=numpy_dtype(s.datatype))
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))
    except Exception as exc:
        raise AddError(f"{path}: a dummy inference failed, so it would not serve: {exc}") from None


def _default_labels(scores: np.ndarray, kind: str) -> tuple[str, ...]:
    """Column numbers as names, when the user gave none (regression needs none)."""
    if kind == "regression":
        return ()
    if kind == "binary":
        return ("0", "1")
    return tuple(str(i) for i in range(scores.shape[1])) if scores.ndim == 2 else ()


def _check_kind(scores: np.ndarray, name: str, kind: str, labels: tuple[str, ...]) -> None:
    if kind in ("probabilities", "logits"):
        if scores.ndim != 2:
            raise AddError(f"{name!r} is {list(scores.shape)} on a dummy input; {kind} are "
                           "[rows, classes]")  # fmt: skip
        if scores.shape[1] != len(labels):
            raise AddError(f"--labels: {len(labels)} given for the {scores.shape[1]} columns "
                           f"of {name!r}")  # fmt: skip
    sums = scores.sum(axis=1) if scores.ndim == 2 else None
    if kind == "probabilities" and sums is not None:
        off = np.abs(sums - 1.0).max()
        if off > SUM_TOLERANCE or scores.min() < -SUM_TOLERANCE:
            raise AddError(f"{name!r} rows sum to {sums[0]:.4g} on a dummy input, not 1: if "
                           "they are raw scores, pass --kind logits")  # fmt: skip
    if kind == "binary" and (scores.min() < 0 or scores.max() > 1):
        raise AddError(f"{name!r} holds {scores.min():.4g}..{scores.max():.4g} on a dummy "
                       "input; binary scores are in [0, 1] (or pass --kind logits)")  # fmt: skip


def _next_version(root: Path, name: str) -> str:
    numbered = [int(v) for v in repository.versions(root, name) if v.isdigit()]
    return str(max(numbered, default=0) + 1)
