"""Model repository on disk: <root>/<model>/<version>/{model.onnx, manifest.json}.

The manifest is the contract a model offers the mesh: what it can do (capabilities), what it
takes and returns, which output carries the class scores the fuser merges, how to augment its
input when it is asked again (`augment`), and for a stacking meta-model, the members whose
scores it takes, in order. A multi-task model also names its `heads`: for each capability,
which columns of its scores output answer it and how they become that capability's
probabilities (see services/heads.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from chorus.errors import NotFound
from chorus.spec import TensorSpec

MANIFEST = "manifest.json"
HeadKind = Literal["softmax", "binary"]
HEAD_KINDS: tuple[HeadKind, ...] = ("softmax", "binary")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")


@dataclass(frozen=True)
class RuntimeOptions:
    """How this model wants to be run, shipped with it because the best settings are the
    model's (a CNN wants batches, a tree ensemble does not). A zero means "the service's
    setting decides"; a service setting given explicitly wins over the manifest.
    """

    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    instances: int = 0
    """ONNX Runtime sessions serving this model at once, each on its own thread."""
    max_batch: int = 0
    max_batch_delay_ms: float = 0.0
    warmup: bool = True
    """Run every instance once at load (first-run costs and CUDA kernels before traffic)."""
    tensorrt: bool = False
    """Prefer TensorrtExecutionProvider where it really loads (engine builds take minutes)."""
    io_binding: bool = True
    """On CUDA, bind inputs and outputs so ONNX Runtime copies each once."""

    def __post_init__(self) -> None:
        if self.graph_optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(
                f"runtime.graph_optimization: expected one of {OPTIMIZATION_LEVELS}, "
                f"got {self.graph_optimization!r}"
            )
        if self.execution_mode not in EXECUTION_MODES:
            raise ValueError(
                f"runtime.execution_mode: expected one of {EXECUTION_MODES}, "
                f"got {self.execution_mode!r}"
            )
        for name in ("intra_op_threads", "inter_op_threads", "instances", "max_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"runtime.{name}: expected >= 0, got {getattr(self, name)}")
        if self.max_batch_delay_ms < 0:
            raise ValueError(
                f"runtime.max_batch_delay_ms: expected >= 0, got {self.max_batch_delay_ms}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeOptions:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"runtime: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


@dataclass(frozen=True)
class Head:
    """One capability's share of a multi-task model's scores output.

    "softmax": the selected columns, renormalised to sum to 1, one label per column.
    "binary": one column holding p, expanded to [1 - p, p] over two labels.
    """

    columns: tuple[int, ...]
    labels: tuple[str, ...]
    kind: HeadKind = "softmax"

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind: expected one of {HEAD_KINDS}, got {self.kind!r}")
        if not self.columns or any(c < 0 for c in self.columns):
            raise ValueError(f"head columns: expected column indices >= 0, got {self.columns}")
        if self.kind == "binary" and (len(self.columns) != 1 or len(self.labels) != 2):
            raise ValueError(
                f"binary head: expected 1 column and 2 labels, got {len(self.columns)} "
                f"column(s) and {len(self.labels)} label(s)"
            )
        if self.kind == "softmax" and len(self.columns) != len(self.labels):
            raise ValueError(
                f"softmax head: expected one label per column, got {len(self.columns)} "
                f"column(s) and {len(self.labels)} label(s)"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Head:
        return cls(
            columns=tuple(int(c) for c in d["columns"]),
            labels=tuple(str(label) for label in d["labels"]),
            kind=d.get("kind", "softmax"),
        )


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    capabilities: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]
    scores_output: str
    file: str = "model.onnx"
    platform: str = "onnxruntime_onnx"
    description: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    augment: str = ""
    members: tuple[str, ...] = ()
    heads: dict[str, Head] = field(default_factory=dict)
    """Capability -> its head, for a multi-task model; empty for a single-task one."""
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def to_json(self) -> str:
        d = asdict(self)
        if not self.heads:
            del d["heads"]  # single-task manifests stay as they were
        if self.runtime == RuntimeOptions():
            del d["runtime"]
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        return cls(
            name=d["name"],
            version=str(d["version"]),
            capabilities=tuple(d["capabilities"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            labels=tuple(d["labels"]),
            scores_output=d["scores_output"],
            file=d.get("file", "model.onnx"),
            platform=d.get("platform", "onnxruntime_onnx"),
            description=d.get("description", ""),
            metrics={k: float(v) for k, v in d.get("metrics", {}).items()},
            augment=d.get("augment", ""),
            members=tuple(d.get("members", ())),
            heads={str(k): Head.from_dict(v) for k, v in d.get("heads", {}).items()},
            runtime=RuntimeOptions.from_dict(d.get("runtime", {})),
        )


@dataclass(frozen=True)
class ModelVersion:
    manifest: Manifest
    path: Path

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.file


def version_key(version: str) -> tuple[int, str]:
    """Numbered versions in numeric order, above any named ones."""
    return (int(version), "") if version.isdigit() else (-1, version)


def versions(root: Path, model: str) -> list[str]:
    """The versions of `model` on disk with a manifest, lowest first (numbers numerically)."""
    model_dir = root / model
    if not model_dir.is_dir():
        return []
    found = [p.name for p in model_dir.iterdir() if (p / MANIFEST).is_file()]
    return sorted(found, key=version_key)


def load(root: Path, model: str, version: str | None = None) -> ModelVersion:
    """The requested version of `model`, or its highest numbered one."""
    model_dir = root / model
    if not model_dir.is_dir():
        known = ", ".join(list_models(root)) or "none"
        raise NotFound(f"model {model!r} is not in repository {root} (it has: {known})")
    names = versions(root, model)
    if version is not None:
        names = [v for v in names if v == version]
    if not names:
        raise NotFound(f"model {model!r} has no version {version or '(any)'} in {model_dir}")
    path = model_dir / names[-1]
    manifest = Manifest.from_dict(json.loads((path / MANIFEST).read_text()))
    return ModelVersion(manifest, path)


def list_models(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(f"*/{MANIFEST}")))


def write(root: Path, manifest: Manifest, onnx_bytes: bytes) -> ModelVersion:
    path = root / manifest.name / manifest.version
    path.mkdir(parents=True, exist_ok=True)
    (path / manifest.file).write_bytes(onnx_bytes)
    # The manifest lands last and whole: a watching service sees a version only when complete.
    staged = path / f".{MANIFEST}.tmp"
    staged.write_text(manifest.to_json())
    staged.replace(path / MANIFEST)
    return ModelVersion(manifest, path)
