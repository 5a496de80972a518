"""The import contracts in pyproject.toml ([tool.importlinter]) hold, and they are not
vacuous: a runtime package reaching into another, the core importing a service, a module no
layer names, or two sibling modules importing each other breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    if not LINT.exists():
        pytest.fail(
            f"{LINT} is missing: import-linter is a test dependency (pip install -e '.[test]')"
        )
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "chorus", root / "chorus", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)
    return root


def test_the_source_tree_keeps_its_layers() -> None:
    run = _lint(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "3 kept, 0 broken" in run.stdout


def test_the_router_reaching_into_the_fuser_breaks_them(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    with (root / "chorus/router/durable.py").open("a") as f:
        f.write("\nfrom chorus.fuser import fusion  # noqa: E402, F401\n")
    run = _lint(root)
    assert run.returncode == 1
    assert "chorus.router is not allowed to import chorus.fuser" in run.stdout
    assert "chorus.router.durable -> chorus.fuser.fusion" in run.stdout


def test_the_core_importing_a_service_breaks_them(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    with (root / "chorus/core/codec.py").open("a") as f:
        f.write("\nfrom chorus.router import task  # noqa: E402, F401\n")
    run = _lint(root)
    assert run.returncode == 1
    assert "chorus.core.codec -> chorus.router.task" in run.stdout


def test_the_wire_formats_reaching_up_into_the_member_calls_break_them(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    with (root / "chorus/core/wire.py").open("a") as f:
        f.write("\nfrom chorus.core.calls import client  # noqa: E402, F401\n")
    run = _lint(root)
    assert run.returncode == 1
    assert "chorus.core.wire -> chorus.core.calls.client" in run.stdout


def test_a_module_in_no_layer_breaks_them(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "chorus/newcomer.py").write_text('"""Not yet placed in a layer."""\n')
    run = _lint(root)
    assert run.returncode == 1
    assert "chorus.newcomer" in run.stdout


def test_two_siblings_importing_each_other_break_them(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    with (root / "chorus/demo/members.py").open("a") as f:
        f.write("\nfrom chorus.demo import build  # noqa: E402, F401\n")
    run = _lint(root)
    assert run.returncode == 1
    assert "No import circle among the siblings of any package BROKEN" in run.stdout
