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
from dataclasses import dataclass
from pathlib import Path

from chorus.core.errors import NotFound
from chorus.core.model_store import version_key
from chorus.services import graph
from chorus.services.manifest import (
    HEAD_KINDS,
    MANIFEST,
    Head,
    HeadKind,
    Manifest,
    ManifestError,
    RuntimeOptions,
    parse,
)


@dataclass(frozen=True)
class ModelVersion:
    manifest: Manifest
    path: Path

    @property
    def onnx_path(self) -> Path:
        return self.path / self.manifest.file


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
    return read_version(model_dir / names[-1])


def read_version(path: Path) -> ModelVersion:
    """One version folder's manifest, checked and completed from its ONNX graph;
    ManifestError naming the file and the key when it cannot be served."""
    source = path / MANIFEST
    try:
        raw = json.loads(source.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON ({exc})") from None
    onnx_file = path / str(raw.get("file", "model.onnx") if isinstance(raw, dict) else "")
    if not onnx_file.is_file():
        raise ManifestError(f"{source}: file: {onnx_file.name!r} is not in {path}")
    try:
        specs = graph.read(onnx_file)
    except graph.GraphError as exc:
        raise ManifestError(f"{source}: file: {exc}") from None
    return ModelVersion(parse(raw, source=source, folder=path, graph_specs=specs), path)


def check(root: Path) -> list[ModelVersion]:
    """Every model's highest version in `root`, each checked, and checked together: the
    members of one capability must mean the same by their scores (one output_kind)."""
    found = [load(root, name) for name in list_models(root)]
    kinds: dict[str, tuple[str, ModelVersion]] = {}
    for mv in found:
        m = mv.manifest
        for cap in m.capabilities:
            kind = "regression" if m.regression else "classification"
            seen = kinds.setdefault(cap, (kind, mv))
            if seen[0] != kind:
                other = seen[1]
                raise ManifestError(
                    f"{mv.path / MANIFEST}: output_kind: {m.output_kind!r} makes {m.name!r} a "
                    f"{kind} model, but {other.manifest.name!r} ({other.path / MANIFEST}) "
                    f"answers {cap!r} as {seen[0]}; one capability takes one kind"
                )
    return found


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


__all__ = [
    "HEAD_KINDS",
    "MANIFEST",
    "Head",
    "HeadKind",
    "Manifest",
    "ManifestError",
    "ModelVersion",
    "RuntimeOptions",
    "check",
    "list_models",
    "load",
    "read_version",
    "version_key",
    "versions",
    "write",
]
