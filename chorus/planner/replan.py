"""When to solve again, and options measured from live replicas' heartbeats."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import replace

from chorus.core.errors import InvalidArgument
from chorus.core.heartbeat import Heartbeat
from chorus.planner.model import ModelOption, PlanInputs

# --- when to re-solve ------------------------------------------------------------------------


def _drifted(old: float, new: float, threshold: float) -> bool:
    if old == new:
        return False
    if old == 0:
        return True
    return abs(new - old) / abs(old) > threshold


def needs_replan(old: PlanInputs, new: PlanInputs, threshold: float = 0.2) -> bool:
    """Whether the inputs moved enough that the plan should be solved again.

    True when a demand's rps, or an option's measured throughput or latency, changed by more
    than ``threshold`` (relative to the old value; any change from 0 counts), and on any
    structural change: an option, demand or capacity added or removed, or a non-measured field
    changed (capabilities, cost, max_replicas, latency cap, capacity, target utilisation,
    latency weight). Small drift below the threshold keeps the plan, so measurement noise does
    not resize Deployments.
    """
    if threshold < 0:
        raise InvalidArgument(f"allocation: threshold must be >= 0, got {threshold!r}")
    if (old.target_utilisation, old.latency_weight) != (new.target_utilisation, new.latency_weight):
        return True
    if sorted(old.capacities, key=lambda c: c.device) != sorted(
        new.capacities, key=lambda c: c.device
    ):
        return True
    old_d = {d.key: d for d in old.demands}
    new_d = {d.key: d for d in new.demands}
    if old_d.keys() != new_d.keys():
        return True
    for demand, a in old_d.items():
        b = new_d[demand]
        if a.max_latency_ms != b.max_latency_ms or _drifted(a.rps, b.rps, threshold):
            return True
    old_o = {o.key: o for o in old.options}
    new_o = {o.key: o for o in new.options}
    if old_o.keys() != new_o.keys():
        return True
    for key, x in old_o.items():
        y = new_o[key]
        fixed = (x.capabilities, x.cost_per_replica, x.max_replicas)
        if fixed != (y.capabilities, y.cost_per_replica, y.max_replicas):
            return True
        if _drifted(x.throughput_rps, y.throughput_rps, threshold):
            return True
        if _drifted(x.latency_ms, y.latency_ms, threshold):
            return True
    return False


# --- options from heartbeats -----------------------------------------------------------------


def replica_rps(hb: Heartbeat) -> float:
    """What one replica serves at full utilisation: ``capacity`` slots, each held ``ewma_ms``
    per request. The planner's one throughput formula."""
    return hb.capacity * 1000.0 / hb.ewma_ms


def _measured(heartbeats: Iterable[Heartbeat]) -> dict[tuple[str, str], list[Heartbeat]]:
    """Replicas that have measured something (``ewma_ms > 0``), by (model, device)."""
    groups: dict[tuple[str, str], list[Heartbeat]] = defaultdict(list)
    for hb in heartbeats:
        if hb.ewma_ms > 0 and hb.capacity > 0:
            groups[(hb.model, hb.device)].append(hb)
    return dict(sorted(groups.items()))


def _throughput_and_latency(hbs: list[Heartbeat]) -> tuple[float, float]:
    """An option's throughput (mean of its replicas' :func:`replica_rps`) and latency (mean
    ``ewma_ms``)."""
    return (
        sum(replica_rps(hb) for hb in hbs) / len(hbs),
        sum(hb.ewma_ms for hb in hbs) / len(hbs),
    )


def with_measurements(inputs: PlanInputs, heartbeats: Iterable[Heartbeat]) -> PlanInputs:
    """The inputs with each (model, device) option's throughput and latency as measured; an
    option no live replica has measured keeps the file's numbers."""
    measured = _measured(heartbeats)
    options = []
    for o in inputs.options:
        if o.key in measured:
            throughput, latency = _throughput_and_latency(measured[o.key])
            o = replace(o, throughput_rps=throughput, latency_ms=latency)
        options.append(o)
    return replace(inputs, options=tuple(options))


def measured_options(
    heartbeats: Iterable[Heartbeat],
    cost_per_device: Mapping[str, float],
    *,
    max_replicas: Mapping[str, int] | None = None,
) -> tuple[ModelOption, ...]:
    """Options measured from live replicas, one per (model, device).

    An option's throughput and latency are those of :func:`_throughput_and_latency`, its
    capabilities the union of its replicas'. Replicas that have not measured anything yet are
    left out, and so is a (model, device) none of whose replicas has. ``max_replicas``
    optionally bounds models by name.
    """
    options = []
    for (model, device), hbs in _measured(heartbeats).items():
        if device not in cost_per_device:
            raise InvalidArgument(
                f"allocation: no cost for device {device!r} (replicas of {model} run there); "
                f"costs given for: {', '.join(sorted(cost_per_device)) or 'none'}"
            )
        throughput, latency = _throughput_and_latency(hbs)
        capabilities = tuple(sorted({c for hb in hbs for c in hb.capabilities}))
        options.append(
            ModelOption(
                model=model,
                device=device,
                capabilities=capabilities,
                throughput_rps=throughput,
                latency_ms=latency,
                cost_per_replica=float(cost_per_device[device]),
                max_replicas=(max_replicas or {}).get(model),
            )
        )
    return tuple(options)
