"""The demo ensemble on Ray Serve, for `chorus bench --ray-python PATH`.

Run by that foreign interpreter as a plain file, so it imports nothing from Chorus: Ray stays
out of the project's dependencies, and its virtualenv needs only `ray[serve]`, `onnxruntime`,
`numpy` and `aiohttp`. Two layouts of the same ONNX files (one ONNX Runtime thread per
session) behind Ray Serve's HTTP proxy:

- `graph`: as Ray's model-composition guide builds an ensemble: one deployment per member,
  one replica each, composed through deployment handles by an ingress deployment that
  averages their probabilities.
- `single`: Ray's best case for this ensemble: one deployment holding all three sessions
  and answering from one call, one replica per core.

Every deployment's `max_ongoing_requests` is set above the callers' concurrency, as Ray's
performance guide advises (its default, 5, queues 16 callers in the proxy).

The bench drives it line by line on stdin so that it can sample CPU use around each phase
exactly as it does for its own paths:

    -> READY {"ray": VERSION}
    <- WARM N                 -> OK
    <- DRIVE CONCURRENCY N    -> TICK DONE_SO_FAR ... then DONE {"latencies_s": [...], ...}
    <- STOP (or end of input)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import numpy as np

TICK_EVERY = 25


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", required=True, help="the members' model.onnx files")
    p.add_argument("--inputs", required=True, help=".npy of FP32 rows, one request each")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--layout", choices=["graph", "single"], default="graph")
    p.add_argument("--max-ongoing", type=int, default=64, help="max_ongoing_requests")
    args = p.parse_args()

    import aiohttp
    import onnxruntime as ort
    import ray
    from ray import serve
    from starlette.requests import Request

    class Member:
        def __init__(self, path: str) -> None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def __call__(self, x: np.ndarray) -> np.ndarray:
            return self.session.run(["probabilities"], {"input": x})[0]

    class Ensemble:
        def __init__(self, *members: Any) -> None:
            self.members = members

        async def __call__(self, request: Request) -> dict[str, int]:
            x = np.frombuffer(await request.body(), dtype=np.float32).reshape(1, -1)
            probs = await asyncio.gather(*(m.remote(x) for m in self.members))
            return {"label": int(np.mean(probs, axis=0).argmax())}

    class WholeEnsemble:
        def __init__(self, *paths: str) -> None:
            self.members = [Member(path) for path in paths]

        async def __call__(self, request: Request) -> dict[str, int]:
            x = np.frombuffer(await request.body(), dtype=np.float32).reshape(1, -1)
            # Inline: each replica has its core, and a thread hop would only add to the call.
            return {"label": int(np.mean([m(x) for m in self.members], axis=0).argmax())}

    cores = os.cpu_count() or 1
    bodies = [row.tobytes() for row in np.load(args.inputs).astype(np.float32)]
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    if args.layout == "graph":
        # Fractional CPUs: on a small machine whole CPUs for four deployments, a proxy and a
        # controller leave replicas unscheduled.
        deployment = serve.deployment(
            num_replicas=1, max_ongoing_requests=args.max_ongoing,
            ray_actor_options={"num_cpus": 0.25},
        )  # fmt: skip
        members = [deployment(Member).bind(path) for path in args.models]
        app = deployment(Ensemble).bind(*members)
    else:
        app = serve.deployment(
            num_replicas=cores, max_ongoing_requests=args.max_ongoing,
            ray_actor_options={"num_cpus": 0.5},
        )(WholeEnsemble).bind(*args.models)  # fmt: skip
    serve.run(app, route_prefix="/")
    url = f"http://127.0.0.1:{args.port}/"

    async def warm(n: int) -> None:
        async with aiohttp.ClientSession() as http:
            for i in range(n):
                async with http.post(url, data=bodies[i % len(bodies)]) as r:
                    await r.read()

    async def drive(concurrency: int, n: int) -> dict[str, Any]:
        latencies: list[float] = []
        remaining = iter(range(n))
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(100, concurrency))
        ) as http:

            async def client() -> None:
                for i in remaining:
                    t0 = time.perf_counter()
                    async with http.post(url, data=bodies[i % len(bodies)]) as r:
                        await r.read()
                    latencies.append(time.perf_counter() - t0)
                    if len(latencies) % TICK_EVERY == 0:
                        print(f"TICK {len(latencies)}", flush=True)

            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
        return {"latencies_s": latencies, "elapsed_s": elapsed}

    print("READY " + json.dumps({"ray": ray.__version__}), flush=True)
    try:
        for line in sys.stdin:
            cmd, *numbers = line.split()
            if cmd == "WARM":
                asyncio.run(warm(int(numbers[0])))
                print("OK", flush=True)
            elif cmd == "DRIVE":
                done = asyncio.run(drive(int(numbers[0]), int(numbers[1])))
                print("DONE " + json.dumps(done), flush=True)
            else:
                break
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
