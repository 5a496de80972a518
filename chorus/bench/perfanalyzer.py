"""Triton's perf_analyzer as an external load generator for a model service's KServe v2 gRPC port.

The binary ships in the tritonclient wheel (next to the interpreter in a virtualenv). It links
libb64.so.0d (Debian package libb64-0d) and libcudart.so.12 (PyPI nvidia-cuda-runtime-cu12,
found here through importlib and put on LD_LIBRARY_PATH). The CUDA runtime loads without a
GPU as long as CUDA shared memory is not asked for.

perf_analyzer 2.41 asks the server for ModelMetadata, then for Triton's ModelConfig, and fails
("failed to get model config") where ModelConfig is not implemented. With no max_batch_size in
that config the first dimension is not a batch dimension: `-b` must stay 1 and the rows per
request are the first dimension given with `--shape input:ROWS,64` (`shapes` here).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

BINARY = "perf_analyzer"


class PerfAnalyzerError(RuntimeError):
    """perf_analyzer is missing, cannot load its libraries, or ended with an error."""


@dataclass(frozen=True)
class PerfResult:
    """One row of perf_analyzer's CSV report (the last concurrency level measured).

    Latencies are client-side, in microseconds, per request. Throughput counts requests
    times `-b`, so with `-b 1` it is requests per second whatever the rows per request.
    """

    concurrency: int
    throughput_infer_per_s: float
    p50_us: int
    p90_us: int
    p95_us: int
    p99_us: int
    avg_us: int | None
    client_send_us: int
    client_recv_us: int
    request_count: int | None
    """Requests in the reported measurement (from the summary on stdout), if printed."""
    command: tuple[str, ...]
    output: str


def find_binary() -> Path | None:
    """perf_analyzer next to this interpreter (a virtualenv's bin/), else the first on PATH."""
    beside = Path(sys.executable).parent / BINARY
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which(BINARY)
    return Path(found) if found else None


def cuda_runtime_lib_dirs() -> list[Path]:
    """The lib/ folders of the nvidia-cuda-runtime-cu12 wheel that hold libcudart.so.12."""
    try:
        spec = importlib.util.find_spec("nvidia.cuda_runtime")
    except ModuleNotFoundError:
        return []
    if spec is None or spec.submodule_search_locations is None:
        return []
    dirs = [Path(p) / "lib" for p in spec.submodule_search_locations]
    return [d for d in dirs if any(d.glob("libcudart.so.12*"))]


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with the CUDA runtime on LD_LIBRARY_PATH."""
    env = dict(os.environ if base is None else base)
    extra = [str(d) for d in cuda_runtime_lib_dirs()]
    current = [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    paths = extra + [p for p in current if p not in extra]
    if paths:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(paths)
    return env


def unavailable_reason(timeout_s: float = 30.0) -> str | None:
    """Why perf_analyzer cannot run here (missing binary or shared library), or None if it can."""
    binary = find_binary()
    if binary is None:
        return f"{BINARY} not found beside {sys.executable} nor on PATH (tritonclient wheel)"
    try:
        done = subprocess.run(
            [str(binary), "--version"],
            env=environment(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except OSError as err:
        return f"{binary} cannot be started: {err}"
    except subprocess.TimeoutExpired:
        return f"{binary} --version did not answer within {timeout_s}s"
    text = done.stdout + done.stderr
    if "error while loading shared libraries" in text:
        line = next(ln for ln in text.splitlines() if "error while loading shared" in ln)
        hint = " (apt-get install libb64-0d)" if "libb64" in line else ""
        hint = hint or (" (pip install nvidia-cuda-runtime-cu12)" if "libcudart" in line else "")
        return line.strip() + hint
    if done.returncode != 0 or "Perf Analyzer Version" not in text:
        return f"{binary} --version exited with status {done.returncode}: {text.strip()[-500:]}"
    return None


def command(
    model: str,
    url: str,
    *,
    concurrency: int = 1,
    measurement_ms: int = 5000,
    batch_size: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
    max_trials: int = 10,
    stability_percent: float = 10.0,
    input_data: str = "random",
    csv_path: Path | None = None,
    extra_args: Sequence[str] = (),
    binary: Path | None = None,
) -> list[str]:
    """The argument list for one run at a fixed concurrency over gRPC (no shell involved)."""
    exe = binary or find_binary()
    if exe is None:
        raise PerfAnalyzerError(f"{BINARY} not found beside {sys.executable} nor on PATH")
    argv = [
        str(exe),
        "-i", "grpc",
        "-u", url,
        "-m", model,
        "-b", str(batch_size),
        "--concurrency-range", str(concurrency),
        "--measurement-interval", str(measurement_ms),
        "--max-trials", str(max_trials),
        "--stability-percentage", f"{stability_percent:g}",
        "--input-data", input_data,
        "--shared-memory", "none",
    ]  # fmt: skip
    for name, dims in (shapes or {}).items():
        argv += ["--shape", f"{name}:{','.join(str(int(d)) for d in dims)}"]
    if csv_path is not None:
        argv += ["-f", str(csv_path), "--verbose-csv"]
    return [*argv, *extra_args]


def parse_csv(path: Path) -> dict[str, str]:
    """The last data row of perf_analyzer's `-f` report, keyed by its header."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PerfAnalyzerError(f"{path}: no measurement rows")
    return {k.strip(): v.strip() for k, v in rows[-1].items() if k is not None and v is not None}


def _number(row: Mapping[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError) as err:
        raise PerfAnalyzerError(f"perf_analyzer CSV: column {key!r} missing or bad: {row}") from err


def _int(row: Mapping[str, str], key: str) -> int:
    return int(_number(row, key))


def run(
    model: str,
    url: str,
    *,
    concurrency: int = 1,
    measurement_ms: int = 5000,
    batch_size: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
    max_trials: int = 10,
    stability_percent: float = 10.0,
    input_data: str = "random",
    extra_args: Sequence[str] = (),
    timeout_s: float = 300.0,
) -> PerfResult:
    """Run perf_analyzer once against `url` (host:port of a KServe v2 gRPC endpoint).

    `shapes` gives the dims of dynamic inputs, e.g. {"input": [8, 64]} for 8 rows a request
    to a Chorus model whose input is [-1, 64]. Raises PerfAnalyzerError with perf_analyzer's
    output when it exits non-zero (2: no stable measurement within `max_trials`).
    """
    with tempfile.TemporaryDirectory(prefix="perf_analyzer-") as tmp:
        report = Path(tmp) / "report.csv"
        argv = command(
            model,
            url,
            concurrency=concurrency,
            measurement_ms=measurement_ms,
            batch_size=batch_size,
            shapes=shapes,
            max_trials=max_trials,
            stability_percent=stability_percent,
            input_data=input_data,
            csv_path=report,
            extra_args=extra_args,
        )
        try:
            done = subprocess.run(
                argv,
                env=environment(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise PerfAnalyzerError(f"perf_analyzer ran past {timeout_s}s: {argv}") from err
        output = done.stdout + done.stderr
        if done.returncode != 0 or not report.exists():
            raise PerfAnalyzerError(
                f"perf_analyzer exited with status {done.returncode}: {output.strip()[-2000:]}"
            )
        row = parse_csv(report)
    counts = re.findall(r"Request count:\s*(\d+)", output)
    return PerfResult(
        concurrency=_int(row, "Concurrency"),
        throughput_infer_per_s=_number(row, "Inferences/Second"),
        p50_us=_int(row, "p50 latency"),
        p90_us=_int(row, "p90 latency"),
        p95_us=_int(row, "p95 latency"),
        p99_us=_int(row, "p99 latency"),
        avg_us=_int(row, "Avg latency") if "Avg latency" in row else None,
        client_send_us=_int(row, "Client Send"),
        client_recv_us=_int(row, "Client Recv"),
        request_count=int(counts[-1]) if counts else None,
        command=tuple(argv),
        output=output,
    )
