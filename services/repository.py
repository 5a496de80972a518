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

    def to_json(self) -> str:
        d = asdict(self)
        if not self.heads:
            del d["heads"]  # single-task manifests stay as they were
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
        )


@dataclass(frozen=True)
class ModelVersion:
    manifest: Manifest
    path: Path

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.file


def _version_key(p: Path) -> tuple[int, str]:
    return (int(p.name), "") if p.name.isdigit() else (-1, p.name)


def load(root: Path, model: str, version: str | None = None) -> ModelVersion:
    """The requested version of `model`, or its highest numbered one."""
    model_dir = root / model
    if not model_dir.is_dir():
        known = ", ".join(list_models(root)) or "none"
        raise NotFound(f"model {model!r} is not in repository {root} (it has: {known})")
    versions = sorted(
        (p for p in model_dir.iterdir() if (p / MANIFEST).is_file()), key=_version_key
    )
    if version is not None:
        versions = [p for p in versions if p.name == version]
    if not versions:
        raise NotFound(f"model {model!r} has no version {version or '(any)'} in {model_dir}")
    path = versions[-1]
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
    (path / MANIFEST).write_text(manifest.to_json())
    return ModelVersion(manifest, path)
