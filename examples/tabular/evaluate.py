"""Held-out accuracy (classification) and RMSE (regression) of every member and of several
fusion strategies, through a running mesh that serves the exported repository.

Usage: python examples/tabular/evaluate.py OUT_DIR [--router HOST:PORT]
(OUT_DIR is export.py's; the table is markdown, for the example's README.)
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from chorus.client import TaskClient

POLICIES = {
    "classify/cancer": ["soft_vote", "majority_vote", "borda", "max_confidence"],
    "regress/diabetes": ["weighted_mean", "median"],
}
INPUTS = {
    "classify/cancer": {"x": "cancer_test_x.npy", "flags": "cancer_test_flags.npy"},
    "regress/diabetes": {"x": "diabetes_test_x.npy"},
}
TRUTH = {"classify/cancer": "cancer_test_y.npy", "regress/diabetes": "diabetes_test_y.npy"}


def metric(capability: str, predicted: np.ndarray, truth: np.ndarray) -> float:
    if capability.startswith("regress/"):
        return float(np.sqrt(np.mean((predicted.reshape(-1) - truth) ** 2)))
    return float(np.mean(predicted == truth))


def member_prediction(entry: dict[str, Any], outputs: dict[str, np.ndarray]) -> np.ndarray:
    scores = outputs[entry["scores_output"]]
    return scores.reshape(-1) if entry["output_kind"] == "regression" else scores.argmax(axis=1)


def evaluate(out: Path, router: str) -> list[str]:
    models = json.loads((out / "models.json").read_text())
    lines = [
        f"Measured {platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; held-out rows of export.py's split (seed 0).",
        "",
    ]
    with TaskClient(router) as client:
        for capability, policies in POLICIES.items():
            feeds = {k: np.load(out / f) for k, f in INPUTS[capability].items()}
            truth = np.load(out / TRUTH[capability])
            name = "RMSE (lower is better)" if capability.startswith("regress/") else "accuracy"
            lines += [f"`{capability}`, {len(truth)} rows", "", f"| model or policy | {name} |"]
            lines.append("|---|---|")
            results = {p: client.submit(capability, feeds, policy=p) for p in policies}
            first = results[policies[0]]
            for entry in models:
                if entry["capability"] == capability:
                    got = member_prediction(entry, first.members[entry["name"]])
                    lines.append(f"| {entry['name']} | {metric(capability, got, truth):.4f} |")
            for policy, result in results.items():
                fused = result.value if "value" in result.outputs else result.labels
                flagged = sum(r.status == "conflicted" for r in result.response.explanation.rows)
                lines.append(
                    f"| **fused: {policy}** ({flagged} rows flagged) "
                    f"| **{metric(capability, fused, truth):.4f}** |"
                )
            lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--router", default="127.0.0.1:50051")
    args = parser.parse_args()
    print("\n".join(evaluate(args.out_dir, args.router)))


if __name__ == "__main__":
    main()
