"""`chorus submit`: the held-out digits through the router, with per-member and fused accuracy."""

from __future__ import annotations

import json
import sys
import time

import grpc
import numpy as np

from chorus.client import TaskClient
from chorus.demo.datasets import digits_split

CAPABILITY = "classify/digits"


def run_submit(
    router: str, limit: int, batch: int, policy: str, show: int, *, as_json: bool = False
) -> int:
    split = digits_split()
    x, y = split.x_test, split.y_test
    if limit:
        x, y = x[:limit], y[:limit]
    fused: list[np.ndarray] = []
    members: dict[str, list[np.ndarray]] = {}
    agreed: list[str] = []
    disputed: list[str] = []
    start = time.perf_counter()
    with TaskClient(router) as client:
        for i in range(0, len(x), max(1, batch)):
            try:
                result = client.submit(CAPABILITY, {"input": x[i : i + batch]}, policy=policy)
            except grpc.RpcError as err:
                print(f"chorus submit: task {i}: {err.code().name}: {err.details()}",
                      file=sys.stderr)  # fmt: skip
                return 1
            fused.append(result.labels)
            for name, outs in result.members.items():
                members.setdefault(name, []).append(outs["label"])
            for r, row in enumerate(result.response.explanation.rows):
                votes = " ".join(f"{m}={v}" for m, v in sorted(row.votes.items()))
                line = (
                    f"digit {y[i + r]}: fused {row.label} ({row.rule}; "
                    f"agreement {row.agreement:.2f}; votes {votes})"
                )
                (agreed if row.agreement == 1.0 else disputed).append(line)
    elapsed = time.perf_counter() - start
    member_acc = {n: float(np.mean(np.concatenate(v) == y)) for n, v in sorted(members.items())}
    fused_acc = float(np.mean(np.concatenate(fused) == y))
    if as_json:
        accuracy = {"members": member_acc, "fused": fused_acc}
        print(json.dumps({"rows": len(y), "seconds": elapsed, "batch": batch,
                          "policy": policy or None, "disagreed": len(disputed),
                          "accuracy": accuracy}, indent=2))  # fmt: skip
        return 0
    # Disagreements are what fusion is for, so they are shown first.
    for line in (disputed + agreed)[:show]:
        print(line)
    print(f"members disagreed on {len(disputed)} of {len(y)} digits")
    print(f"\n{len(y)} digits in {elapsed:.2f}s ({len(y) / elapsed:.0f}/s), batch {batch}")
    print(f"{'model':<12} accuracy")
    for name, acc in member_acc.items():
        print(f"{name:<12} {acc:.4f}")
    print(f"{'fused':<12} {fused_acc:.4f}  ({policy or 'default policy'})")
    return 0
