"""`chorus plan`: solve the inputs file, print the plan, optionally write the overlay."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from chorus.core.errors import ChorusError
from chorus.planner.inputs import load_inputs
from chorus.planner.k8s import DEFAULT_BASE, write_overlay
from chorus.planner.model import Allocation
from chorus.planner.placement import Placement, placements
from chorus.planner.solve import solve

# --- presentation ----------------------------------------------------------------------------


def render(plan: Allocation) -> str:
    """The plan as markdown: replicas per (model, device), then the traffic split per demand."""
    lines = [
        "| model | device | replicas | serves (rps) | expected utilisation | cost |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in plan.rows:
        lines.append(
            f"| {r.model} | {r.device} | {r.replicas} | {r.served_rps:.1f} "
            f"| {r.expected_utilisation:.0%} | {r.cost:.2f} |"
        )
    lines += [
        "",
        f"Total cost {plan.total_cost:.2f}; mean latency {plan.mean_latency_ms:.2f} ms; "
        f"target utilisation {plan.target_utilisation:.0%}; {plan.status}.",
        "",
        "| capability | priority | rps | split |",
        "|---|---|---:|---|",
    ]
    for s in plan.splits:
        split = ", ".join(f"{x.model}@{x.device} {x.share:.0%} ({x.rps:.1f} rps)" for x in s.shares)
        lines.append(f"| {s.capability} | {s.priority.label} | {s.rps:g} | {split or '-'} |")
    return "\n".join(lines) + "\n"


def render_placements(shapes: Sequence[Placement]) -> str:
    """Each capability's shape (co-hosted or apart) and why, from the plan's measurements."""
    lines = ["| capability | placement | co-hosted | apart | why |", "|---|---|---|---|---|"]
    for p in shapes:
        group = f"group {p.group}: " if p.cohosted else ""
        lines.append(
            f"| {p.capability} | {p.shape} | {group}{', '.join(p.cohosted) or '-'} "
            f"| {', '.join(p.apart) or '-'} | {p.why} |"
        )
    return "\n".join(lines) + "\n"


def placement_dict(p: Placement) -> dict[str, object]:
    return {
        "capability": p.capability,
        "shape": p.shape,
        "group": p.group if p.cohosted else None,
        "cohosted": list(p.cohosted),
        "apart": list(p.apart),
        "why": p.why,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `chorus plan`."""
    parser.add_argument("--inputs", type=Path, required=True, help="plan inputs (YAML)")
    parser.add_argument(
        "--k8s-out", type=Path, help="write a kustomize overlay with the plan's autoscaler bounds"
    )
    parser.add_argument("--k8s-base", type=Path, default=DEFAULT_BASE, help="overlay to patch")
    parser.add_argument(
        "--k8s-device", help="device of the overlay's Deployments (rows of other devices ignored)"
    )
    parser.add_argument(
        "--headroom", type=float, default=2.0, help="maxReplicaCount = ceil(planned * headroom)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    """`chorus plan`: solve, print the plan, optionally write the overlay. 0 ok, 1 error."""
    try:
        inputs = load_inputs(args.inputs)
        plan = solve(inputs)
        shapes = placements(inputs)
        if args.json:
            record = {**plan.to_dict(), "placement": [placement_dict(p) for p in shapes]}
            print(json.dumps(record, indent=2))
        else:
            print(render(plan), end="")
            print("\n" + render_placements(shapes), end="")
        if args.k8s_out is not None:
            overlay = write_overlay(
                plan,
                args.k8s_out,
                base=args.k8s_base,
                headroom=args.headroom,
                device=args.k8s_device,
            )
            print(f"\nwrote {overlay.directory}/kustomization.yaml", file=sys.stderr)
            if overlay.unmanaged:
                print(f"no ScaledObject for: {', '.join(overlay.unmanaged)}", file=sys.stderr)
    except ChorusError as e:
        print(f"chorus plan: {e.code_name}: {e.message}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus plan", description=solve.__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
