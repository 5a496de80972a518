"""What a bare grpc.aio unary call costs the server, and what Chorus's error interceptor adds.

An echo server (uvloop, 600-byte request and reply) in its own process, driven by
--concurrency callers on one channel from this process; the server's own CPU (user + system,
from getrusage) per call, over --calls calls after 500 unmeasured ones. Server layouts, in
turns for --rounds rounds:

- `none`: no interceptor;
- `error-status`: `chorus.core.grpcserver.ErrorStatus` as every Chorus server carries it;
- `wrap-per-call`: the same interceptor building the wrapped handler on every call, as it
  did before it kept them.

    python bench/grpc_unary.py [--calls 6000] [--concurrency 16] [--rounds 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chorus.bench.stats import machine  # noqa: E402
from chorus.core.grpcserver import ErrorStatus  # noqa: E402
from chorus.launch.natsserver import free_port  # noqa: E402

LAYOUTS = ("none", "error-status", "wrap-per-call")
METHOD = "/bench.Echo/Echo"


class _WrapPerCall(ErrorStatus):
    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        self._wrapped.clear()
        return await super().intercept_service(continuation, details)


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _serve(layout: str, port: int) -> None:
    interceptors = {"none": [], "error-status": [ErrorStatus()], "wrap-per-call": [_WrapPerCall()]}
    server = grpc.aio.server(interceptors=interceptors[layout])
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    for _ in range(2):  # a line on stdin: print the CPU used so far
        await loop.run_in_executor(None, sys.stdin.readline)
        used = resource.getrusage(resource.RUSAGE_SELF)
        print(used.ru_utime + used.ru_stime, flush=True)
    await server.stop(None)


async def _drive(port: int, calls: int, concurrency: int) -> None:
    left = calls
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        body = b"x" * 600

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call(body)

        await asyncio.gather(*(caller() for _ in range(concurrency)))


def _run(layout: str, calls: int, concurrency: int) -> dict[str, float]:
    import uvloop

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", layout, "--port", str(port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert server.stdin is not None and server.stdout is not None
    try:
        assert server.stdout.readline().strip() == "ready"
        uvloop.run(_drive(port, 500, concurrency))
        server.stdin.write("\n")
        server.stdin.flush()
        before = float(server.stdout.readline())
        start = time.perf_counter()
        uvloop.run(_drive(port, calls, concurrency))
        elapsed = time.perf_counter() - start
        server.stdin.write("\n")
        server.stdin.flush()
        after = float(server.stdout.readline())
    finally:
        server.wait(timeout=30)
    return {
        "server_cpu_ms_per_call": round((after - before) / calls * 1000, 4),
        "calls_per_s": round(calls / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "grpc-unary")
    parser.add_argument("--serve", choices=LAYOUTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvloop

        uvloop.run(_serve(args.serve, args.port))
        return
    runs: dict[str, list[dict[str, float]]] = {layout: [] for layout in LAYOUTS}
    for r in range(args.rounds):
        order = LAYOUTS if r % 2 == 0 else tuple(reversed(LAYOUTS))
        for layout in order:
            got = _run(layout, args.calls, args.concurrency)
            runs[layout].append(got)
            print(f"round {r + 1} {layout:14} {got}", flush=True)
    summary = {
        layout: {
            "median_server_cpu_ms_per_call": statistics.median(
                g["server_cpu_ms_per_call"] for g in got
            ),
            "median_calls_per_s": statistics.median(g["calls_per_s"] for g in got),
        }
        for layout, got in runs.items()
    }
    record = {
        "benchmark": "grpc_unary",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "calls": args.calls,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "body_bytes": 600,
        },
        "runs": runs,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    host = record["machine"].get("host", "host")
    path = args.out / f"grpc_unary-{host}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print("results", path)


if __name__ == "__main__":
    main()
