"""The same ensemble as the mesh, on Ray Serve: three member deployments (the same ONNX files,
one ONNX Runtime thread each) composed by an ingress deployment that averages their
probabilities, behind Ray Serve's HTTP proxy. Runs in its own virtualenv with `ray[serve]`
(kept out of the project's dependencies); `bench/vs_ray_serve.py` drives it.

    RAYPY -m bench... or: python bench/ray_serve_ensemble.py --repository models --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repository", required=True)
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--port", type=int, default=8765)
    args = p.parse_args()

    import aiohttp
    import onnxruntime as ort
    import ray
    from ray import serve
    from starlette.requests import Request

    # Two cores for four deployments, a proxy and a controller: fractional CPUs, or nothing
    # gets scheduled.
    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Member:
        def __init__(self, path: str) -> None:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = 1
            self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

        def __call__(self, x: np.ndarray) -> np.ndarray:
            return self.session.run(["probabilities"], {"input": x})[0]

    @serve.deployment(ray_actor_options={"num_cpus": 0.25})
    class Ensemble:
        def __init__(self, *members: object) -> None:
            self.members = members

        async def __call__(self, request: Request) -> dict[str, int]:
            x = np.frombuffer(await request.body(), dtype=np.float32).reshape(1, 64)
            probs = await asyncio.gather(*(m.remote(x) for m in self.members))  # type: ignore[attr-defined]
            return {"label": int(np.mean(probs, axis=0).argmax())}

    root = Path(args.repository)
    paths = [str(root / m / "1" / "model.onnx") for m in ("logreg", "forest", "mlp")]
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Ensemble.bind(*(Member.bind(p) for p in paths)), route_prefix="/")
    body = np.zeros((1, 64), np.float32).tobytes()
    url = f"http://127.0.0.1:{args.port}/"

    async def drive(concurrency: int) -> dict[str, float]:
        latencies: list[float] = []
        remaining = iter(range(args.requests))
        async with aiohttp.ClientSession() as http:
            for _ in range(20):
                async with http.post(url, data=body) as r:
                    await r.read()

            async def client() -> None:
                for _ in remaining:
                    t0 = time.perf_counter()
                    async with http.post(url, data=body) as r:
                        await r.read()
                    latencies.append(time.perf_counter() - t0)

            start = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(concurrency)))
            elapsed = time.perf_counter() - start
        return {
            "throughput_rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.median(latencies)) * 1000, 3),
        }

    results = {f"ray@{c}": asyncio.run(drive(c)) for c in args.concurrency}
    serve.shutdown()
    ray.shutdown()
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
