"""The optional installs (pyproject's extras) a command needs, checked before it runs.

The base install is the client and the client commands; a command of another role run
without its extra would otherwise die on an ImportError deep in its first import, or worse,
halfway through starting a mesh. One line naming the extra to install, exit 2, instead.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

CONTROL = (
    "grpc_health",
    "grpc_reflection",
    "prometheus_client",
    "opentelemetry.sdk",
    "opentelemetry.exporter.otlp.proto.grpc",
    "scipy",
    "yaml",
)
SERVICES = (*CONTROL, "onnx", "onnxruntime")
TRAIN = ("sklearn", "skl2onnx")
DEMO = (*SERVICES, *TRAIN)
# matplotlib only draws the plot: `chorus bench` records without it and says how to plot.
BENCH = (*DEMO, "psutil", "tqdm")

# What each extra brings, as importable modules; `local` brings a program, not a module.
EXTRAS: dict[str, tuple[str, ...]] = {
    "control": CONTROL,
    "services": SERVICES,
    "local": (),
    "train": TRAIN,
    "demo": DEMO,
    "bench": BENCH,
}
NATS_SERVER = "nats-server"
# The extras that bring a nats-server binary of their own.
WITH_NATS_SERVER = frozenset({"local", "demo", "bench"})
EXIT_MISSING = 2
SHOWN = 3


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _nats_server() -> bool:
    beside_python = Path(sys.executable).parent / NATS_SERVER
    return beside_python.exists() or shutil.which(NATS_SERVER) is not None


def missing(extras: tuple[str, ...]) -> list[str]:
    """What the named extras bring that is not here (module names, or `nats-server`), the
    ones that mark a role first: onnxruntime tells more than prometheus_client."""
    gone = [m for extra in extras for m in reversed(EXTRAS[extra]) if not _importable(m)]
    if WITH_NATS_SERVER & set(extras) and not _nats_server():
        gone.append(NATS_SERVER)
    return list(dict.fromkeys(gone))


def install_hint(extras: tuple[str, ...]) -> str:
    return f"pip install 'chorus-mesh[{','.join(extras)}]'"


def missing_line(extras: tuple[str, ...]) -> str | None:
    """The one line to print when `extras` are not installed, or None when they are."""
    gone = missing(extras)
    if not gone:
        return None
    more = f" and {len(gone) - SHOWN} more" if len(gone) > SHOWN else ""
    return f"needs {', '.join(gone[:SHOWN])}{more}, not installed: {install_hint(extras)}"


def extra_for(module: str) -> str | None:
    """The smallest extra that brings `module` (a top-level name), or None for one no extra
    brings, which is then a bug or a package of the user's, worth its traceback."""
    top = module.partition(".")[0]
    for extra, modules in EXTRAS.items():
        if any(m.partition(".")[0] == top for m in modules):
            return extra
    return None
