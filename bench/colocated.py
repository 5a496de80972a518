"""The same ensemble served from one process: what the mesh's separate processes cost.

Ray Serve's single deployment and a Triton ensemble hold every member in one process; the mesh
runs each member in its own and fuses in another. This bench measures the first layout with
the same tools as the others: a grpc.aio server (uvloop) holding the three demo members'
ONNX Runtime sessions (one thread each), each request's digit (raw FP32 bytes) run through all
three in one hop to a one-thread executor, soft-voted with numpy, the mean probabilities sent
back as raw bytes. The caller is `topology_floor.drive`; the server's CPU per task from psutil.
It is not a Chorus path: it is the bound of a co-located one, with none of the mesh's routing,
retries, conflict handling or per-member scaling.

Beside it, in turns, `chorus bench --paths bare mesh` of the same models in the same sitting:

    python bench/colocated.py [--calls 4000] [--concurrency 1 16] [--rounds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from topology_floor import drive, serve_unary  # noqa: E402

from chorus.bench.paths import load_workload  # noqa: E402
from chorus.bench.stats import latency_stats, machine  # noqa: E402
from chorus.bench.usage import cpu_seconds  # noqa: E402
from chorus.launch.natsserver import free_port  # noqa: E402

METHOD = "/colocated.Ensemble/Infer"


async def _serve(repository: Path, port: int) -> None:
    import onnxruntime as ort

    workload, _ = load_workload(repository)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = [
        ort.InferenceSession(str(workload.onnx_path(m)), opts, providers=["CPUExecutionProvider"])
        for m in workload.members
    ]
    pool = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()

    def vote(body: bytes) -> bytes:
        row = np.frombuffer(body, dtype=np.float32).reshape(1, -1)
        probs = [s.run(["probabilities"], {"input": row})[0] for s in sessions]
        return np.mean(probs, axis=0).astype(np.float32).tobytes()

    async def infer(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await loop.run_in_executor(pool, vote, body)

    server = await serve_unary(METHOD, infer, port)
    print("ready", flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)
    await server.stop(None)


def measure(repository: Path, bodies: list[bytes], calls: int, concurrency: int) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--repository", str(repository)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the ensemble server did not start")
        server = psutil.Process(proc.pid)
        uvloop.run(drive(port, 500, concurrency, METHOD, bodies))  # warm-up, unmeasured
        before = cpu_seconds(server)
        latencies, elapsed = uvloop.run(drive(port, calls, concurrency, METHOD, bodies))
        used = cpu_seconds(server) - before
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(10)
    return {
        "concurrency": concurrency,
        **latency_stats(latencies, elapsed),
        "server_cpu_ms_per_task": round(1000 * used / calls, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repository", type=Path, default=Path(".chorus/demo-models"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "colocated")
    args = parser.parse_args()
    if args.serve:
        uvloop.run(_serve(args.repository, args.serve))
        return
    workload, _ = load_workload(args.repository)
    bodies = [row.astype(np.float32).tobytes() for row in workload.rows]
    rounds = []
    for r in range(args.rounds):
        got = [measure(args.repository, bodies, args.calls, c) for c in args.concurrency]
        for row in got:
            print(
                f"round {r + 1} colocated@{row['concurrency']:<3} {row['throughput_rps']:8.1f}/s "
                f"p50 {row['p50_ms']:.3f} p99 {row['p99_ms']:.3f} ms "
                f"server cpu {row['server_cpu_ms_per_task']:.3f} ms/task",
                flush=True,
            )
        rounds.append(got)
    summary = {
        f"colocated@{conc}": {
            key: statistics.median(
                x[key] for got in rounds for x in got if x["concurrency"] == conc
            )
            for key in ("throughput_rps", "p50_ms", "p99_ms", "server_cpu_ms_per_task")
        }
        for conc in args.concurrency
    }
    for key, row in summary.items():
        print(f"median {key} {row}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"colocated-{machine()['host']}-{dt.date.today()}.json"
    record = {
        "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    path.write_text(json.dumps(record | {"summary": summary, "rounds": rounds}, indent=1))
    print(f"results  {path}")


if __name__ == "__main__":
    main()
