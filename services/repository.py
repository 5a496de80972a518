"""Model repository on disk: <root>/<model>/<version>/{model.onnx, manifest.json}.

The manifest is the contract a model offers the mesh: what it can do (capabilities), what it
takes and returns, which output carries the class scores the fuser merges, how to augment its
input when it is asked again (`augment`), and for a stacking meta-model, the members whose
scores it takes, in order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chorus.errors import NotFound
from chorus.spec import TensorSpec

MANIFEST = "manifest.json"


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

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
