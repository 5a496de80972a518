"""The mesh's process topology with every process doing nothing: the floor under its latency.

`chorus bench` measures the mesh with all of Chorus's work in it. This bench keeps only the
messages: the same processes (a gRPC front door, three members, a fuser, one nats-server), the
same one-way path and the same number of NATS messages per task, each process forwarding
bytes and nothing more. What the mesh adds above this floor is Chorus's own work; a goal
below it cannot be met by trimming that work, only by a path with fewer hops.

Layouts, in turns for --rounds rounds (order reversed every other round):

- `grpc`: the caller -> the front door (pygrpc-native as the services run it, or grpc.aio
  with --grpc-engine grpcio, as sittings before 2026-12-07 s6 measured; uvloop) -> the
  caller.
- `nats`: the front door also makes one NATS request to one member and waits for its reply.
- `mesh`: the one-way path: the front door sends the fuser a request naming the task, and
  each of the three members a call (4 headers, 256-byte body, the fuser's subject as reply);
  each member answers the fuser; the fuser answers the front door's request when all three
  have; the front door answers the caller. 8 NATS messages and one gRPC call per task, as
  in the mesh.
- `mesh-executor`: as `mesh`, each member passing every call through a one-thread
  executor and back, as a model service hands ONNX Runtime its work.
- `direct` and `direct-executor`: no fuser; the front door requests the three members at
  once and answers the caller when all three have (6 NATS messages per task), as a router
  that fused in its own process would. Not Chorus's design: the floor of that one.

Every process runs uvloop and nats-py's plain subscriptions (the services use nats.micro,
which adds a little per request). Closed-loop callers on one gRPC channel in this process;
each process's CPU (user + system, from psutil) per task over the measured calls.

    python bench/topology_floor.py [--calls 4000] [--concurrency 1 16] [--rounds 3] [--out DIR]
        [--grpc-engine native|grpcio]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import nats
import psutil
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chorus.bench.stats import latency_stats, machine  # noqa: E402
from chorus.bench.usage import cpu_seconds  # noqa: E402
from chorus.core.config import GRPC_ENGINES  # noqa: E402
from chorus.launch.natsserver import NatsServer, free_port  # noqa: E402

LAYOUTS = ("grpc", "nats", "mesh", "mesh-executor", "direct", "direct-executor")
MEMBERS = ("m0", "m1", "m2")
METHOD = "/floor.Front/Submit"
GRPC_ENGINE_VAR = "FLOOR_GRPC_ENGINE"
REQUEST = b"\x01" * 256  # one row of 64 float32
ANSWER = b"\x02" * 48  # ten float32 and a little framing


async def _member(url: str, name: str, hop: bool) -> None:
    nc = await nats.connect(url)
    pool = ThreadPoolExecutor(1) if hop else None
    loop = asyncio.get_running_loop()

    async def answer(msg: Any) -> None:
        if pool is not None:
            await loop.run_in_executor(pool, len, msg.data)
        await nc.publish(msg.reply, ANSWER, headers={"member": name})

    async def on_call(msg: Any) -> None:
        if pool is None:
            await answer(msg)
        else:  # concurrently, as a model service serves its calls
            tasks.add(task := asyncio.ensure_future(answer(msg)))
            task.add_done_callback(tasks.discard)

    async def on_ask(msg: Any) -> None:
        await msg.respond(ANSWER)

    tasks: set[asyncio.Future[None]] = set()
    await nc.subscribe(f"floor.infer.{name}", queue=name, cb=on_call)
    await nc.subscribe(f"floor.ask.{name}", cb=on_ask)
    await _ready_then_wait(nc)


async def _fuser(url: str) -> None:
    nc = await nats.connect(url)
    waiting: dict[str, list[Any]] = {}  # task -> [request or None, answers]

    async def settle(task: str) -> None:
        state = waiting.get(task)
        if state is not None and state[0] is not None and state[1] == len(MEMBERS):
            del waiting[task]
            await state[0].respond(ANSWER)

    async def on_fuse(msg: Any) -> None:
        task = msg.headers["task"]
        waiting.setdefault(task, [None, 0])[0] = msg
        await settle(task)

    async def on_answer(msg: Any) -> None:
        task = msg.subject.rsplit(".", 1)[1]
        waiting.setdefault(task, [None, 0])[1] += 1
        await settle(task)

    await nc.subscribe("floor.fuse", cb=on_fuse)
    await nc.subscribe("floor.collect.*", cb=on_answer)
    await _ready_then_wait(nc)


async def _front(url: str, port: int, layout: str) -> None:
    nc = await nats.connect(url)
    count = 0

    async def submit(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal count
        if layout == "grpc":
            return request
        if layout == "nats":
            return (await nc.request("floor.ask.m0", request, timeout=5)).data
        count += 1
        task = f"t{count}"
        headers = {"task": task, "priority": "NORMAL", "deadline": "0", "sha": "0" * 64}
        if layout.startswith("direct"):
            calls = (nc.request(f"floor.infer.{n}", request, 5, headers=headers) for n in MEMBERS)
            return (await asyncio.gather(*calls))[0].data
        fused = asyncio.ensure_future(nc.request("floor.fuse", b"", timeout=5, headers=headers))
        for name in MEMBERS:
            await nc.publish(
                f"floor.infer.{name}", request, reply=f"floor.collect.{task}", headers=headers
            )
        return (await fused).data

    server = await serve_unary(METHOD, submit, port)
    await _ready_then_wait(nc)
    await server.stop(None)


async def serve_unary(method: str, handler: Any, port: int) -> grpc.aio.Server:
    """One unary method, bytes in and out, on loopback: the servers of both benches here, on
    the engine the services use (pygrpc-native) unless GRPC_ENGINE_VAR says "grpcio"."""
    import pygrpc_native.aio

    service, name = method.strip("/").split("/")
    native = os.environ.get(GRPC_ENGINE_VAR, "native") == "native"
    server = pygrpc_native.aio.server() if native else grpc.aio.server()
    server.add_registered_method_handlers(
        service, {name: grpc.unary_unary_rpc_method_handler(handler)}
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


async def _ready_then_wait(nc: Any) -> None:
    await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await nc.close()


def _spawn(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--role", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"{args[0]} did not start")
    return proc


async def drive(
    port: int,
    calls: int,
    concurrency: int,
    method: str = METHOD,
    bodies: Sequence[bytes] = (REQUEST,),
) -> tuple[list[float], float]:
    """Closed-loop callers on one channel, sending `bodies` in turn; (latencies, elapsed)."""
    left = calls
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(method)

        async def caller() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                body = bodies[left % len(bodies)]
                t0 = time.perf_counter()
                await call(body)
                latencies.append(time.perf_counter() - t0)

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return latencies, time.perf_counter() - began


def measure(nats_url: str, nats_pid: int, layout: str, calls: int, conc: int) -> dict[str, Any]:
    port = free_port()
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        if layout != "grpc":
            hop = layout.endswith("-executor")
            for name in MEMBERS if layout != "nats" else MEMBERS[:1]:
                procs[name] = _spawn("member", nats_url, name, "hop" if hop else "-")
        if layout.startswith("mesh"):
            procs["fuser"] = _spawn("fuser", nats_url)
        procs["front"] = _spawn("front", nats_url, str(port), layout)
        watched = {n: psutil.Process(p.pid) for n, p in procs.items()}
        watched["nats-server"] = psutil.Process(nats_pid)
        uvloop.run(drive(port, 500, conc))  # warm-up, unmeasured
        before = {n: cpu_seconds(p) for n, p in watched.items()}
        latencies, elapsed = uvloop.run(drive(port, calls, conc))
        used = {n: cpu_seconds(p) - before[n] for n, p in watched.items()}
    finally:
        for proc in procs.values():
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
        for proc in procs.values():
            proc.wait(10)
    ms = {n: round(1000 * s / calls, 4) for n, s in used.items()}
    return {
        "layout": layout,
        "concurrency": conc,
        **latency_stats(latencies, elapsed),
        "cpu_ms_per_task": ms,
        "cpu_ms_per_task_total": round(sum(ms.values()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grpc-engine", choices=GRPC_ENGINES, default="native",
                        help="who serves the front's gRPC port, as CHORUS_*_GRPC_ENGINE "
                        "picks for the services")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "topology-floor")
    args = parser.parse_args()
    if args.role:
        role, url, *rest = args.role
        if role == "member":
            uvloop.run(_member(url, rest[0], rest[1] == "hop"))
        elif role == "fuser":
            uvloop.run(_fuser(url))
        else:
            uvloop.run(_front(url, int(rest[0]), rest[1]))
        return

    import tempfile

    os.environ[GRPC_ENGINE_VAR] = args.grpc_engine  # the roles spawned below read it
    rounds: list[list[dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp)) as server:
        nats_pid = server.pid
        assert nats_pid is not None
        for r in range(args.rounds):
            order = args.layouts if r % 2 == 0 else args.layouts[::-1]
            got = []
            for layout in order:
                for conc in args.concurrency:
                    row = measure(server.url, nats_pid, layout, args.calls, conc)
                    got.append(row)
                    print(
                        f"round {r + 1} {layout:>13}@{conc:<3} {row['throughput_rps']:8.1f}/s "
                        f"p50 {row['p50_ms']:.3f} p99 {row['p99_ms']:.3f} ms "
                        f"cpu {row['cpu_ms_per_task_total']:.3f} ms/task",
                        flush=True,
                    )
            rounds.append(got)
    summary = {}
    for layout in args.layouts:
        for conc in args.concurrency:
            rows = [
                x
                for got in rounds
                for x in got
                if (x["layout"], x["concurrency"]) == (layout, conc)
            ]
            summary[f"{layout}@{conc}"] = {
                key: statistics.median(x[key] for x in rows)
                for key in ("throughput_rps", "p50_ms", "p99_ms", "cpu_ms_per_task_total")
            }
    for key, row in summary.items():
        print(f"median {key:>17} {row}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"topology_floor-{machine()['host']}-{dt.date.today()}.json"
    record = {"machine": machine(), "settings": vars(args) | {"out": str(args.out)}}
    path.write_text(json.dumps(record | {"summary": summary, "rounds": rounds}, indent=1))
    print(f"results  {path}")


if __name__ == "__main__":
    main()
