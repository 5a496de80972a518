"""Unary Submit against SubmitStream on the same mesh, side by side in one run, alternating
A B A B: the demo's three members and soft vote, one digit per task, closed loop with
--concurrency tasks in flight (unary: that many callers on one channel; stream: one
SubmitStream call that sends a new task whenever a result comes back).

    python bench/submit_stream.py [--seconds 8] [--concurrency 16] [--out bench/results/...]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chorus.bench.stats import machine  # noqa: E402
from chorus.demo.build import build_demo  # noqa: E402
from chorus.demo.members import MEMBERS  # noqa: E402
from chorus.launch.mesh import Mesh  # noqa: E402
from chorus.pb import task_pb2, task_pb2_grpc  # noqa: E402
from tests.support import request  # noqa: E402


async def unary(target: str, concurrency: int, seconds: float) -> float:
    done = 0
    stop = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as ch:
        stub = task_pb2_grpc.TaskServiceStub(ch)

        async def caller(w: int) -> None:
            nonlocal done
            i = w
            while time.monotonic() < stop:
                await stub.Submit(request(i), timeout=10)
                done += 1
                i += concurrency

        start = time.monotonic()
        await asyncio.gather(*(caller(w) for w in range(concurrency)))
        return done / (time.monotonic() - start)


async def stream(target: str, concurrency: int, seconds: float) -> float:
    room = asyncio.Semaphore(concurrency)
    stop = time.monotonic() + seconds

    async def tasks() -> AsyncIterator[task_pb2.SubmitRequest]:
        i = 0
        while time.monotonic() < stop:
            await room.acquire()
            yield request(i)
            i += 1

    done = 0
    async with grpc.aio.insecure_channel(target) as ch:
        stub = task_pb2_grpc.TaskServiceStub(ch)
        start = time.monotonic()
        async for result in stub.SubmitStream(tasks(), timeout=seconds + 30):
            if result.error_code:
                raise RuntimeError(f"{result.task_id}: {result.error_code} {result.error_message}")
            done += 1
            room.release()
        return done / (time.monotonic() - start)


async def run(target: str, concurrency: int, seconds: float, rounds: int) -> dict[str, list[float]]:
    await unary(target, concurrency, 2.0)  # warm both paths
    await stream(target, concurrency, 2.0)
    out: dict[str, list[float]] = {"unary": [], "stream": []}
    for _ in range(rounds):
        out["unary"].append(await unary(target, concurrency, seconds))
        out["stream"].append(await stream(target, concurrency, seconds))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        build_demo(repo, names=list(MEMBERS))
        with Mesh(repo, Path(tmp) / "mesh", models=list(MEMBERS)) as mesh:
            rates = asyncio.run(
                run(mesh.router_target, args.concurrency, args.seconds, args.rounds)
            )
    record = {
        "benchmark": "submit_stream",
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "workload": "3 digits members + soft vote, one digit per task, closed loop",
        "settings": {"concurrency": args.concurrency, "seconds": args.seconds, "order": "A B A B"},
        "results_req_per_s": {k: [round(v, 1) for v in vs] for k, vs in rates.items()},
        "ratio_stream_over_unary": round(sum(rates["stream"]) / sum(rates["unary"]), 3),
    }
    print(json.dumps(record, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
