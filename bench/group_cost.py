"""What a co-hosted group costs per task, with no router in front of it.

The demo's three digit members and a fuser in one `GroupService`, answering one-row soft-vote
tasks (held-out digits, cycled) two ways:

  in-process  `GroupService.answer` called in a loop in this process: the group's own work
              (members' schedulers and batchers, ONNX Runtime, the fuse), process CPU per task
  nats        a `chorus serve group` process asked on chorus.infer.group:bench by callers in
              this process over one NATS connection: the group plus one NATS round trip, the
              floor under any front door that sends the group its tasks

at concurrency 1 and 16. Needs the demo models (`chorus models build`) and nats-server.
`--inline-below-ms` sets the members' bound for running ONNX Runtime on the event loop
(the group's default otherwise).

    python bench/group_cost.py [--repository .chorus/demo-models] [--tasks 3000] [--out DIR]
                               [--inline-below-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chorus.core.codec import to_tensor
from chorus.core.config import FuserConfig, GroupConfig, ModelServiceConfig
from chorus.core.context import CallContext, Priority
from chorus.demo.datasets import digits_split
from chorus.demo.members import MEMBERS
from chorus.group.service import GroupService
from chorus.launch.natsserver import NatsServer
from chorus.pb import wire_pb2

GROUP = "bench"


def _calls() -> list[bytes]:
    x = digits_split().x_test
    bodies = []
    for i in range(len(x)):
        call = wire_pb2.FuseCall(
            policy="soft_vote",
            capability="classify/digits",
            task_id=f"t{i}",
            inputs=[to_tensor("input", x[i : i + 1])],
        )
        call.conflict.name = "none"
        for m in MEMBERS:
            call.expected.add(model=m, scores_output="probabilities", output_kind="probabilities")
        bodies.append(call.SerializeToString())
    return bodies


async def _drive(
    ask: Callable[[bytes], Awaitable[object]], bodies: list[bytes], tasks: int, conc: int
) -> dict[str, float]:
    latencies: list[float] = []
    it = iter(range(tasks))

    async def caller() -> None:
        for i in it:
            start = time.perf_counter()
            await ask(bodies[i % len(bodies)])
            latencies.append(time.perf_counter() - start)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(conc)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "tasks_per_s": round(tasks / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "this_process_cpu_us_per_task": round(cpu / tasks * 1e6, 1),
    }


async def measure(
    repository: Path, tasks: int, work: Path, inline_below_ms: float
) -> dict[str, Any]:
    bodies = _calls()
    headers = CallContext.start("bench", Priority.NORMAL, 3600).to_headers()
    out: dict[str, Any] = {}
    with NatsServer(work / "jetstream") as nats:
        env = {
            **os.environ,
            "CHORUS_FUSER_KEEP_TASKS": "0",
            "CHORUS_GROUP_INLINE_BELOW_MS": str(inline_below_ms),
        }
        group = GroupService(
            GroupConfig(
                name=GROUP,
                models=",".join(MEMBERS),
                nats_url=nats.url,
                inline_below_ms=inline_below_ms,
            ),
            ModelServiceConfig(repository=repository, nats_url=nats.url),
            FuserConfig(nats_url=nats.url, keep_tasks=False),
        )
        await group.start()
        try:
            for conc in (1, 16):
                await _drive(lambda b: group.answer(b, headers), bodies, 300, conc)
                out[f"in-process@{conc}"] = await _drive(
                    lambda b: group.answer(b, headers), bodies, tasks, conc
                )
        finally:
            await group.stop()
        proc = subprocess.Popen(
            [sys.executable, "-m", "chorus.cli", "serve", "group", "--name", GROUP,
             "--models", ",".join(MEMBERS), "--repository", str(repository),
             "--nats-url", nats.url],
            stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            proc.stdout.readline()
            import nats as nats_py

            nc = await nats_py.connect(nats.url)
            subject = f"chorus.infer.group:{GROUP}"

            async def ask(body: bytes) -> object:
                return await nc.request(subject, body, timeout=10, headers=headers)

            for conc in (1, 16):
                await _drive(ask, bodies, 300, conc)
                out[f"nats@{conc}"] = await _drive(ask, bodies, tasks, conc)
            await nc.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repository", type=Path, default=Path(".chorus/demo-models"))
    p.add_argument("--tasks", type=int, default=3000)
    p.add_argument("--out", type=Path, default=Path("bench/results/group-cost"))
    p.add_argument("--inline-below-ms", type=float, default=GroupConfig.inline_below_ms)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(
        measure(args.repository.resolve(), args.tasks, args.out / "work", args.inline_below_ms)
    )
    record = {
        "date": dt.date.today().isoformat(),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": sys.version},
        "settings": {
            "tasks": args.tasks,
            "members": list(MEMBERS),
            "policy": "soft_vote",
            "inline_below_ms": args.inline_below_ms,
        },
        "results": results,
    }
    day = dt.date.today().isoformat()
    path = args.out / f"group_cost-{day}-inline-{args.inline_below_ms:g}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    for key, r in results.items():
        print(f"{key:<16} {r['tasks_per_s']:>8.0f} tasks/s  p50 {r['p50_ms']:.3f} ms  "
              f"this process {r['this_process_cpu_us_per_task']:.0f} us/task")  # fmt: skip
    print(f"written {path}")


if __name__ == "__main__":
    main()
