"""Plan inputs from a YAML file or a mapping, checked field by field: every error names the
key and what was expected."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from chorus.core.context import Priority
from chorus.core.errors import InvalidArgument, NotFound
from chorus.planner.model import (
    DEFAULT_TARGET_UTILISATION,
    Capacity,
    Demand,
    DemandKey,
    ModelOption,
    PlanInputs,
)
from chorus.planner.placement import forced_shapes

# --- validation ------------------------------------------------------------------------------


def finite(value: float, what: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"allocation: {what} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "> 0" if positive else ">= 0"
        raise InvalidArgument(f"allocation: {what} must be finite and {need}, got {value!r}")
    return v


def _count(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"allocation: {what} must be an integer >= 0, got {value!r}")
    return value


def validate(inputs: PlanInputs) -> None:
    u = inputs.target_utilisation
    if not (isinstance(u, int | float) and 0 < u <= 1):
        raise InvalidArgument(f"allocation: target_utilisation must be in (0, 1], got {u!r}")
    finite(inputs.latency_weight, "latency_weight")
    seen: set[tuple[str, str]] = set()
    for o in inputs.options:
        if not o.model or not o.device:
            raise InvalidArgument(f"allocation: option with empty model or device: {o!r}")
        if o.key in seen:
            raise InvalidArgument(f"allocation: option {o.name} is listed twice")
        seen.add(o.key)
        if not isinstance(o.capabilities, tuple) or not all(
            isinstance(c, str) and c for c in o.capabilities
        ):
            raise InvalidArgument(f"allocation: {o.name}: capabilities must be non-empty strings")
        finite(o.throughput_rps, f"{o.name} throughput_rps", positive=True)
        finite(o.latency_ms, f"{o.name} latency_ms")
        finite(o.cost_per_replica, f"{o.name} cost_per_replica", positive=True)
        _count(o.max_replicas, f"{o.name} max_replicas")
    demands: set[DemandKey] = set()
    for d in inputs.demands:
        if not d.capability:
            raise InvalidArgument(f"allocation: demand with an empty capability: {d!r}")
        if d.key in demands:
            raise InvalidArgument(f"allocation: demand {d.name} is listed twice")
        demands.add(d.key)
        finite(d.rps, f"demand {d.name} rps")
        if d.max_latency_ms is not None:
            finite(d.max_latency_ms, f"demand {d.name} max_latency_ms", positive=True)
    devices: set[str] = set()
    for c in inputs.capacities:
        if c.device in devices:
            raise InvalidArgument(f"allocation: capacity of device {c.device!r} is listed twice")
        devices.add(c.device)
        _count(c.max_replicas, f"capacity of device {c.device!r}")


# --- input file and CLI ----------------------------------------------------------------------

_TOP = {
    "target_utilisation",
    "latency_weight",
    "capacities",
    "options",
    "demands",
    "hop_ms",
    "placement",
}
_OPTION = {
    "model",
    "device",
    "capabilities",
    "throughput_rps",
    "latency_ms",
    "cost_per_replica",
    "max_replicas",
}
_DEMAND = {"capability", "priority", "rps", "max_latency_ms"}


def _keys(d: Any, allowed: set[str], required: set[str], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise InvalidArgument(f"allocation: {where} must be a mapping, got {d!r}")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise InvalidArgument(f"allocation: {where}: unknown keys {', '.join(unknown)}")
    absent = sorted(required - set(d))
    if absent:
        raise InvalidArgument(f"allocation: {where}: missing {', '.join(absent)}")
    return d


def parse_inputs(data: Any, where: str = "inputs") -> PlanInputs:
    """PlanInputs from the mapping :func:`load_inputs` reads (see there for the format)."""
    top = _keys(data, _TOP, {"options", "demands"}, where)
    caps_raw = top.get("capacities") or {}
    if not isinstance(caps_raw, dict):
        raise InvalidArgument(f"allocation: {where}: capacities must map device to replicas")
    capacities = tuple(Capacity(str(dev), n) for dev, n in caps_raw.items())
    options = []
    for i, raw in enumerate(top["options"] or []):
        o = _keys(raw, _OPTION, _OPTION - {"max_replicas"}, f"{where}: options[{i}]")
        caps = o["capabilities"]
        if isinstance(caps, str) or not isinstance(caps, list):
            raise InvalidArgument(f"allocation: {where}: options[{i}].capabilities must be a list")
        options.append(
            ModelOption(
                model=str(o["model"]),
                device=str(o["device"]),
                capabilities=tuple(caps),
                throughput_rps=o["throughput_rps"],
                latency_ms=o["latency_ms"],
                cost_per_replica=o["cost_per_replica"],
                max_replicas=o.get("max_replicas"),
            )
        )
    demands = []
    for i, raw in enumerate(top["demands"] or []):
        d = _keys(raw, _DEMAND, {"capability", "rps"}, f"{where}: demands[{i}]")
        demands.append(
            Demand(
                capability=str(d["capability"]),
                priority=Priority.parse(
                    d.get("priority", "normal"), f"allocation: {where}: demands[{i}].priority"
                ),
                rps=d["rps"],
                max_latency_ms=d.get("max_latency_ms"),
            )
        )
    inputs = PlanInputs(
        options=tuple(options),
        demands=tuple(demands),
        capacities=capacities,
        target_utilisation=top.get("target_utilisation", DEFAULT_TARGET_UTILISATION),
        latency_weight=top.get("latency_weight", 0.0),
        hop_ms=None
        if top.get("hop_ms") is None
        else finite(top["hop_ms"], "hop_ms", positive=True),
        placement=tuple(forced_shapes(top.get("placement"), f"{where}: placement").items()),
    )
    validate(inputs)
    return inputs


def _hop_ms(value: Any) -> float | None:
    return None if value is None else finite(value, "hop_ms", positive=True)


def load_inputs(path: Path | str) -> PlanInputs:
    """Read a plan's inputs from YAML (example: chorus/deploy/k8s/plan-example.yaml).

    Format (unknown keys are errors)::

        target_utilisation: 0.8        # optional, (0, 1]
        latency_weight: 0              # optional, cost units per ms of rps-weighted mean latency
        capacities:                    # optional: device -> replicas it holds in all
          cpu: 16
          cuda: 2
        options:                       # one per (model, device)
          - model: logreg
            device: cpu
            capabilities: [classify/digits]
            throughput_rps: 900        # per replica, measured
            latency_ms: 1.1            # measured service time
            cost_per_replica: 1.0
            max_replicas: 10           # optional
        demands:                       # one per (capability, priority)
          - capability: classify/digits
            priority: normal           # optional, default normal
            rps: 400
            max_latency_ms: 20         # optional
    """
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise NotFound(f"allocation: cannot read {p}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise InvalidArgument(f"allocation: {p} is not valid YAML: {e}") from e
    return parse_inputs(data, str(p))
