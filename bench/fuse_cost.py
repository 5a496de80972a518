"""What the fuser's own work costs per task, with no messages around it.

`chorus.fuser.fusion.fuse` (strategy, first conflict pass, reply) on one-row tasks of three
members and ten classes, the demo's shape, called in a loop in one process: process CPU per
task, for each classification strategy. Then the stacked path (`FuseBatcher`, `together`),
where a turn of the event loop fuses 16 tasks at once, as at concurrency 16 with joined
member calls. The same fixed set of calls (seeded) for every strategy and checkout.

With several `--repo` checkouts each measurement runs in a fresh process per checkout, in
turns (A B B A ...), so their ratio is taken side by side on the same machine:

    python bench/fuse_cost.py [--repo DIR ...] [--calls 3000] [--rounds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STRATEGIES = (
    "soft_vote",
    "majority_vote",
    "weighted_vote",
    "borda",
    "max_confidence",
    "threshold",
)
STACKED = "stacked-16"
MEMBERS, CLASSES, DISTINCT = 3, 10, 256


def _calls(strategy: str) -> list[Any]:
    import numpy as np

    from chorus.core.codec import to_tensor
    from chorus.pb import wire_pb2

    rng = np.random.default_rng(14)
    calls = []
    for i in range(DISTINCT):
        call = wire_pb2.FuseCall(task_id=f"t{i}", capability="digits", policy=strategy)
        for k in range(MEMBERS):
            logits = rng.normal(0.0, 3.0, (1, CLASSES))
            p = np.exp(logits - logits.max())
            p = (p / p.sum()).astype(np.float32)
            call.members.add(model=f"m{k}", version="1", probabilities=to_tensor("p", p))
        calls.append(call)
    return calls


async def _alone(strategy: str, n: int) -> float:
    from chorus.core.context import CallContext, Priority
    from chorus.fuser.fusion import Tools, fuse

    calls, tools = _calls(strategy), Tools()
    ctx = CallContext.start("bench", Priority.NORMAL, 60.0)
    for call in calls:  # warm-up
        await fuse(call, ctx, tools)
    start = time.process_time()
    for i in range(n):
        await fuse(calls[i % DISTINCT], ctx, tools)
    return (time.process_time() - start) / n


async def _stacked(n: int, per_turn: int = 16) -> float:
    from chorus.core.context import CallContext, Priority
    from chorus.fuser.batch import FuseBatcher
    from chorus.fuser.fusion import Tools

    calls, batcher = _calls("soft_vote"), FuseBatcher(Tools())
    ctx = CallContext.start("bench", Priority.NORMAL, 60.0)

    async def turn(first: int) -> None:
        picked = [calls[(first + j) % DISTINCT] for j in range(per_turn)]
        await asyncio.gather(*(batcher.fuse(c, ctx, together=True) for c in picked))

    await turn(0)
    turns = max(1, n // per_turn)
    start = time.process_time()
    for t in range(turns):
        await turn(t * per_turn)
    return (time.process_time() - start) / (turns * per_turn)


def _worker(what: str, n: int) -> None:
    sys.path.insert(0, str(Path.cwd()))
    import uvloop

    cost = uvloop.run(_stacked(n) if what == STACKED else _alone(what, n))
    print(json.dumps({"us_per_task": round(cost * 1e6, 2)}))


def _measure(repo: Path, what: str, n: int) -> float:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", what, "--calls", str(n)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["us_per_task"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, action="append", help="a checkout (default: this one)")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args.worker, args.calls)
        return
    sys.path.insert(0, str(REPO))
    from chorus.bench.stats import machine

    repos = [r.resolve() for r in (args.repo or [REPO])]
    names = [_describe(r) for r in repos]
    seen: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for what in (*STRATEGIES, STACKED):
        for r in range(args.rounds):
            order = list(zip(repos, names, strict=True))
            for repo, name in order if r % 2 == 0 else order[::-1]:
                us = _measure(repo, what, args.calls)
                seen[name].setdefault(what, []).append(us)
        line = "  ".join(f"{n}: {statistics.median(seen[n][what]):7.1f} us" for n in names)
        print(f"{what:15s} {line}", flush=True)
    summary = {n: {w: statistics.median(v) for w, v in seen[n].items()} for n in names}
    record = {
        "machine": machine(),
        "settings": {
            "calls": args.calls,
            "rounds": args.rounds,
            "members": MEMBERS,
            "classes": CLASSES,
            "rows": 1,
        },
        "checkouts": names,
        "us_per_task_median": summary,
        "us_per_task_rounds": seen,
    }
    if len(names) > 1:
        base = names[-1]
        record["ratio_to_last"] = {
            n: {w: round(summary[n][w] / summary[base][w], 3) for w in summary[n]}
            for n in names[:-1]
        }
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = dt.date.today().isoformat()
        path = args.out / f"fuse_cost-{record['machine']['host']}-{stamp}.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        print(f"wrote {path}")


def _describe(repo: Path) -> str:
    """The checkout's commit, marked when its tree has uncommitted changes."""
    head = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return f"{head}+changes" if dirty else head


if __name__ == "__main__":
    main()
