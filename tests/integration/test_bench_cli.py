"""`chorus bench` as a person runs it: a real mesh, a JSON record and a plot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import psutil
import pytest

from chorus.bench.usage import Gpus, Sampler

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NO_MATPLOTLIB = (
    "import sys; sys.modules['matplotlib'] = None; from chorus.cli.main import main; "
    "raise SystemExit(main(sys.argv[1:]))"
)


def _bench(model_repo: Path, out: Path, *args: str, python: list[str] | None = None) -> str:
    cmd = [*(python or [sys.executable, "-m", "chorus.cli"]), "bench", "--requests", "30",
           "--concurrency", "1", "2", "--repository", str(model_repo), "--out", str(out),
           "--no-progress", *args]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_bench_records_every_path_and_concurrency_and_plots(
    model_repo: Path, tmp_path: Path
) -> None:
    _bench(model_repo, tmp_path, "--paths", "bare", "service", "mesh")
    (record_path,) = tmp_path.glob("bench-*.json")
    record = json.loads(record_path.read_text())
    assert record["machine"]["cores"] >= 1 and record["machine"]["host"]
    assert set(record["results"]) == {
        f"{p}@{c}" for p in ("bare", "service", "mesh") for c in (1, 2)
    }
    for key, r in record["results"].items():
        assert r["requests"] == 30, key
        assert r["throughput_rps"] > 0, key
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], key
        assert 0 <= r["cpu"]["machine_percent"] <= 100, key
        assert r["cpu"]["client_s"] is not None, key
        assert "gpu" in r, key
    for key in ("service@1", "mesh@2"):
        assert record["results"][key]["cpu"]["services_s"] is not None, key
    assert set(record["results"]["mesh@1"]["cpu"]["per_service_s"]) >= {"router", "fuser", "mlp"}
    assert record["results"]["bare@1"]["cpu"]["services_s"] is None
    per_task = record["results"]["mesh@1"]["cpu"]["ms_per_task"]
    assert set(per_task) >= {"router", "fuser", "mlp", "client", "services_total"}
    cpu = record["results"]["mesh@1"]["cpu"]
    assert per_task["router"] == round(cpu["per_service_s"]["router"] * 1000 / 30, 3)
    assert per_task["services_total"] > per_task["router"] > 0
    assert "mesh_added_p50_ms_at_conc_1" in record["summary"]
    plot = record_path.with_suffix(".png")
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


def test_bench_asks_the_group_as_one_model_by_unary_calls_and_on_one_stream(
    model_repo: Path, tmp_path: Path
) -> None:
    paths = ("cohosted-kserve", "cohosted-kserve-stream")
    _bench(model_repo, tmp_path, "--paths", *paths)
    (record_path,) = tmp_path.glob("bench-*.json")
    results = json.loads(record_path.read_text())["results"]
    assert set(results) == {f"{p}@{c}" for p in paths for c in (1, 2)}
    for key, r in results.items():
        assert r["requests"] == 30, key
        assert r["cpu"]["ms_per_task"]["group-bench"] > 0, key


def test_bench_rounds_alternate_the_order_and_record_medians(
    model_repo: Path, tmp_path: Path
) -> None:
    out = _bench(model_repo, tmp_path, "--paths", "bare", "mesh", "--rounds", "3")
    (record_path,) = tmp_path.glob("bench-*.json")
    record = json.loads(record_path.read_text())
    assert record["settings"]["rounds"] == 3
    rounds = record["rounds"]
    assert [r["order"] for r in rounds] == [["bare", "mesh"], ["mesh", "bare"], ["bare", "mesh"]]
    assert out.count("round 2/3: mesh@2") == 1
    for key, chosen in record["results"].items():
        runs = [r["results"][key] for r in rounds]
        assert chosen["throughput_rps_rounds"] == [r["throughput_rps"] for r in runs]
        middle = sorted(runs, key=lambda r: r["throughput_rps"])[1]
        assert chosen["throughput_rps"] == middle["throughput_rps"], key
        assert chosen["p50_ms"] == middle["p50_ms"], key
    added = [r["results"]["mesh@1"]["p50_ms"] - r["results"]["bare@1"]["p50_ms"] for r in rounds]
    assert record["summary"]["mesh_added_p50_ms_at_conc_1"] == round(sorted(added)[1], 3)


def test_bench_rounds_must_be_at_least_one(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "bench", "--paths", "bare", "--rounds", "0",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--rounds" in run.stderr


def test_bench_without_matplotlib_still_records_and_says_how_to_plot(
    model_repo: Path, tmp_path: Path
) -> None:
    out = _bench(
        model_repo, tmp_path, "--paths", "bare", python=[sys.executable, "-c", NO_MATPLOTLIB]
    )
    assert len(list(tmp_path.glob("bench-*.json"))) == 1
    assert not list(tmp_path.glob("*.png"))
    assert "pip install 'chorus-mesh[bench]'" in out


@pytest.mark.parametrize("path", ["ray", "ray-single"])
def test_bench_ray_paths_need_a_ray_python(tmp_path: Path, path: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chorus.cli", "bench", "--paths", path, "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--ray-python" in run.stderr


class _OneGpu:
    """Readings as NVML would give them for one device: a real GPU is rarely at hand."""

    def __init__(self) -> None:
        self.readings = iter([(10, 100.0), (90, 300.0)])

    def sample(self) -> list[tuple[int, float]]:
        return [next(self.readings, (50, 200.0))]


def test_sampler_charges_cpu_to_the_processes_and_polls_the_gpu() -> None:
    me = psutil.Process()
    with Sampler([me], [("self", me)], cast(Gpus, _OneGpu()), every_s=0.01) as use:
        deadline = me.cpu_times().user + 0.05
        while me.cpu_times().user < deadline:
            pass
    cpu: dict[str, Any] = use.result["cpu"]
    assert cpu["client_s"] >= 0.05 and cpu["services_s"] == cpu["per_service_s"]["self"]
    gpu: dict[str, Any] = use.result["gpu"]
    assert gpu["devices"] == 1 and gpu["samples"] >= 2
    assert gpu["util_percent_max"] == 90 and gpu["memory_used_mib_max"] == 300.0
