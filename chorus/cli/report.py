"""`chorus fusion report`: how each fusion strategy and conflict policy does on held-out digits.

The same fusion code the fuser runs, fed by in-process ONNX Runtime sessions instead of NATS
(the one seam the fusion code has for I/O), so the table is cheap to produce and exactly
what the service would decide.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.demo.build import ARBITER, GATE, STACKER, build_demo
from chorus.demo.datasets import LABELS, digits_split
from chorus.demo.members import CAPABILITY, MEMBERS
from chorus.fuser.fusion import Tools, fuse
from chorus.fuser.strategies import CLASSIFICATION, Stacker
from chorus.pb import task_pb2, wire_pb2
from chorus.services import repository
from chorus.services.augment import infer_augmented
from chorus.services.runtime import OnnxModel

POLICY_RUNS = [
    ("none", task_pb2.ConflictPolicy(name="none")),
    ("quorum 2 of 3", task_pb2.ConflictPolicy(name="quorum", quorum=2)),
    ("quorum 3 of 3", task_pb2.ConflictPolicy(name="quorum", quorum=3)),
    ("negotiate", task_pb2.ConflictPolicy(name="negotiate", max_rounds=2)),
    ("arbiter", task_pb2.ConflictPolicy(name="arbiter")),
    ("escalate", task_pb2.ConflictPolicy(name="escalate")),
]


class LocalMembers:
    """MemberClient over in-process sessions, for offline evaluation."""

    def __init__(self, models: dict[str, OnnxModel]) -> None:
        self.models = models

    async def scores(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        scores_output: str,
        augment: bool,
        ctx: CallContext,
    ) -> np.ndarray:
        m = self.models[model]
        prediction = await (infer_augmented(m, inputs) if augment else m.infer(inputs))
        return prediction.outputs[scores_output]


@dataclass
class Row:
    name: str
    accuracy: float
    answered: float
    conflicted: float
    note: str = ""


async def evaluate(root: Path) -> tuple[list[Row], list[Row], list[Row]]:
    build_demo(root)
    split = digits_split()
    x, y = split.x_test, split.y_test
    names = [*MEMBERS, ARBITER, STACKER, GATE]
    models = {n: OnnxModel(repository.load(root, n)) for n in names}
    try:
        probs = {n: models[n].run({"input": x}).outputs["probabilities"] for n in MEMBERS}
        members = [
            Row(n, float(np.mean(p.argmax(1) == y)), 1.0, 0.0, "member") for n, p in probs.items()
        ]
        arbiter_p = models[ARBITER].run({"input": x}).outputs["probabilities"]
        members.append(Row(ARBITER, float(np.mean(arbiter_p.argmax(1) == y)), 1, 0, "arbiter"))
        reviews: list[wire_pb2.ReviewCase] = []

        async def review(case: wire_pb2.ReviewCase) -> None:
            reviews.append(case)

        tools = Tools(
            client=LocalMembers(models),
            served=lambda role, c: Stacker({"stack": STACKER, "gate": GATE}[role], tuple(MEMBERS)),
            arbiter=lambda c: ARBITER,
            review=review,
        )
        ctx = CallContext.start("report", Priority.BATCH, 600.0)

        def call(policy: str, conflict: task_pb2.ConflictPolicy) -> wire_pb2.FuseCall:
            c = wire_pb2.FuseCall(
                policy=policy, labels=LABELS, capability=CAPABILITY, conflict=conflict,
                inputs=[to_tensor("input", x)],
            )  # fmt: skip
            for n, p in probs.items():
                c.members.add(model=n, probabilities=to_tensor("p", p), weight=1.0)
            return c

        strategies = []
        for name in [*sorted(s.name for s in CLASSIFICATION), "stacking", "gated"]:
            _, out = await fuse(call(name, POLICY_RUNS[0][1]), ctx, tools)
            labels = out.fused.labels
            strategies.append(
                Row(name, float(np.mean(labels == y)), 1.0, float(np.mean(out.report.conflicted)))
            )
        policies = []
        for title, conflict in POLICY_RUNS:
            _, out = await fuse(call("soft_vote", conflict), ctx, tools)
            status = np.array(out.status)
            decided = ~np.isin(status, ["unresolved", "needs_review"])
            acc = float(np.mean(out.fused.labels[decided] == y[decided])) if decided.any() else 0.0
            counts = {s: int(np.sum(status == s)) for s in np.unique(status)}
            note = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            policies.append(Row(title, acc, float(np.mean(decided)), float(np.mean(
                out.report.conflicted)), note))  # fmt: skip
        return members, strategies, policies
    finally:
        for m in models.values():
            m.close()


def render(members: list[Row], strategies: list[Row], policies: list[Row]) -> str:
    lines = ["| member | held-out accuracy |", "|---|---|"]
    lines += [f"| {r.name} ({r.note}) | {r.accuracy:.4f} |" for r in members]
    lines += ["", "| fusion strategy | accuracy |", "|---|---|"]
    lines += [f"| {r.name} | {r.accuracy:.4f} |" for r in strategies]
    lines += [
        "",
        f"Rows flagged conflicted (members split, or their consensus unsure): "
        f"{policies[0].conflicted:.1%}.",
    ]
    lines += [
        "",
        "| conflict policy (soft vote) | accuracy on answered rows | answered | row outcomes |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.name} | {r.accuracy:.4f} | {r.answered:.1%} | {r.note} |" for r in policies]
    return "\n".join(lines)


def main(root: Path, *, as_json: bool = False, progress: Callable[[str], None] = print) -> int:
    from chorus.cli import trust_report

    progress("the strategies and conflict policies on the held-out digits")
    members, strategies, policies = asyncio.run(evaluate(root))
    progress("calibration, conformal sets and reliability (a second dataset too)")
    trust = asyncio.run(trust_report.evaluate(root))
    if as_json:
        print(json.dumps({
            "members": [asdict(r) for r in members],
            "strategies": [asdict(r) for r in strategies],
            "policies": [asdict(r) for r in policies],
            "trust_markdown": trust,
        }, indent=2))  # fmt: skip
        return 0
    print(render(members, strategies, policies))
    print()
    print(trust)
    return 0
