"""`chorus plan` as a user runs it: the overlay it writes builds with kubectl, and by default
it builds on the manifests shipped inside the package, wherever it runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chorus import planner as al
from tests.support import REPO

K8S = REPO / "chorus" / "deploy" / "k8s"
EXAMPLE = K8S / "plan-example.yaml"


def test_write_overlay_builds_with_planned_bounds(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the overlay is built with `kubectl kustomize`")
    plan = al.solve(al.load_inputs(EXAMPLE))
    out = tmp_path / "deep" / "plan"
    overlay = al.write_overlay(plan, out, base=K8S / "overlays/cpu", device="cpu", headroom=2.0)
    assert overlay.unmanaged == ("knn",)
    assert set(overlay.patched) == {"logreg", "forest", "mlp"}
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert (out / kustomization["resources"][0]).resolve() == (K8S / "overlays/cpu").resolve()

    run = subprocess.run(
        [kubectl, "kustomize", str(out)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stderr
    built = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all(run.stdout)
        if d and d["kind"] == "ScaledObject"
    }
    for model in overlay.patched:
        n = plan.row(model, "cpu").replicas
        spec = built[f"chorus-model-{model}"]["spec"]
        assert spec["minReplicaCount"] == n
        assert spec["maxReplicaCount"] == max(1, 2 * n)
        assert built[f"chorus-model-{model}"]["metadata"]["namespace"] == "chorus"
        assert spec["triggers"], "the patch must merge into the ScaledObject, not replace it"
    assert built["chorus-model-logreg"]["spec"]["minReplicaCount"] > 0


def test_the_k8s_base_defaults_to_the_packaged_overlay(tmp_path: Path) -> None:
    """Run where there is no checkout: the written overlay builds on the package's own
    overlays/cpu; a --k8s-base without a kustomization is refused naming the flag."""
    assert al.scaled_object_models(al.k8s.DEFAULT_BASE) == {"logreg", "forest", "mlp"}
    cmd = [sys.executable, "-m", "chorus.cli", "plan", "--inputs", str(EXAMPLE),
           "--k8s-out", "plan-out", "--k8s-device", "cpu"]  # fmt: skip
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    written = yaml.safe_load((tmp_path / "plan-out" / "kustomization.yaml").read_text())
    assert (tmp_path / "plan-out" / written["resources"][0]).resolve() == (
        K8S / "overlays/cpu"
    ).resolve()
    assert sorted((tmp_path / "plan-out").glob("scaledobject-*.yaml"))
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run([*cmd, "--k8s-base", str(empty)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1
    (line,) = [ln for ln in run.stderr.splitlines() if ln.startswith("chorus plan")]
    assert "NOT_FOUND" in line and "--k8s-base" in line
