"""Allocation as optimisation: how many replicas of each model on each device, and who serves what.

Why this exists. KEDA and the HPA react to queue depth within seconds, but they cannot say that
classify/digits at 400 rps is served most cheaply by three CPU replicas of logreg rather than one
GPU replica of mlp, nor that a latency cap rules the slow model out. That is a small mixed-integer
program over measured numbers, so it is written as one and handed to a real solver
(``scipy.optimize.milp``, i.e. HiGHS); the plan it yields is turned into autoscaler bounds
(``minReplicaCount`` / ``maxReplicaCount`` of the KEDA ScaledObjects), re-solved when load or
measurements drift (:func:`needs_replan`). Reactive autoscaling handles the seconds, the plan the
minutes.

The program (``j`` ranges over options = (model, device) pairs, ``k`` over demands =
(capability, priority) pairs, ``d`` over devices)::

    variables   r[j]   integer, 0 <= r[j] <= min(max_replicas[j], capacity[device j])
                x[k,j] continuous, >= 0: rps of demand k served by option j; it exists only
                       where option j offers capability k and, when demand k has a latency cap,
                       latency_ms[j] <= max_latency_ms[k]
    demand      sum_j x[k,j] = rps[k]                                   for every k
    throughput  sum_k x[k,j] <= throughput_rps[j] * target_utilisation * r[j]  for every j
    capacity    sum_{j on d} r[j] <= capacity[d]                        for every listed d
    minimise    sum_j cost[j] * r[j]
                + (latency_weight + eps) * sum_{k,j} latency_ms[j] * x[k,j] / sum_k rps[k]

The second term is the rps-weighted mean latency in ms of the whole plan, so ``latency_weight``
is priced in cost units per ms of mean latency: 0 (the default) asks for the cheapest plan,
a larger weight buys lower latency with more (or faster, dearer) replicas. ``eps`` is the
**tie-break**: ``1e-6 * cheapest replica cost / slowest option latency``, so the whole term is at
most a millionth of one replica of the cheapest option. It never outweighs a real cost
difference (cost differences smaller than that count as equal), and among plans of equal cost
the one with the lower mean latency wins. To keep the tie-break from being lost in HiGHS's
tolerances, the objective is handed to it in units of ``1e-6 *`` the cheapest replica's cost
(one cheapest replica = 1e6, the tie-break term <= 1, HiGHS's absolute MIP gap 1e-6) and with a
relative MIP gap of 0 instead of the default 1e-4.

Infeasibility is reported exactly. When the program has no solution, a relaxed program that
adds a slack ``s[k] >= 0`` to each demand row (``sum_j x[k,j] + s[k] = rps[k]``) is solved to
minimise ``sum_k s[k]`` with the same integer replicas and constraints: its optimum is the exact
total shortfall (demand minus the most the capacity can serve at the target utilisation). How a
shared shortfall is attributed to demands that compete for the same device is not unique, so a
second solve keeps the total at that optimum and puts the shortfall on the lowest priorities
first (batch, then normal, then critical; other names count as normal). The error
(:class:`Infeasible`, a ``ResourceExhausted``) names every short capability and priority with
its shortfall in rps, and says why (no option within the latency cap, or the capacity/replica
limits it meets). A capability that no option offers at all is ``NotFound``; malformed input is
``InvalidArgument``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from chorus.errors import ChorusError, InvalidArgument, NotFound, ResourceExhausted
from chorus.heartbeat import Heartbeat

DEFAULT_BASE = Path("k8s") / "overlays" / "cpu"
"""The overlay a written plan overlay builds on (it must include the KEDA component), from
where `chorus plan` runs: a Chorus checkout or a copy of its k8s/ tree; `--k8s-base` names
another."""
SCALED_OBJECT_PREFIX = "chorus-model-"

DEFAULT_TARGET_UTILISATION = 0.8
TIE_BREAK = 1e-6
"""The latency tie-break is at most this fraction of one replica of the cheapest option."""
MIP_REL_GAP = 0.0
PRIORITY_RANK = {"critical": 3, "normal": 2, "batch": 1}
"""Higher ranks are shorted last when capacity falls short; unknown names rank as normal."""
_TOL = 1e-6


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOption:
    """One model on one device kind, with what one replica of it measurably does."""

    model: str
    device: str
    capabilities: tuple[str, ...]
    throughput_rps: float
    """Requests per second one replica serves at full utilisation (measured)."""
    latency_ms: float
    """Service time of one request (measured)."""
    cost_per_replica: float
    max_replicas: int | None = None
    """Upper bound for this option alone; None: only the device's capacity bounds it."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.device)

    @property
    def name(self) -> str:
        return f"{self.model}@{self.device}"


@dataclass(frozen=True)
class Demand:
    """Requests per second asked of a capability at one priority, optionally with a latency cap."""

    capability: str
    priority: str
    rps: float
    max_latency_ms: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.capability, self.priority)

    @property
    def name(self) -> str:
        return f"{self.capability} ({self.priority})"


@dataclass(frozen=True)
class Capacity:
    """How many replicas a device kind can hold in all (CPU slots, GPUs)."""

    device: str
    max_replicas: int


@dataclass(frozen=True)
class PlanInputs:
    """Everything one solve depends on; compared by :func:`needs_replan`."""

    options: tuple[ModelOption, ...]
    demands: tuple[Demand, ...]
    capacities: tuple[Capacity, ...] = ()
    """Devices not listed are bounded only by each option's max_replicas."""
    target_utilisation: float = DEFAULT_TARGET_UTILISATION
    latency_weight: float = 0.0


# --- output ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    model: str
    device: str
    replicas: int
    served_rps: float
    capacity_rps: float
    """throughput_rps * replicas: what the replicas serve at full utilisation."""
    expected_utilisation: float
    """served_rps / capacity_rps (0 without replicas); at most the target utilisation."""
    cost: float
    latency_ms: float


@dataclass(frozen=True)
class Share:
    model: str
    device: str
    rps: float
    share: float
    """Fraction of the demand this option serves."""


@dataclass(frozen=True)
class Split:
    """How one demand is divided among options; the shares sum to 1 (rps to the demand)."""

    capability: str
    priority: str
    rps: float
    shares: tuple[Share, ...]

    def by_model(self) -> dict[str, float]:
        """Share of the demand per model, over all its devices."""
        out: dict[str, float] = defaultdict(float)
        for s in self.shares:
            out[s.model] += s.share
        return dict(out)


@dataclass(frozen=True)
class Plan:
    rows: tuple[PlanRow, ...]
    splits: tuple[Split, ...]
    total_cost: float
    status: str
    """"optimal", or "time limit (gap …)" when HiGHS stopped with a feasible plan."""
    mean_latency_ms: float
    """rps-weighted mean service latency of the plan."""
    target_utilisation: float = DEFAULT_TARGET_UTILISATION

    def row(self, model: str, device: str) -> PlanRow:
        for r in self.rows:
            if (r.model, r.device) == (model, device):
                return r
        raise NotFound(f"allocation: no plan row for {model}@{device}")

    def replicas(self) -> dict[tuple[str, str], int]:
        return {(r.model, r.device): r.replicas for r in self.rows}

    def split(self, capability: str, priority: str) -> Split:
        for s in self.splits:
            if (s.capability, s.priority) == (capability, priority):
                return s
        raise NotFound(f"allocation: no demand {capability} ({priority}) in the plan")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what a router would publish on chorus.plan)."""
        return asdict(self)


class Infeasible(ResourceExhausted):
    """The demand exceeds what the options can serve; carries the exact shortfall."""

    def __init__(
        self,
        message: str,
        shortfall_rps: Mapping[tuple[str, str], float],
        total_shortfall_rps: float,
    ) -> None:
        super().__init__(message)
        self.shortfall_rps = dict(shortfall_rps)
        self.total_shortfall_rps = total_shortfall_rps


# --- validation ------------------------------------------------------------------------------


def _finite(value: float, what: str, *, positive: bool = False) -> float:
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


def _validate(inputs: PlanInputs) -> None:
    u = inputs.target_utilisation
    if not (isinstance(u, int | float) and 0 < u <= 1):
        raise InvalidArgument(f"allocation: target_utilisation must be in (0, 1], got {u!r}")
    _finite(inputs.latency_weight, "latency_weight")
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
        _finite(o.throughput_rps, f"{o.name} throughput_rps", positive=True)
        _finite(o.latency_ms, f"{o.name} latency_ms")
        _finite(o.cost_per_replica, f"{o.name} cost_per_replica", positive=True)
        _count(o.max_replicas, f"{o.name} max_replicas")
    seen = set()
    for d in inputs.demands:
        if not d.capability or not d.priority:
            raise InvalidArgument(f"allocation: demand with empty capability or priority: {d!r}")
        if d.key in seen:
            raise InvalidArgument(f"allocation: demand {d.name} is listed twice")
        seen.add(d.key)
        _finite(d.rps, f"demand {d.name} rps")
        if d.max_latency_ms is not None:
            _finite(d.max_latency_ms, f"demand {d.name} max_latency_ms", positive=True)
    devices: set[str] = set()
    for c in inputs.capacities:
        if c.device in devices:
            raise InvalidArgument(f"allocation: capacity of device {c.device!r} is listed twice")
        devices.add(c.device)
        _count(c.max_replicas, f"capacity of device {c.device!r}")


# --- the program -----------------------------------------------------------------------------


@dataclass
class _Program:
    """Index bookkeeping shared by the cost solve and the shortfall solve."""

    inputs: PlanInputs
    options: list[ModelOption]
    demands: list[Demand]  # only those with rps > 0
    pairs: list[tuple[int, int]]  # (demand index, option index) of each x variable
    ub: list[float]  # replica bound of each option
    capacity: dict[str, int] = field(default_factory=dict)

    @property
    def n_r(self) -> int:
        return len(self.options)

    @property
    def n_x(self) -> int:
        return len(self.pairs)

    def eligible(self, k: int) -> list[int]:
        return [j for kk, j in self.pairs if kk == k]

    def rows(self, n_vars: int) -> tuple[list[np.ndarray], list[float], list[float]]:
        """Throughput and capacity rows (over r then x, padded to n_vars)."""
        a: list[np.ndarray] = []
        lo: list[float] = []
        hi: list[float] = []
        u = self.inputs.target_utilisation
        for j, o in enumerate(self.options):
            row = np.zeros(n_vars)
            row[j] = -o.throughput_rps * u
            for i, (_, jj) in enumerate(self.pairs):
                if jj == j:
                    row[self.n_r + i] = 1.0
            a.append(row)
            lo.append(-np.inf)
            hi.append(0.0)
        for device, cap in sorted(self.capacity.items()):
            row = np.zeros(n_vars)
            for j, o in enumerate(self.options):
                if o.device == device:
                    row[j] = 1.0
            a.append(row)
            lo.append(-np.inf)
            hi.append(float(cap))
        return a, lo, hi


def _program(inputs: PlanInputs) -> _Program:
    _validate(inputs)
    offered = {c for o in inputs.options for c in o.capabilities}
    missing = sorted({d.capability for d in inputs.demands if d.capability not in offered})
    if missing:
        raise NotFound(
            "allocation: no option offers capability "
            + ", ".join(repr(c) for c in missing)
            + f" (offered: {', '.join(sorted(offered)) or 'nothing'})"
        )
    capacity = {c.device: c.max_replicas for c in inputs.capacities}
    options = sorted(inputs.options, key=lambda o: o.key)
    ub: list[float] = []
    for o in options:
        bound = math.inf
        if o.max_replicas is not None:
            bound = min(bound, o.max_replicas)
        if o.device in capacity:
            bound = min(bound, capacity[o.device])
        ub.append(bound)
    demands = [d for d in inputs.demands if d.rps > 0]
    pairs = [
        (k, j)
        for k, d in enumerate(demands)
        for j, o in enumerate(options)
        if d.capability in o.capabilities
        and (d.max_latency_ms is None or o.latency_ms <= d.max_latency_ms)
    ]
    return _Program(inputs, options, demands, pairs, ub, capacity)


def _milp_options(time_limit_s: float) -> dict[str, Any]:
    return {"disp": False, "mip_rel_gap": MIP_REL_GAP, "time_limit": time_limit_s}


def solve(inputs: PlanInputs, *, time_limit_s: float = 10.0) -> Plan:
    """The cheapest plan that serves every demand; see the module docstring for the program.

    Raises NotFound for a capability no option offers, Infeasible (ResourceExhausted) naming
    each short demand and its shortfall in rps, InvalidArgument for malformed input.
    """
    p = _program(inputs)
    n = p.n_r + p.n_x
    if n == 0:
        return _plan(p, np.zeros(0), "optimal")
    total_rps = sum(d.rps for d in p.demands)
    # In units of TIE_BREAK * the cheapest replica's cost (see the module docstring): one
    # cheapest replica costs 1e6 and the latency tie-break at most 1, far above HiGHS's
    # absolute MIP gap (1e-6), which scipy does not let us set.
    scale = 1.0 / (TIE_BREAK * min((o.cost_per_replica for o in p.options), default=1.0))
    c = np.zeros(n)
    for j, o in enumerate(p.options):
        c[j] = o.cost_per_replica * scale
    slowest = max((p.options[j].latency_ms for _, j in p.pairs), default=0.0)
    if slowest > 0:
        weight = (inputs.latency_weight * scale + 1.0 / slowest) / total_rps
        for i, (_, j) in enumerate(p.pairs):
            c[p.n_r + i] = weight * p.options[j].latency_ms
    a, lo, hi = p.rows(n)
    for k, d in enumerate(p.demands):
        row = np.zeros(n)
        for i, (kk, _) in enumerate(p.pairs):
            if kk == k:
                row[p.n_r + i] = 1.0
        a.append(row)
        lo.append(d.rps)
        hi.append(d.rps)
    lb = np.zeros(n)
    ub = np.array(p.ub + [p.demands[k].rps for k, _ in p.pairs], dtype=float)
    integrality = np.array([1] * p.n_r + [0] * p.n_x)
    constraints = [LinearConstraint(np.array(a), lo, hi)] if a else []
    res = milp(
        c,
        integrality=integrality,
        bounds=Bounds(lb, ub),
        constraints=constraints,
        options=_milp_options(time_limit_s),
    )
    if res.x is None:
        if res.status == 2:
            raise _infeasible(p, time_limit_s)
        raise ResourceExhausted(f"allocation: HiGHS found no plan: {res.message}")
    gap = getattr(res, "mip_gap", float("nan"))
    status = "optimal" if res.status == 0 else f"time limit (gap {gap:.2g})"
    return _plan(p, res.x, status)


def _plan(p: _Program, sol: np.ndarray, status: str) -> Plan:
    replicas = [round(v) for v in sol[: p.n_r]]
    flows = [max(0.0, float(v)) for v in sol[p.n_r :]]
    served = [0.0] * p.n_r
    for (_, j), f in zip(p.pairs, flows, strict=True):
        served[j] += f
    rows = []
    for j, o in enumerate(p.options):
        cap = o.throughput_rps * replicas[j]
        rows.append(
            PlanRow(
                model=o.model,
                device=o.device,
                replicas=replicas[j],
                served_rps=served[j],
                capacity_rps=cap,
                expected_utilisation=served[j] / cap if cap > 0 else 0.0,
                cost=o.cost_per_replica * replicas[j],
                latency_ms=o.latency_ms,
            )
        )
    splits = []
    latency_sum = 0.0
    for k, d in enumerate(p.demands):
        shares = []
        for (kk, j), f in zip(p.pairs, flows, strict=True):
            if kk == k and f > _TOL * d.rps:
                o = p.options[j]
                shares.append(Share(o.model, o.device, f, f / d.rps))
                latency_sum += f * o.latency_ms
        splits.append(Split(d.capability, d.priority, d.rps, tuple(shares)))
    for d in p.inputs.demands:
        if d.rps == 0:
            splits.append(Split(d.capability, d.priority, 0.0, ()))
    total_rps = sum(d.rps for d in p.demands)
    return Plan(
        rows=tuple(rows),
        splits=tuple(sorted(splits, key=lambda s: (s.capability, s.priority))),
        total_cost=sum(r.cost for r in rows),
        status=status,
        mean_latency_ms=latency_sum / total_rps if total_rps > 0 else 0.0,
        target_utilisation=p.inputs.target_utilisation,
    )


def max_servable(inputs: PlanInputs, *, time_limit_s: float = 10.0) -> dict[tuple[str, str], float]:
    """Shortfall in rps of each demand at the most the options can serve (0: fully served).

    Exact total (one MILP minimising the summed slack); attribution among competing demands
    puts the shortfall on the lowest priorities first (a second MILP at that total).
    """
    p = _program(inputs)
    short = _shortfalls(p, time_limit_s)
    return {d.key: short.get(d.key, 0.0) for d in inputs.demands}


def _shortfalls(p: _Program, time_limit_s: float) -> dict[tuple[str, str], float]:
    n_s = len(p.demands)
    n = p.n_r + p.n_x + n_s
    a, lo, hi = p.rows(n)
    for k, d in enumerate(p.demands):
        row = np.zeros(n)
        for i, (kk, _) in enumerate(p.pairs):
            if kk == k:
                row[p.n_r + i] = 1.0
        row[p.n_r + p.n_x + k] = 1.0
        a.append(row)
        lo.append(d.rps)
        hi.append(d.rps)
    # Replicas unbounded by anything serve everything; the slack then is 0 anyway.
    ub_r = [b if math.isfinite(b) else np.inf for b in p.ub]
    bounds = Bounds(
        np.zeros(n),
        np.array(
            ub_r + [p.demands[k].rps for k, _ in p.pairs] + [d.rps for d in p.demands],
            dtype=float,
        ),
    )
    integrality = np.array([1] * p.n_r + [0] * (p.n_x + n_s))
    slack = np.zeros(n)
    slack[p.n_r + p.n_x :] = 1.0
    res = milp(
        slack,
        integrality=integrality,
        bounds=bounds,
        constraints=[LinearConstraint(np.array(a), lo, hi)],
        options=_milp_options(time_limit_s),
    )
    if res.x is None:
        raise ResourceExhausted(f"allocation: could not compute the shortfall: {res.message}")
    total = float(res.fun)
    # Second solve: same total, shortfall on the lowest priorities first.
    prefer = np.zeros(n)
    for k, d in enumerate(p.demands):
        prefer[p.n_r + p.n_x + k] = PRIORITY_RANK.get(d.priority.lower(), 2)
    a2 = [*a, slack]
    res2 = milp(
        prefer,
        integrality=integrality,
        bounds=bounds,
        constraints=[
            LinearConstraint(
                np.array(a2),
                [*lo, -np.inf],
                [*hi, total + _TOL * max(1.0, total)],
            )
        ],
        options=_milp_options(time_limit_s),
    )
    sol = res2.x if res2.x is not None else res.x
    return {
        d.key: float(sol[p.n_r + p.n_x + k])
        for k, d in enumerate(p.demands)
        if sol[p.n_r + p.n_x + k] > _TOL * max(1.0, d.rps)
    }


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _infeasible(p: _Program, time_limit_s: float) -> ChorusError:
    short = _shortfalls(p, time_limit_s)
    total_rps = sum(d.rps for d in p.demands)
    total = sum(short.values())
    u = p.inputs.target_utilisation
    parts = []
    for k, d in enumerate(p.demands):
        s = short.get(d.key)
        if s is None:
            continue
        eligible = p.eligible(k)
        if not eligible:
            offering = [o for o in p.options if d.capability in o.capabilities]
            fastest = min(offering, key=lambda o: o.latency_ms)
            why = (
                f"no option meets max_latency_ms {_fmt(d.max_latency_ms or 0)} "
                f"(fastest: {fastest.name} at {_fmt(fastest.latency_ms)} ms)"
            )
        else:
            limits = []
            for j in eligible:
                o = p.options[j]
                bound = "unbounded" if not math.isfinite(p.ub[j]) else f"<= {int(p.ub[j])}"
                limits.append(f"{o.name} {_fmt(o.throughput_rps)} rps/replica, {bound} replicas")
            devices = sorted({p.options[j].device for j in eligible} & set(p.capacity))
            caps = ", ".join(f"{dev} holds {p.capacity[dev]} replicas" for dev in devices)
            why = "served by " + "; ".join(limits) + (f"; {caps}" if caps else "")
        parts.append(f"{d.name} short by {_fmt(s)} rps of {_fmt(d.rps)} rps ({why})")
    if not parts:  # HiGHS disagreeing with itself within tolerances; say so plainly
        return ResourceExhausted(
            f"allocation: HiGHS finds the demand of {_fmt(total_rps)} rps infeasible but the "
            "relaxed program serves all of it (numerical edge); loosen a limit slightly"
        )
    message = (
        f"allocation: demand exceeds capacity by {_fmt(total)} rps "
        f"(at most {_fmt(total_rps - total)} of {_fmt(total_rps)} rps servable at target "
        f"utilisation {_fmt(u)}): " + "; ".join(parts)
    )
    return Infeasible(message, short, total)


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
    for key, a in old_d.items():
        b = new_d[key]
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


def measured_options(
    heartbeats: Iterable[Heartbeat],
    cost_per_device: Mapping[str, float],
    *,
    max_replicas: Mapping[str, int] | None = None,
) -> tuple[ModelOption, ...]:
    """Options measured from live replicas, one per (model, device).

    A replica with ``capacity`` slots that holds a slot ``ewma_ms`` per request serves
    ``capacity * 1000 / ewma_ms`` rps; an option's throughput is the mean of that over its
    replicas, its latency the mean ``ewma_ms``, its capabilities the union. Replicas that have
    not measured anything yet (``ewma_ms <= 0``) are left out, and so is a (model, device) none
    of whose replicas has. ``max_replicas`` optionally bounds models by name.
    """
    groups: dict[tuple[str, str], list[Heartbeat]] = defaultdict(list)
    for hb in heartbeats:
        if hb.ewma_ms > 0 and hb.capacity > 0:
            groups[(hb.model, hb.device)].append(hb)
    options = []
    for (model, device), hbs in sorted(groups.items()):
        if device not in cost_per_device:
            raise InvalidArgument(
                f"allocation: no cost for device {device!r} (replicas of {model} run there); "
                f"costs given for: {', '.join(sorted(cost_per_device)) or 'none'}"
            )
        throughput = sum(hb.capacity * 1000.0 / hb.ewma_ms for hb in hbs) / len(hbs)
        latency = sum(hb.ewma_ms for hb in hbs) / len(hbs)
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


# --- Kubernetes ------------------------------------------------------------------------------


def _model_replicas(plan: Plan, device: str | None) -> dict[str, int]:
    per_model: dict[str, dict[str, int]] = defaultdict(dict)
    for r in plan.rows:
        if device is None or r.device == device:
            per_model[r.model][r.device] = r.replicas
    out = {}
    for model, by_device in sorted(per_model.items()):
        used = sorted(d for d, n in by_device.items() if n > 0)
        if len(used) > 1:
            raise InvalidArgument(
                f"allocation: {model} is planned on {' and '.join(used)}, but one Deployment "
                "(one ScaledObject) runs each model; pick the overlay's device"
            )
        out[model] = sum(by_device.values())
    return out


def keda_patches(
    plan: Plan, headroom: float = 2.0, *, device: str | None = None
) -> list[dict[str, Any]]:
    """Strategic-merge patches for the KEDA ScaledObjects ``chorus-model-<model>``.

    ``minReplicaCount`` is the planned replica count and ``maxReplicaCount`` is
    ``ceil(planned * headroom)``, at least 1 (the HPA KEDA creates rejects a maximum of 0; a
    model planned at 0 may then scale to zero and be woken by its activation threshold).
    ScaledObjects are per model while plans are per (model, device): with ``device`` only that
    device's rows count; without it a model planned with replicas on two devices is an
    InvalidArgument.
    """
    h = _finite(headroom, "headroom", positive=True)
    if h < 1:
        raise InvalidArgument(f"allocation: headroom must be >= 1, got {headroom!r}")
    patches = []
    for model, n in _model_replicas(plan, device).items():
        patches.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": {"name": f"{SCALED_OBJECT_PREFIX}{model}"},
                "spec": {
                    "minReplicaCount": n,
                    "maxReplicaCount": max(1, math.ceil(n * h - 1e-9)),
                },
            }
        )
    return patches


def scaled_object_models(base: Path) -> set[str]:
    """Models with a KEDA ScaledObject in what the kustomization at `base` builds: its
    resources and components, followed as kustomize follows them (local paths only)."""
    import yaml

    if not (Path(base) / "kustomization.yaml").is_file():
        raise NotFound(
            f"k8s base: no kustomization.yaml in {base}; pass --k8s-base with the overlay to "
            "patch (k8s/overlays/cpu of Chorus's manifests)"
        )
    docs: list[dict[str, Any]] = []
    seen: set[Path] = set()

    def follow(path: Path) -> None:
        path = path.resolve()
        if path in seen or not path.exists():
            return
        seen.add(path)
        if path.is_dir():
            k = yaml.safe_load((path / "kustomization.yaml").read_text()) or {}
            for entry in [*k.get("resources", []), *k.get("components", [])]:
                follow(path / entry)
        elif path.suffix in (".yaml", ".yml"):
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict))

    follow(Path(base))
    return {
        d["metadata"]["name"].removeprefix(SCALED_OBJECT_PREFIX)
        for d in docs
        if d.get("kind") == "ScaledObject"
        and d["metadata"]["name"].startswith(SCALED_OBJECT_PREFIX)
    }


@dataclass(frozen=True)
class Overlay:
    directory: Path
    patched: tuple[str, ...]
    """Models whose ScaledObject the overlay patches."""
    unmanaged: tuple[str, ...]
    """Planned models without a ScaledObject in the base (e.g. the knn arbiter): not patched."""


def write_overlay(
    plan: Plan,
    directory: Path | str,
    *,
    base: Path | str = DEFAULT_BASE,
    headroom: float = 2.0,
    device: str | None = None,
    scaled_objects: Collection[str] | None = None,
) -> Overlay:
    """Write a kustomize overlay that applies the plan's bounds on top of ``base``.

    ``kubectl kustomize <directory>`` (or ``kubectl apply -k``) builds ``base`` (by a relative
    path, as kustomize requires) with one strategic-merge patch file per ScaledObject. The
    patches name no target selector, so kustomize fails loudly if one matches nothing. Models
    without a ScaledObject (``scaled_objects``; default: those in the KEDA component) are not
    patched and are listed in the kustomization's header and in ``Overlay.unmanaged``.
    """
    import yaml

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    managed = (
        set(scaled_objects) if scaled_objects is not None else scaled_object_models(Path(base))
    )
    rel = Path(os.path.relpath(Path(base).resolve(), out.resolve())).as_posix()
    patched, unmanaged, files = [], [], []
    for patch in keda_patches(plan, headroom, device=device):
        model = patch["metadata"]["name"].removeprefix(SCALED_OBJECT_PREFIX)
        if model not in managed:
            unmanaged.append(model)
            continue
        name = f"scaledobject-{model}.yaml"
        (out / name).write_text(yaml.safe_dump(patch, sort_keys=False))
        patched.append(model)
        files.append(name)
    header = [
        "# Generated by `chorus plan` (router/allocation.py): autoscaler bounds from the plan.",
        f"# Total cost {_fmt(plan.total_cost)}, status {plan.status}, headroom {_fmt(headroom)}.",
    ]
    if unmanaged:
        header.append(f"# Planned but without a ScaledObject here: {', '.join(unmanaged)}.")
    body = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel],
        "patches": [{"path": f} for f in files],
    }
    text = "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)
    (out / "kustomization.yaml").write_text(text)
    return Overlay(out, tuple(patched), tuple(unmanaged))


# --- presentation ----------------------------------------------------------------------------


def render(plan: Plan) -> str:
    """The plan as markdown: replicas per (model, device), then the traffic split per demand."""
    lines = [
        "| model | device | replicas | serves (rps) | expected utilisation | cost |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in plan.rows:
        lines.append(
            f"| {r.model} | {r.device} | {r.replicas} | {r.served_rps:.1f} "
            f"| {r.expected_utilisation:.0%} | {r.cost:.2f} |"
        )
    lines += [
        "",
        f"Total cost {plan.total_cost:.2f}; mean latency {plan.mean_latency_ms:.2f} ms; "
        f"target utilisation {plan.target_utilisation:.0%}; {plan.status}.",
        "",
        "| capability | priority | rps | split |",
        "|---|---|---:|---|",
    ]
    for s in plan.splits:
        split = ", ".join(f"{x.model}@{x.device} {x.share:.0%} ({x.rps:.1f} rps)" for x in s.shares)
        lines.append(f"| {s.capability} | {s.priority} | {s.rps:g} | {split or '-'} |")
    return "\n".join(lines) + "\n"


# --- input file and CLI ----------------------------------------------------------------------

_TOP = {"target_utilisation", "latency_weight", "capacities", "options", "demands"}
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
                priority=str(d.get("priority", "normal")),
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
    )
    _validate(inputs)
    return inputs


def load_inputs(path: Path | str) -> PlanInputs:
    """Read a plan's inputs from YAML (example: k8s/plan-example.yaml).

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `chorus plan`."""
    parser.add_argument("--inputs", type=Path, required=True, help="plan inputs (YAML)")
    parser.add_argument(
        "--k8s-out", type=Path, help="write a kustomize overlay with the plan's autoscaler bounds"
    )
    parser.add_argument("--k8s-base", type=Path, default=DEFAULT_BASE, help="overlay to patch")
    parser.add_argument(
        "--k8s-device", help="device of the overlay's Deployments (rows of other devices ignored)"
    )
    parser.add_argument(
        "--headroom", type=float, default=2.0, help="maxReplicaCount = ceil(planned * headroom)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    """`chorus plan`: solve, print the plan, optionally write the overlay. 0 ok, 1 error."""
    try:
        plan = solve(load_inputs(args.inputs))
        if args.json:
            print(json.dumps(plan.to_dict(), indent=2))
        else:
            print(render(plan), end="")
        if args.k8s_out is not None:
            overlay = write_overlay(
                plan,
                args.k8s_out,
                base=args.k8s_base,
                headroom=args.headroom,
                device=args.k8s_device,
            )
            print(f"\nwrote {overlay.directory}/kustomization.yaml", file=sys.stderr)
            if overlay.unmanaged:
                print(f"no ScaledObject for: {', '.join(overlay.unmanaged)}", file=sys.stderr)
    except ChorusError as e:
        print(f"chorus plan: {e.code_name}: {e.message}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chorus plan", description=solve.__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
