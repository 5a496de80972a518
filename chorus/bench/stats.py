"""Latency summaries and the machine a run happened on."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from chorus.bench.usage import gpu_names


def latency_stats(latencies_s: list[float], elapsed_s: float) -> dict[str, float]:
    """Milliseconds rounded to microseconds: finer digits are noise between runs anyway."""
    q = np.quantile(np.array(latencies_s) * 1000, [0.5, 0.95, 0.99])
    return {
        "requests": len(latencies_s),
        "throughput_rps": round(len(latencies_s) / elapsed_s, 1),
        "p50_ms": round(float(q[0]), 3),
        "p95_ms": round(float(q[1]), 3),
        "p99_ms": round(float(q[2]), 3),
        "mean_ms": round(statistics.fmean(latencies_s) * 1000, 3),
    }


def machine() -> dict[str, Any]:
    """Enough to tell two result files apart: a number means little without its hardware."""
    import grpc
    import onnxruntime as ort
    import psutil

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
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpu_names(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "grpcio": grpc.__version__,
        "providers": ort.get_available_providers(),
    }
