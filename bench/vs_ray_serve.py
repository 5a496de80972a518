"""The mesh and Ray Serve on the same three-member ensemble, in one run, on one machine.

    python bench/vs_ray_serve.py --ray-python /path/to/venv-with-ray/bin/python

Ray Serve stays out of the project's dependencies; point --ray-python at a virtualenv that
has `ray[serve]`, `onnxruntime` and `numpy`. Writes bench/results/vs_ray_serve-<host>-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ray-python", required=True)
    p.add_argument("--repository", default=str(REPO / "models"))
    p.add_argument("--requests", type=int, default=1000)
    args = p.parse_args()
    out = Path("/tmp") / "chorus-vs-ray"
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "mesh_latency.py"), "--repository", args.repository,
         "--requests", str(args.requests), "--concurrency", "1", "16", "--out", str(out)],
        check=True,
    )  # fmt: skip
    mesh = json.loads(sorted(out.glob("mesh_latency-*.json"))[-1].read_text())
    ray_run = subprocess.run(
        [args.ray_python, str(REPO / "bench" / "ray_serve_ensemble.py"),
         "--repository", args.repository, "--requests", str(args.requests)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    line = next(ln for ln in ray_run.stdout.splitlines() if ln.startswith("RESULTS "))
    ray = json.loads(line.removeprefix("RESULTS "))
    ratio = {
        f"conc {c}": round(mesh["results"][f"mesh@{c}"]["throughput_rps"]
                           / ray[f"ray@{c}"]["throughput_rps"], 2)
        for c in (1, 16)
    }  # fmt: skip
    record = {
        "benchmark": "vs_ray_serve",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": mesh["machine"],
        "workload": mesh["workload"],
        "mesh": {k: mesh["results"][k] for k in ("mesh@1", "mesh@16")},
        "ray_serve": ray,
        "mesh_over_ray_throughput": ratio,
    }
    dest = REPO / "bench" / "results" / f"vs_ray_serve-{platform.node()}-{dt.date.today()}.json"
    dest.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
