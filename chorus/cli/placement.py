"""`chorus up --cohost CAPABILITY` and `--plan INPUTS`: which members `chorus up` starts in a
co-hosted group process instead of one process each (chorus.planner.placement decides)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chorus.planner.placement import Placement


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cohost", metavar="CAPABILITY", action="append", default=[],
                   help="run this capability's members and a fuser in one group process "
                        "(repeatable); the operator's choice wins over --plan's")  # fmt: skip
    p.add_argument("--plan", type=Path, metavar="INPUTS",
                   help="plan inputs (YAML, as `chorus plan --inputs`): co-host where the "
                        "plan's placement says so")  # fmt: skip


def capabilities(repository: Path, models: list[str]) -> dict[str, list[str]]:
    """Each capability's members among `models`, from their newest manifests in a folder; a
    multi-task model is left out (the router asks it through the two-hop path, which cuts its
    reply down to one head, so a group holding it would never take a task whole)."""
    out: dict[str, list[str]] = {}
    for model in models:
        versions = [v for v in (repository / model).iterdir() if v.name.isdigit()]
        if not versions:
            continue
        newest = max(versions, key=lambda v: int(v.name))
        manifest = json.loads((newest / "manifest.json").read_text())
        if manifest.get("heads"):
            continue
        for capability in manifest.get("capabilities", []):
            out.setdefault(capability, []).append(model)
    return out


def groups_for(
    args: argparse.Namespace, repository: Path, models: list[str]
) -> dict[str, list[str]]:
    """The groups `chorus up` starts: forced by --cohost, else as --plan places them."""
    from chorus.planner.placement import MemberCost, groups, place, placements

    shapes: list[Placement] = []
    forced = list(getattr(args, "cohost", []) or [])
    if forced:
        offered = capabilities(repository, models)
        for capability in forced:
            members = [MemberCost(m, 0.0) for m in offered.get(capability, [])]
            shapes.append(place(capability, members, forced="cohost"))
    plan = getattr(args, "plan", None)
    if plan is not None:
        from chorus.planner.inputs import load_inputs

        shapes += [p for p in placements(load_inputs(plan)) if p.capability not in forced]
    found = groups(shapes)
    return {g: [m for m in members if m in models] for g, members in found.items()}
