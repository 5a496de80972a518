"""One `chorus bench` run: every path at every concurrency, then the record and the plot."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import json
import os
import platform
import statistics
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from chorus.bench import plot
from chorus.bench.paths import (
    WARM_UP,
    WORKLOAD,
    BarePath,
    BenchPath,
    GrpcPath,
    Phase,
    Workload,
    group_model_path,
    load_workload,
    mesh_path,
    nats_submit_path,
    running_mesh,
    service_path,
)
from chorus.bench.ray_path import RAY_LAYOUTS, RayPath
from chorus.bench.stats import latency_stats, machine
from chorus.bench.triton import (
    Batching,
    TritonEnv,
    TritonUnavailable,
    default_venv,
    ensure_venv,
)
from chorus.bench.triton_path import TRITON_LAYOUTS, running_triton, triton_path
from chorus.bench.usage import Gpus, Sampler
from chorus.launch.mesh import Mesh

PATHS = (
    "bare",
    "service",
    "mesh",
    "cohosted",
    "cohosted-nats",
    "cohosted-kserve",
    "cohosted-kserve-stream",
    "ray",
    "ray-single",
    "triton-ensemble",
    "triton-single",
    "triton-ensemble-stream",
    "triton-single-stream",
)
"""Also the order they run in: the mesh is up only while service and mesh are measured."""
NAME = "bench"
COHOSTED: dict[str, Callable[[Mesh, Workload, str], GrpcPath]] = {
    "cohosted": mesh_path,
    "cohosted-nats": nats_submit_path,
    "cohosted-kserve": group_model_path,
    "cohosted-kserve-stream": group_model_path,
}


@dataclass(frozen=True)
class Options:
    requests: int = 2000
    concurrency: tuple[int, ...] = (1, 16)
    paths: tuple[str, ...] = ("bare", "service", "mesh")
    ray_python: Path | None = None
    triton_venv: Path | None = None
    """The Triton virtualenv; None: chorus.bench.triton.default_venv(), built on first use."""
    triton_batching: Batching = field(default_factory=Batching)
    """Every Triton model's batching and instances; the default is what its docs advise first."""
    repository: Path = Path("models")
    out: Path = Path("bench/results")
    progress: bool = True
    keep_tasks: bool = False
    rounds: int = 1
    """Every path measured this many times, in alternating order; results are the medians."""


@dataclass(frozen=True)
class Outcome:
    record: dict[str, Any]
    json_path: Path
    plot_path: Path | None
    """None when matplotlib is not installed."""


def _paths(options: Options, workload: Workload, *, backwards: bool) -> Generator[BenchPath]:
    """Each path set up just before it is measured and torn down right after it; `backwards`
    runs them in the opposite order, so that alternate rounds cancel a machine's drift."""
    wanted = [p for p in PATHS if p in options.paths]
    groups: list[Callable[[], Iterator[BenchPath]]] = []
    if "bare" in wanted:
        groups.append(lambda: iter([BarePath(workload)]))
    if "service" in wanted or "mesh" in wanted:
        groups.append(lambda: _mesh_paths(options, workload, wanted))
    if any(p in wanted for p in COHOSTED):
        groups.append(lambda: _cohosted_paths(options, workload, wanted))
    for name in (p for p in wanted if p in RAY_LAYOUTS):
        groups.append(functools.partial(_ray_path, options, workload, name))
    for name in (p for p in wanted if p in TRITON_LAYOUTS):
        groups.append(functools.partial(_triton_path, options, workload, name))
    for group in reversed(groups) if backwards else groups:
        yield from group()


def _mesh_paths(options: Options, workload: Workload, wanted: list[str]) -> Generator[BenchPath]:
    with running_mesh(workload, full="mesh" in wanted, keep_tasks=options.keep_tasks) as m:
        for name, make in (("service", service_path), ("mesh", mesh_path)):
            if name in wanted:
                grpc_path = make(m, workload)
                try:
                    yield grpc_path
                finally:
                    grpc_path.close()


def _cohosted_paths(
    options: Options, workload: Workload, wanted: list[str]
) -> Generator[BenchPath]:
    """The co-hosted shape behind the router's gRPC front door (`cohosted`), behind its NATS
    endpoint (`cohosted-nats`) and asked directly as one KServe v2 model (`cohosted-kserve`),
    in the same mesh (`cohosted-kserve-stream`: its requests on one ModelStreamInfer stream)."""
    with running_mesh(workload, full=True, keep_tasks=options.keep_tasks, cohosted=True) as m:
        for name, make in COHOSTED.items():
            if name in wanted:
                path = make(m, workload, name)
                try:
                    yield path
                finally:
                    path.close()


def _ray_path(options: Options, workload: Workload, name: str) -> Generator[BenchPath]:
    assert options.ray_python is not None
    with tempfile.TemporaryDirectory(prefix="chorus-ray-") as scratch:
        ongoing = max(64, 4 * max(options.concurrency))
        ray = RayPath(options.ray_python, workload, Path(scratch), name, ongoing)
        try:
            yield ray
        finally:
            ray.close()


def _triton_path(options: Options, workload: Workload, name: str) -> Generator[BenchPath]:
    env = ensure_venv(options.triton_venv, build=False)  # run() built it
    with running_triton(env, workload, TRITON_LAYOUTS[name], options.triton_batching) as server:
        grpc_path = triton_path(server, workload, name)
        try:
            yield grpc_path
        finally:
            grpc_path.close()


@contextlib.contextmanager
def _progress(bar: tqdm[Any], phase: Phase) -> Iterator[None]:
    """Poll the phase from a thread: a callback per request would slow the fastest path."""
    shown = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal shown
        while not stop.wait(0.1):
            done = phase.done
            bar.update(done - shown)
            shown = done

    watcher = threading.Thread(target=poll, daemon=True)
    if not bar.disable:
        watcher.start()
    try:
        yield
    finally:
        stop.set()
        if watcher.is_alive():
            watcher.join()
        bar.update(phase.done - shown)


BASELINES = {"ray": tuple(RAY_LAYOUTS), "triton": tuple(TRITON_LAYOUTS)}
"""Each peer's layouts: the summary quotes Chorus against each and against the faster."""
SUBJECTS = ("mesh", "cohosted", "cohosted-kserve", "cohosted-kserve-stream")
"""Chorus's own shapes, each quoted against bare ONNX Runtime and every peer measured."""


def _summary(results: dict[str, dict[str, Any]], concurrency: tuple[int, ...]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for subject in SUBJECTS:
        summary.update(_subject_summary(results, concurrency, subject))
    return summary


def _subject_summary(
    results: dict[str, dict[str, Any]], concurrency: tuple[int, ...], subject: str
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    bare, ours = results.get("bare@1"), results.get(f"{subject}@1")
    key = subject.replace("-", "_")
    if bare and ours:
        summary[f"{key}_added_p50_ms_at_conc_1"] = round(ours["p50_ms"] - bare["p50_ms"], 3)
    keys = [f"conc {c}" for c in concurrency]
    for peer, layouts in BASELINES.items():
        ratios: list[dict[str, float]] = []
        for layout in layouts:
            ratio = {
                f"conc {c}": round(
                    results[f"{subject}@{c}"]["throughput_rps"]
                    / results[f"{layout}@{c}"]["throughput_rps"],
                    2,
                )
                for c in concurrency
                if f"{subject}@{c}" in results and f"{layout}@{c}" in results
            }
            if ratio:
                summary[f"{key}_over_{layout.replace('-', '_')}_throughput"] = ratio
                ratios.append(ratio)
        # Against the faster layout: the smaller ratio at each concurrency.
        fastest = {
            k: min(r[k] for r in ratios if k in r) for k in keys if any(k in r for r in ratios)
        }
        if fastest:
            summary[f"{key}_over_fastest_{peer}_throughput"] = fastest
    for layout in TRITON_LAYOUTS:
        if ours and f"{layout}@1" in results:
            summary[f"{key}_p50_over_{layout.replace('-', '_')}_p50_at_conc_1"] = round(
                ours["p50_ms"] / results[f"{layout}@1"]["p50_ms"], 2
            )
    return summary


def _cpu_ms_per_task(r: dict[str, Any]) -> dict[str, float] | None:
    """CPU-ms per request of each serving process (and the client), so a change shows where
    it saved."""
    cpu, n = r["cpu"], r["requests"]
    if not n:
        return None
    per = {name: s * 1000 / n for name, s in (cpu["per_service_s"] or {}).items()}
    if cpu["client_s"] is not None:
        per["client"] = cpu["client_s"] * 1000 / n
    if cpu["services_s"] is not None:
        per["services_total"] = cpu["services_s"] * 1000 / n
    return {k: round(v, 3) for k, v in per.items()}


def run(options: Options, say: Callable[[str], None] = tqdm.write) -> Outcome:
    """`say` gets a line per built model and per phase; the default keeps the bar intact."""
    if set(RAY_LAYOUTS) & set(options.paths) and options.ray_python is None:
        raise ValueError("the ray paths need --ray-python")
    workload, built = load_workload(options.repository)
    for path in built:
        say(f"built demo model {path}")
    triton: TritonEnv | None = None
    if set(TRITON_LAYOUTS) & set(options.paths):
        try:
            triton = ensure_venv(options.triton_venv, build=False)
        except TritonUnavailable:
            say(f"building the Triton virtualenv at {options.triton_venv or default_venv()} "
                "(once; a few minutes)")  # fmt: skip
            triton = ensure_venv(options.triton_venv)
    peers: dict[str, Any] = {}
    if triton is not None:
        peers["triton"] = {**triton.settings(), "model_config": options.triton_batching.describe()}
    record: dict[str, Any] = {
        "benchmark": NAME,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "workload": WORKLOAD,
        "settings": {
            "requests": options.requests,
            "warm_up": min(WARM_UP, options.requests),
            "concurrency": list(options.concurrency),
            "paths": [p for p in PATHS if p in options.paths],
            "service_model": workload.members[-1],
            "fuser_keeps_tasks": options.keep_tasks,
            "rounds": options.rounds,
            **peers,
            # What the services read besides defaults (values are settings or file paths).
            "environment": {
                k: v
                for k, v in sorted(os.environ.items())
                if k.startswith("CHORUS_") and not any(w in k for w in ("KEY", "PASSWORD", "TOKEN"))
            },
        },
    }
    phases = options.rounds * len(record["settings"]["paths"]) * len(options.concurrency)
    rounds: list[dict[str, Any]] = []
    gpus = Gpus.open()
    try:
        with tqdm(
            total=phases * options.requests, unit="req", disable=not options.progress, smoothing=0
        ) as bar:
            for i in range(options.rounds):
                prefix = f"round {i + 1}/{options.rounds}: " if options.rounds > 1 else ""
                rounds.append(_round(options, workload, record, bar, gpus, i % 2 == 1, prefix, say))
    finally:
        if gpus is not None:
            gpus.close()
    record["results"] = _median_results([r["results"] for r in rounds])
    record["summary"] = _median_summary(
        [_summary(r["results"], options.concurrency) for r in rounds]
    )
    if options.rounds > 1:
        record["rounds"] = rounds
    for key, value in record["summary"].items():
        say(f"summary  {key}  {json.dumps(value)}")

    options.out.mkdir(parents=True, exist_ok=True)
    stem = f"{NAME}-{platform.node()}-{dt.date.today().isoformat()}"
    json_path = options.out / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    plot_path: Path | None = None
    if plot.available():
        plot_path = options.out / f"{stem}.png"
        plot.draw(record, plot_path)
    return Outcome(record, json_path, plot_path)


def _round(
    options: Options,
    workload: Workload,
    record: dict[str, Any],
    bar: tqdm[Any],
    gpus: Gpus | None,
    backwards: bool,
    prefix: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Every path at every concurrency once: what a run without rounds is."""
    results: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    with contextlib.closing(_paths(options, workload, backwards=backwards)) as paths:
        for subject in paths:
            order.append(subject.name)
            if isinstance(subject, RayPath):
                record["settings"]["ray"] = subject.info.get("ray")
                record["settings"]["ray_max_ongoing_requests"] = subject.max_ongoing
                say(f"{prefix}{subject.name}: ray serve {subject.info.get('ray', '?')} up")
            for c in options.concurrency:
                key = f"{subject.name}@{c}"
                bar.set_description(prefix + key)
                subject.warm(min(WARM_UP, options.requests))
                phase = Phase()
                with (
                    _progress(bar, phase),
                    Sampler(subject.clients(), subject.services(), gpus) as use,
                ):
                    subject.drive(c, options.requests, phase)
                r = results[key] = {
                    **latency_stats(phase.latencies_s, phase.elapsed_s),
                    **use.result,
                }
                r["cpu"]["ms_per_task"] = _cpu_ms_per_task(r)
                say(
                    f"{prefix}{key:<18} {r['throughput_rps']:>9.1f} req/s  p50 {r['p50_ms']:.3f}  "
                    f"p95 {r['p95_ms']:.3f}  p99 {r['p99_ms']:.3f} ms  "
                    f"cpu {r['cpu']['machine_percent']:.0f}%"
                )
    return {"order": order, "results": results}


def _median_results(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per path and concurrency, the whole result of the round with the median throughput
    (the lower one of an even count), so its latencies and CPU belong to one measurement."""
    if len(rounds) == 1:
        return rounds[0]
    out: dict[str, dict[str, Any]] = {}
    for key in rounds[0]:
        runs = [r[key] for r in rounds]
        chosen = sorted(runs, key=lambda r: r["throughput_rps"])[(len(runs) - 1) // 2]
        out[key] = {**chosen, "throughput_rps_rounds": [r["throughput_rps"] for r in runs]}
    return out


def _median_summary(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each figure over the rounds: a ratio is taken within a round (its paths
    measured minutes apart), then its median across rounds."""
    if len(summaries) == 1:
        return summaries[0]
    out: dict[str, Any] = {}
    for key, first in summaries[0].items():
        values = [s[key] for s in summaries if key in s]
        if isinstance(first, dict):
            out[key] = _median_summary(values)
        else:
            out[key] = round(statistics.median(values), 3)
    return out
