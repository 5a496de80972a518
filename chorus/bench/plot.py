"""One PNG per run: throughput and latency against concurrency, one line per path.

matplotlib is an optional extra (`chorus-mesh[bench]`): the JSON is the record, the picture
only a way to read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

INSTALL_HINT = "pip install 'chorus-mesh[bench]'"


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _series(results: dict[str, dict[str, Any]]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    lines: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for key, r in results.items():
        name, _, conc = key.rpartition("@")
        lines.setdefault(name, []).append((int(conc), r))
    return {name: sorted(points, key=lambda p: p[0]) for name, points in lines.items()}


def draw(record: dict[str, Any], path: Path) -> None:
    # Figure with an Agg canvas rather than pyplot: no global backend, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    tput, lat = fig.subplots(1, 2)
    concurrencies: set[int] = set()
    for i, (name, points) in enumerate(_series(record["results"]).items()):
        color = f"C{i}"
        conc = [c for c, _ in points]
        concurrencies.update(conc)
        tput.plot(conc, [r["throughput_rps"] for _, r in points], "o-", color=color, label=name)
        lat.plot(conc, [r["p50_ms"] for _, r in points], "o-", color=color, label=f"{name} p50")
        lat.plot(conc, [r["p99_ms"] for _, r in points], "s--", color=color, label=f"{name} p99")
    ticks = sorted(concurrencies)
    for ax, title, unit in (
        (tput, "throughput", "requests/s"),
        (lat, "latency", "ms"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ticks, [str(c) for c in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("concurrency (callers in flight)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    m = record["machine"]
    fig.suptitle(f"{record['workload']}\n{m['host']}: {m['cores']} cores, {m['cpu']}", size=9)
    fig.savefig(path, dpi=110)
