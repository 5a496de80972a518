"""Side-by-side latency and throughput of one digit through three paths, in one run:

  bare      the three ONNX sessions plus a numpy soft vote, in this process (no network)
  service   one model service over KServe v2 gRPC (ModelInfer), no NATS
  mesh      router over gRPC -> 3 model services over NATS -> fuser over NATS -> router

    python bench/mesh_latency.py [--requests 2000] [--concurrency 1 16]

Writes bench/results/mesh_latency-<host>-<date>.json with the machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chorus.codec import to_tensor  # noqa: E402
from chorus.datasets import digits_split  # noqa: E402
from chorus.mesh import Mesh  # noqa: E402
from chorus.pb import kserve_v2_pb2 as kpb  # noqa: E402
from chorus.pb import kserve_v2_pb2_grpc as kpb_grpc  # noqa: E402
from chorus.pb import task_pb2, task_pb2_grpc  # noqa: E402
from services import repository  # noqa: E402
from services.build import DEMO_MODELS, build_demo  # noqa: E402

Call = Callable[[int], Awaitable[None]]


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "grpcio": grpc.__version__,
        "providers": ort.get_available_providers(),
    }


async def drive(call: Call, requests: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - t0)

    for i in range(min(50, requests)):  # warm-up
        await call(i)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    q = np.quantile(np.array(latencies) * 1000, [0.5, 0.95, 0.99])
    return {
        "requests": len(latencies),
        "throughput_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(float(q[0]), 3),
        "p95_ms": round(float(q[1]), 3),
        "p99_ms": round(float(q[2]), 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


async def run(args: argparse.Namespace) -> dict[str, object]:
    root = Path(args.repository)
    build_demo(root)
    x = digits_split().x_test
    rows = [x[i : i + 1] for i in range(len(x))]
    names = list(DEMO_MODELS)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sessions = [
        ort.InferenceSession(
            str(repository.load(root, n).onnx_path), opts, providers=["CPUExecutionProvider"]
        )
        for n in names
    ]

    async def bare(i: int) -> None:
        row = rows[i % len(rows)]
        probs = [s.run(["probabilities"], {"input": row})[0] for s in sessions]
        np.argmax(np.mean(probs, axis=0), axis=1)

    results: dict[str, object] = {}
    env = {"CHORUS_FUSER_KEEP_TASKS": "1" if args.keep_tasks else "0"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        Mesh(root, Path(tmp), models=names, extra_env=env) as mesh,
    ):
        router = grpc.aio.insecure_channel(mesh.router_target)
        member = grpc.aio.insecure_channel(str(mesh.child(names[-1]).ready["grpc"]))
        submit = task_pb2_grpc.TaskServiceStub(router).Submit
        infer = kpb_grpc.GRPCInferenceServiceStub(member).ModelInfer
        tasks = [
            task_pb2.SubmitRequest(capability="classify/digits", inputs=[to_tensor("input", r)])
            for r in rows
        ]
        kreqs = []
        for r in rows:
            req = kpb.ModelInferRequest(model_name=names[-1], raw_input_contents=[r.tobytes()])
            req.inputs.add(name="input", datatype="FP32", shape=r.shape)
            kreqs.append(req)

        async def service(i: int) -> None:
            await infer(kreqs[i % len(kreqs)], timeout=10)

        async def full(i: int) -> None:
            await submit(tasks[i % len(tasks)], timeout=10)

        paths: dict[str, Call] = {"bare": bare, "service": service, "mesh": full}
        for c in args.concurrency:
            for name, call in paths.items():
                conc = 1 if name == "bare" else c
                key = f"{name}@{conc}"
                if key in results:
                    continue
                results[key] = await drive(call, args.requests, conc)
                print(key, results[key], flush=True)
        await router.close()
        await member.close()
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--repository", default=str(REPO / "models"))
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument(
        "--keep-tasks",
        action="store_true",
        help="let the fuser keep every task for feedback (one JetStream write per task)",
    )
    args = p.parse_args()
    try:
        import uvloop

        results = uvloop.run(run(args))
    except ImportError:
        results = asyncio.run(run(args))
    m1 = results.get("mesh@1")
    b1 = results.get("bare@1")
    summary = {}
    if isinstance(m1, dict) and isinstance(b1, dict):
        summary["mesh_added_p50_ms_at_conc_1"] = round(m1["p50_ms"] - b1["p50_ms"], 3)
    record = {
        "benchmark": "mesh_latency",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "workload": "one digit (1x64 FP32) per request; 3 members (logreg, forest, mlp); soft vote",
        "fuser_keeps_tasks": args.keep_tasks,
        "results": results,
        "summary": summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"mesh_latency-{platform.node()}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary), "->", path)


if __name__ == "__main__":
    main()
