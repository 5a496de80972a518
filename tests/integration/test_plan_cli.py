"""`chorus plan` as a user runs it: the overlay it writes builds with kubectl, and the k8s
base is found from where it runs (a copy of k8s/ outside the source tree), not beside the
package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chorus import planner as al
from tests.support import REPO

EXAMPLE = REPO / "k8s" / "plan-example.yaml"


def test_write_overlay_builds_with_planned_bounds(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: the overlay is built with `kubectl kustomize`")
    plan = al.solve(al.load_inputs(EXAMPLE))
    out = tmp_path / "deep" / "plan"
    overlay = al.write_overlay(
        plan, out, base=REPO / "k8s/overlays/cpu", device="cpu", headroom=2.0
    )
    assert overlay.unmanaged == ("knn",)
    assert set(overlay.patched) == {"logreg", "forest", "mlp"}
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert (out / kustomization["resources"][0]).resolve() == (REPO / "k8s/overlays/cpu").resolve()

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


def test_the_k8s_base_is_found_from_where_plan_runs_not_from_the_package(tmp_path: Path) -> None:
    """Installed, the package has no k8s/ beside it: the base is the overlay named (by
    default k8s/overlays/cpu under the working directory), followed as kustomize would."""
    assert al.scaled_object_models(REPO / "k8s/overlays/cpu") == {"logreg", "forest", "mlp"}
    copy = tmp_path / "deploy"
    shutil.copytree(REPO / "k8s", copy / "k8s")
    cmd = [sys.executable, "-m", "chorus.cli", "plan", "--inputs", str(EXAMPLE),
           "--k8s-out", "plan-out", "--k8s-device", "cpu"]  # fmt: skip
    run = subprocess.run(cmd, cwd=copy, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    written = yaml.safe_load((copy / "plan-out" / "kustomization.yaml").read_text())
    assert (copy / "plan-out" / written["resources"][0]).resolve() == (
        copy / "k8s/overlays/cpu"
    ).resolve()
    assert sorted((copy / "plan-out").glob("scaledobject-*.yaml"))
    empty = tmp_path / "empty"
    empty.mkdir()
    run = subprocess.run(cmd, cwd=empty, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    (line,) = [ln for ln in run.stderr.splitlines() if ln.startswith("chorus plan")]
    assert "NOT_FOUND" in line and "--k8s-base" in line
