"""Model service throughput against bare ONNX Runtime, side by side in one run, on the bench
CNN (`chorus/demo/build_cnn.py`):

  bare     ONNX Runtime in this process, batches of --batch images, back to back
  service  the model service over KServe v2 gRPC, --concurrency clients each sending one
           image per request; dynamic batching (max_batch = --batch) rebuilds the batches.
           Load comes from Python (grpc.aio, in this process) and, where it runs, from
           Triton's perf_analyzer (C++): one image per call, one image per message on
           ModelStreamInfer streams, and 8 images per call (the batcher still runs 64)
  triton   with --triton: NVIDIA Triton (the nvidia-pytriton wheel's tritonserver, see
           chorus/bench/triton.py) serving the same ONNX file as one Python-backend model
           running ONNX Runtime, dynamic batching with Triton's defaults (max_batch_size
           = --batch), one instance, driven by the same grpc.aio callers over KServe v2

All use one ONNX Runtime thread, so the ratio is about what the service adds around it.

    python bench/service_throughput.py [--seconds 8] [--concurrency 64] [--batch 64] [--triton]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chorus.bench import perfanalyzer  # noqa: E402
from chorus.bench import triton as triton_server  # noqa: E402
from chorus.bench.stats import machine  # noqa: E402
from chorus.demo.build_cnn import CLASSES, NAME, SHAPE, build_cnn  # noqa: E402
from chorus.launch.mesh import Mesh  # noqa: E402
from chorus.launch.natsserver import NatsServer  # noqa: E402
from chorus.pb import kserve_v2_pb2 as kpb  # noqa: E402
from chorus.pb import kserve_v2_pb2_grpc as kpb_grpc  # noqa: E402
from chorus.services import repository  # noqa: E402


def bare(path: Path, batch: int, seconds: float) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, *SHAPE), dtype=np.float32)
    session.run(None, {"input": x})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"input": x})
        done += batch
    return done / (time.perf_counter() - start)


async def service(
    target: str, concurrency: int, seconds: float, model: str = NAME
) -> tuple[float, list[float]]:
    image = np.random.default_rng(1).random((1, *SHAPE), dtype=np.float32)
    req = kpb.ModelInferRequest(model_name=model, raw_input_contents=[image.tobytes()])
    req.inputs.add(name="input", datatype="FP32", shape=image.shape)
    latencies: list[float] = []
    async with grpc.aio.insecure_channel(target) as ch:
        infer = kpb_grpc.GRPCInferenceServiceStub(ch).ModelInfer
        for _ in range(20):
            await infer(req, timeout=30)
        stop = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                await infer(req, timeout=30)
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(latencies) / elapsed, latencies


PERF_RUNS = {"unary": (1, False), "stream": (1, True), "unary_8_per_request": (8, False)}
"""perf_analyzer runs: images per request, and whether over ModelStreamInfer streams."""


def perf_analyzer(
    target: str, concurrency: int, seconds: float, images: int, streaming: bool
) -> dict[str, object] | None:
    """The same load from perf_analyzer, or None where its libraries are missing."""
    reason = perfanalyzer.unavailable_reason()
    if reason is not None:
        print(f"perf_analyzer skipped: {reason}", file=sys.stderr)
        return None
    result = perfanalyzer.run(
        NAME,
        target,
        concurrency=concurrency,
        batch_size=images,
        measurement_ms=int(seconds * 1000 / 2),
        max_trials=6,
        stability_percent=20.0,
        extra_args=["--streaming"] if streaming else [],
    )
    return {
        "images_per_request": images,
        "images_per_s": round(result.throughput_infer_per_s, 1),
        "latency_ms": {
            "p50": round(result.p50_us / 1000, 2),
            "p95": round(result.p95_us / 1000, 2),
            "p99": round(result.p99_us / 1000, 2),
        },
        "command": " ".join(result.command[1:]),
    }


def triton(path: Path, args: argparse.Namespace) -> dict[str, object]:
    """The same model and callers through Triton, configured as its docs advise."""
    env = triton_server.ensure_venv(args.triton_venv)
    x = triton_server.Tensor("input", "TYPE_FP32", SHAPE)
    probs = triton_server.Tensor("probabilities", "TYPE_FP32", (CLASSES,))
    with tempfile.TemporaryDirectory(prefix="chorus-triton-") as tmp:
        root = Path(tmp) / "models"
        batching = triton_server.Batching(max_batch=args.batch)
        triton_server.member_model(root, NAME, path, x, probs, batching)
        with triton_server.TritonServer(env, root, Path(tmp)) as server:
            ips, lat = asyncio.run(service(server.target, args.concurrency, args.seconds))
    q = np.quantile(np.array(lat) * 1000, [0.5, 0.95, 0.99])
    return {
        "images_per_s": round(ips, 1),
        "latency_ms": {"p50": round(q[0], 2), "p95": round(q[1], 2), "p99": round(q[2], 2)},
        "settings": {**env.settings(), "model_config": batching.describe()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repository", default=str(REPO / "models"))
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--triton", action="store_true", help="also NVIDIA Triton on the same model")
    p.add_argument("--triton-venv", type=Path, help="default: built under ~/.cache/chorus")
    args = p.parse_args()
    root = Path(args.repository)
    build_cnn(root)
    path = repository.load(root, NAME).onnx_path
    before = bare(path, args.batch, args.seconds)
    env = {"CHORUS_MODEL_MAX_BATCH": str(args.batch)}  # the manifest's delay, 5 ms
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp) / "js") as nats, Mesh(
        root, Path(tmp) / "mesh", models=[NAME], nats_url=nats.url, extra_env=env
    ) as mesh:  # fmt: skip
        target = str(mesh.child(NAME).ready["grpc"])
        svc_ips, lat = asyncio.run(service(target, args.concurrency, args.seconds))
        external = {
            kind: perf_analyzer(target, args.concurrency, args.seconds, *how)
            for kind, how in PERF_RUNS.items()
        }
    on_triton = triton(path, args) if args.triton else None
    # Bare ONNX Runtime before and after the service phases: the host's speed drifts by a
    # few percent over a run, and the ratio should not depend on which end it was measured.
    after = bare(path, args.batch, args.seconds)
    bare_ips = (before + after) / 2
    q = np.quantile(np.array(lat) * 1000, [0.5, 0.95, 0.99])
    record = {
        "benchmark": "service_throughput",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "workload": f"bench CNN {SHAPE}, one image per request, batch {args.batch}",
        "concurrency": args.concurrency,
        "bare_images_per_s": round(bare_ips, 1),
        "bare_images_per_s_before_after": [round(before, 1), round(after, 1)],
        "service_images_per_s": round(svc_ips, 1),
        "ratio": round(svc_ips / bare_ips, 3),
        "service_latency_ms": {"p50": round(q[0], 2), "p95": round(q[1], 2), "p99": round(q[2], 2)},
        "triton": on_triton,
        "service_over_triton": (
            round(svc_ips / float(on_triton["images_per_s"]), 3)  # type: ignore[arg-type]
            if on_triton
            else None
        ),
        "perf_analyzer": external,
        "perf_analyzer_ratio": {
            kind: round(float(r["images_per_s"]) / bare_ips, 3)  # type: ignore[arg-type]
            for kind, r in external.items()
            if r is not None
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path_out = out / f"service_throughput-{platform.node()}-{dt.date.today().isoformat()}.json"
    path_out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
