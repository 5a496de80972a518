"""A plan as Kubernetes sees it: KEDA ScaledObject bounds, written as a kustomize overlay on
a base named by the caller."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chorus.core.errors import InvalidArgument, NotFound
from chorus.planner.inputs import finite
from chorus.planner.model import Allocation

PACKAGED_K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
"""The kustomize tree shipped inside the package (base, components, the demo's overlays)."""
DEFAULT_BASE = PACKAGED_K8S / "overlays" / "cpu"
"""The overlay a written plan overlay builds on (it must include the KEDA component): the
packaged demo overlay, so an installed package needs no checkout; `--k8s-base` names another,
e.g. a folder `chorus k8s render` wrote."""
SCALED_OBJECT_PREFIX = "chorus-model-"

# --- Kubernetes ------------------------------------------------------------------------------


def _model_replicas(plan: Allocation, device: str | None) -> dict[str, int]:
    per_model: dict[str, dict[str, int]] = defaultdict(dict)
    for r in plan.rows:
        if device is None or r.device == device:
            per_model[r.model][r.device] = r.replicas
    out = {}
    for model, by_device in sorted(per_model.items()):
        used = sorted(d for d, n in by_device.items() if n > 0)
        if len(used) > 1:
            raise InvalidArgument(
                f"allocation: {model} is planned on {' and '.join(used)}, but one Deployment "
                "(one ScaledObject) runs each model; pick the overlay's device"
            )
        out[model] = sum(by_device.values())
    return out


def keda_patches(
    plan: Allocation, headroom: float = 2.0, *, device: str | None = None
) -> list[dict[str, Any]]:
    """Strategic-merge patches for the KEDA ScaledObjects ``chorus-model-<model>``.

    ``minReplicaCount`` is the planned replica count and ``maxReplicaCount`` is
    ``ceil(planned * headroom)``, at least 1 (the HPA KEDA creates rejects a maximum of 0; a
    model planned at 0 may then scale to zero and be woken by its activation threshold).
    ScaledObjects are per model while plans are per (model, device): with ``device`` only that
    device's rows count; without it a model planned with replicas on two devices is an
    InvalidArgument.
    """
    h = finite(headroom, "headroom", positive=True)
    if h < 1:
        raise InvalidArgument(f"allocation: headroom must be >= 1, got {headroom!r}")
    patches = []
    for model, n in _model_replicas(plan, device).items():
        patches.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": f"{SCALED_OBJECT_PREFIX}{model}"},
                "spec": {
                    "minReplicaCount": n,
                    "maxReplicaCount": max(1, math.ceil(n * h - 1e-9)),
                },
            }
        )
    return patches


def scaled_object_models(base: Path) -> set[str]:
    """Models with a KEDA ScaledObject in what the kustomization at `base` builds: its
    resources and components, followed as kustomize follows them (local paths only)."""
    import yaml

    if not (Path(base) / "kustomization.yaml").is_file():
        raise NotFound(
            f"k8s base: no kustomization.yaml in {base}; pass --k8s-base with the overlay to "
            "patch (a folder `chorus k8s render` wrote, or chorus/deploy/k8s/overlays/cpu)"
        )
    docs: list[dict[str, Any]] = []
    seen: set[Path] = set()

    def follow(path: Path) -> None:
        path = path.resolve()
        if path in seen or not path.exists():
            return
        seen.add(path)
        if path.is_dir():
            k = yaml.safe_load((path / "kustomization.yaml").read_text()) or {}
            for entry in [*k.get("resources", []), *k.get("components", [])]:
                follow(path / entry)
        elif path.suffix in (".yaml", ".yml"):
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))

    follow(Path(base))
    return {
        d["metadata"]["name"].removeprefix(SCALED_OBJECT_PREFIX)
        for d in docs
        if d.get("kind") == "ScaledObject"
        and d["metadata"]["name"].startswith(SCALED_OBJECT_PREFIX)
    }


@dataclass(frozen=True)
class Overlay:
    directory: Path
    patched: tuple[str, ...]
    """Models whose ScaledObject the overlay patches."""
    unmanaged: tuple[str, ...]
    """Planned models without a ScaledObject in the base (e.g. the knn arbiter): not patched."""


def write_overlay(
    plan: Allocation,
    directory: Path | str,
    *,
    base: Path | str = DEFAULT_BASE,
    headroom: float = 2.0,
    device: str | None = None,
    scaled_objects: Collection[str] | None = None,
) -> Overlay:
    """Write a kustomize overlay that applies the plan's bounds on top of ``base``.

    ``kubectl kustomize <directory>`` (or ``kubectl apply -k``) builds ``base`` (by a relative
    path, as kustomize requires) with one strategic-merge patch file per ScaledObject, aimed
    by kind and name: the base sets the namespace last (from its chorus-settings), so a
    patch's own id, which has none, would match nothing. Only ScaledObjects found in the
    base are patched. Models
    without a ScaledObject (``scaled_objects``; default: those in the KEDA component) are not
    patched and are listed in the kustomization's header and in ``Overlay.unmanaged``.
    """
    import yaml

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    managed = (
        set(scaled_objects) if scaled_objects is not None else scaled_object_models(Path(base))
    )
    rel = Path(os.path.relpath(Path(base).resolve(), out.resolve())).as_posix()
    patched, unmanaged, files = [], [], []
    for patch in keda_patches(plan, headroom, device=device):
        model = patch["metadata"]["name"].removeprefix(SCALED_OBJECT_PREFIX)
        if model not in managed:
            unmanaged.append(model)
            continue
        name = f"scaledobject-{model}.yaml"
        (out / name).write_text(yaml.safe_dump(patch, sort_keys=False))
        patched.append(model)
        files.append(name)
    header = [
        "# Generated by `chorus plan` (chorus.planner): autoscaler bounds from the plan.",
        f"# Total cost {plan.total_cost:.6g}, status {plan.status}, headroom {headroom:.6g}.",
    ]
    if unmanaged:
        header.append(f"# Planned but without a ScaledObject here: {', '.join(unmanaged)}.")
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel],
        "patches": [
            {"path": f, "target": {"kind": "ScaledObject", "name": f"^{SCALED_OBJECT_PREFIX}{m}$"}}
            for f, m in zip(files, patched, strict=True)
        ],
    }
    text = "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)
    (out / "kustomization.yaml").write_text(text)
    return Overlay(out, tuple(patched), tuple(unmanaged))
