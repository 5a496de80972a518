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
first (batch, then normal, then critical: chorus.core.context.Priority). The error
(:class:`Infeasible`, a ``ResourceExhausted``) names every short capability and priority with
its shortfall in rps, and says why (no option within the latency cap, or the capacity/replica
limits it meets). A capability that no option offers at all is ``NotFound``; malformed input is
``InvalidArgument``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chorus.core.context import Priority
from chorus.core.errors import ChorusError, NotFound, ResourceExhausted
from chorus.planner.inputs import validate
from chorus.planner.model import (
    Allocation,
    Demand,
    DemandKey,
    Infeasible,
    ModelOption,
    PlanInputs,
    PlanRow,
    Share,
    Split,
)

TIE_BREAK = 1e-6
"""The latency tie-break is at most this fraction of one replica of the cheapest option."""
MIP_REL_GAP = 0.0
_TOL = 1e-6
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

    def demand_row(self, k: int, n_vars: int) -> np.ndarray:
        """Demand k's served rps: its x variables (over r then x, padded to n_vars)."""
        row = np.zeros(n_vars)
        for i, (kk, _) in enumerate(self.pairs):
            if kk == k:
                row[self.n_r + i] = 1.0
        return row

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
    validate(inputs)
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


def solve(inputs: PlanInputs, *, time_limit_s: float = 10.0) -> Allocation:
    """The cheapest plan that serves every demand; see the module docstring for the program.

    Raises NotFound for a capability no option offers, Infeasible (ResourceExhausted) naming
    each short demand and its shortfall in rps, InvalidArgument for malformed input.
    """
    # Here, not at the top: `chorus --help` builds `chorus plan`'s arguments from this package,
    # and should neither need scipy (the base install has none) nor spend 0.3 s importing it.
    from scipy.optimize import Bounds, LinearConstraint, milp

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
        a.append(p.demand_row(k, n))
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


def _plan(p: _Program, sol: np.ndarray, status: str) -> Allocation:
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
    return Allocation(
        rows=tuple(rows),
        splits=tuple(sorted(splits, key=lambda s: (s.capability, s.priority))),
        total_cost=sum(r.cost for r in rows),
        status=status,
        mean_latency_ms=latency_sum / total_rps if total_rps > 0 else 0.0,
        target_utilisation=p.inputs.target_utilisation,
    )


def max_servable(inputs: PlanInputs, *, time_limit_s: float = 10.0) -> dict[DemandKey, float]:
    """Shortfall in rps of each demand at the most the options can serve (0: fully served).

    Exact total (one MILP minimising the summed slack); attribution among competing demands
    puts the shortfall on the lowest priorities first (a second MILP at that total).
    """
    p = _program(inputs)
    short = _shortfalls(p, time_limit_s)
    return {d.key: short.get(d.key, 0.0) for d in inputs.demands}


def _shortfalls(p: _Program, time_limit_s: float) -> dict[DemandKey, float]:
    from scipy.optimize import Bounds, LinearConstraint, milp

    n_s = len(p.demands)
    n = p.n_r + p.n_x + n_s
    a, lo, hi = p.rows(n)
    for k, d in enumerate(p.demands):
        row = p.demand_row(k, n)
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
        # Shortfall on batch costs least, on critical most.
        prefer[p.n_r + p.n_x + k] = len(Priority) + 1 - d.priority.value
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
