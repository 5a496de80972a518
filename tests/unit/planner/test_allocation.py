"""The allocation optimiser (chorus/planner) against brute force, the cluster and the CLI.

The MILP's cost is compared with an enumeration of every replica vector (each one checked for
feasibility by a small linprog); its shortfall with the brute-force maximum servable demand.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy.optimize import linprog

from chorus import planner as al
from chorus.core.context import Priority
from chorus.core.errors import InvalidArgument, NotFound, ResourceExhausted
from chorus.core.heartbeat import Heartbeat
from chorus.planner import Capacity, Demand, ModelOption, PlanInputs
from chorus.planner.cli import main as plan_main
from chorus.planner.cli import render
from tests.support import REPO

EXAMPLE = REPO / "chorus" / "deploy" / "k8s" / "plan-example.yaml"
U = al.DEFAULT_TARGET_UTILISATION


def opt(
    model: str,
    thr: float,
    cost: float,
    *,
    device: str = "cpu",
    caps: tuple[str, ...] = ("classify/digits",),
    lat: float = 5.0,
    max_replicas: int | None = None,
) -> ModelOption:
    return ModelOption(model, device, caps, thr, lat, cost, max_replicas)


# --- brute force -----------------------------------------------------------------------------


def _eligible(inputs: PlanInputs) -> list[tuple[int, int]]:
    return [
        (k, j)
        for k, d in enumerate(inputs.demands)
        for j, o in enumerate(inputs.options)
        if d.capability in o.capabilities
        and (d.max_latency_ms is None or o.latency_ms <= d.max_latency_ms)
    ]


def _replica_vectors(inputs: PlanInputs) -> list[tuple[int, ...]]:
    cap = {c.device: c.max_replicas for c in inputs.capacities}
    ranges = []
    for o in inputs.options:
        assert o.max_replicas is not None
        ranges.append(range(min(o.max_replicas, cap.get(o.device, o.max_replicas)) + 1))
    out = []
    for r in itertools.product(*ranges):
        used: dict[str, int] = {}
        for o, n in zip(inputs.options, r, strict=True):
            used[o.device] = used.get(o.device, 0) + n
        if all(used.get(d, 0) <= c for d, c in cap.items()):
            out.append(r)
    return out


def _served(inputs: PlanInputs, r: tuple[int, ...], *, exact: bool) -> float | None:
    """Max rps servable with replicas r; exact=True: None unless every demand is met."""
    pairs = _eligible(inputs)
    if not pairs:
        return None if exact and any(d.rps > 0 for d in inputs.demands) else 0.0
    a_opt = np.zeros((len(inputs.options), len(pairs)))
    a_dem = np.zeros((len(inputs.demands), len(pairs)))
    for i, (k, j) in enumerate(pairs):
        a_opt[j, i] = 1.0
        a_dem[k, i] = 1.0
    thr = [o.throughput_rps * U * n for o, n in zip(inputs.options, r, strict=True)]
    rps = [d.rps for d in inputs.demands]
    if exact:
        res = linprog(
            np.zeros(len(pairs)), A_ub=a_opt, b_ub=thr, A_eq=a_dem, b_eq=rps, method="highs"
        )
        return float(sum(rps)) if res.status == 0 else None
    res = linprog(
        -np.ones(len(pairs)),
        A_ub=np.vstack([a_opt, a_dem]),
        b_ub=thr + rps,
        method="highs",
    )
    assert res.status == 0
    return float(-res.fun)


def brute_force(inputs: PlanInputs) -> tuple[float | None, float]:
    """(cheapest feasible cost or None, max servable rps over all replica vectors)."""
    vectors = _replica_vectors(inputs)
    costs = [
        sum(o.cost_per_replica * n for o, n in zip(inputs.options, r, strict=True)) for r in vectors
    ]
    best = None
    for cost, r in sorted(zip(costs, vectors, strict=True)):
        if _served(inputs, r, exact=True) is not None:
            best = cost
            break
    if best is not None:
        return best, sum(d.rps for d in inputs.demands)
    # More replicas never serve less, so only the vectors no other dominates matter.
    top = [
        r
        for r in vectors
        if not any(s != r and all(a >= b for a, b in zip(s, r, strict=True)) for s in vectors)
    ]
    return None, max(_served(inputs, r, exact=False) or 0.0 for r in top)


def random_instance(seed: int) -> PlanInputs:
    rng = random.Random(seed)
    caps = ["a", "b"]
    options = []
    for i in range(rng.randint(2, 3)):
        offers = tuple(sorted(rng.sample(caps, rng.randint(1, 2))))
        options.append(
            ModelOption(
                model=f"m{i}",
                device=rng.choice(["cpu", "cuda"]),
                capabilities=offers,
                throughput_rps=float(rng.randint(5, 40) * 5),
                latency_ms=float(rng.randint(1, 30)),
                cost_per_replica=float(rng.randint(1, 9)),
                max_replicas=rng.randint(1, 3),
            )
        )
    offered = sorted({c for o in options for c in o.capabilities})
    demands = []
    for cap in rng.sample(offered, rng.randint(1, len(offered))):
        demands.append(
            Demand(
                capability=cap,
                priority=rng.choice(["critical", "normal", "batch"]),
                rps=float(rng.randint(10, 300)),
                max_latency_ms=rng.choice([None, None, float(rng.randint(5, 30))]),
            )
        )
    capacities = tuple(
        Capacity(dev, rng.randint(1, 4)) for dev in ("cpu", "cuda") if rng.random() < 0.5
    )
    return PlanInputs(tuple(options), tuple(demands), capacities)


def check_plan(inputs: PlanInputs, plan: al.Allocation) -> None:
    """Every demand fully split, no option over its target utilisation, capacity respected."""
    for d in inputs.demands:
        split = plan.split(d.capability, d.priority)
        assert sum(s.rps for s in split.shares) == pytest.approx(d.rps, rel=1e-6, abs=1e-6)
        if d.rps > 0:
            assert sum(s.share for s in split.shares) == pytest.approx(1.0, rel=1e-6)
        for s in split.shares:
            o = next(o for o in inputs.options if (o.model, o.device) == (s.model, s.device))
            assert d.capability in o.capabilities
            assert d.max_latency_ms is None or o.latency_ms <= d.max_latency_ms
    for row in plan.rows:
        o = next(o for o in inputs.options if (o.model, o.device) == (row.model, row.device))
        assert row.served_rps <= o.throughput_rps * U * row.replicas + 1e-6
        assert row.expected_utilisation <= U + 1e-6
        assert o.max_replicas is None or row.replicas <= o.max_replicas
    for c in inputs.capacities:
        assert sum(r.replicas for r in plan.rows if r.device == c.device) <= c.max_replicas
    assert plan.total_cost == pytest.approx(sum(r.cost for r in plan.rows))


@pytest.mark.parametrize("seed", range(30))
def test_cost_matches_brute_force(seed: int) -> None:
    inputs = random_instance(seed)
    best, servable = brute_force(inputs)
    if best is None:
        with pytest.raises(al.Infeasible) as e:
            al.solve(inputs)
        total = sum(d.rps for d in inputs.demands)
        assert e.value.total_shortfall_rps == pytest.approx(total - servable, abs=1e-6)
        assert sum(e.value.shortfall_rps.values()) == pytest.approx(total - servable, abs=1e-6)
        for capability, _ in e.value.shortfall_rps:
            assert capability in e.value.message
    else:
        plan = al.solve(inputs)
        assert plan.status == "optimal"
        assert plan.total_cost == pytest.approx(best, abs=1e-9)
        check_plan(inputs, plan)


def test_brute_force_covers_both_outcomes() -> None:
    outcomes = {brute_force(random_instance(s))[0] is None for s in range(30)}
    assert outcomes == {True, False}


# --- infeasibility ---------------------------------------------------------------------------


def test_demand_beyond_capacity_names_capability_and_shortfall() -> None:
    inputs = PlanInputs(
        (opt("logreg", 100, 1.0, max_replicas=10),),
        (Demand("classify/digits", "normal", 1000.0),),
        (Capacity("cpu", 5),),
    )
    with pytest.raises(ResourceExhausted) as e:
        al.solve(inputs)
    # 5 replicas * 100 rps * 0.8 = 400 servable: 600 short.
    assert "classify/digits" in e.value.message
    assert "short by 600 rps" in e.value.message
    assert "cpu holds 5 replicas" in e.value.message
    assert isinstance(e.value, al.Infeasible)
    assert e.value.shortfall_rps == {("classify/digits", Priority.NORMAL): pytest.approx(600.0)}
    assert e.value.code_name == "RESOURCE_EXHAUSTED"
    assert al.max_servable(inputs) == {("classify/digits", Priority.NORMAL): pytest.approx(600.0)}


def test_shared_shortfall_falls_on_the_lowest_priority() -> None:
    inputs = PlanInputs(
        (opt("logreg", 100, 1.0, max_replicas=5),),
        (
            Demand("classify/digits", "batch", 300.0),
            Demand("classify/digits", "critical", 300.0),
        ),
    )
    with pytest.raises(al.Infeasible) as e:
        al.solve(inputs)
    assert e.value.shortfall_rps == {("classify/digits", Priority.BATCH): pytest.approx(200.0)}
    assert "classify/digits (batch) short by 200 rps" in e.value.message
    assert "critical" not in e.value.message.split(":", 2)[2]


def test_unknown_capability_is_not_found() -> None:
    inputs = PlanInputs((opt("logreg", 100, 1.0),), (Demand("caption/digits", "normal", 5.0),))
    with pytest.raises(NotFound, match="'caption/digits'"):
        al.solve(inputs)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (PlanInputs((opt("a", 100, 1),), (Demand("classify/digits", "normal", -1.0),)), "rps"),
        (PlanInputs((opt("a", 0, 1),), (Demand("classify/digits", "normal", 1.0),)), "throughput"),
        (PlanInputs((opt("a", 100, 1), opt("a", 50, 2)), ()), "listed twice"),
        (
            PlanInputs((opt("a", 100, 1),), (), target_utilisation=0.0),
            "target_utilisation",
        ),
        (PlanInputs((opt("a", 100, 1),), (), (Capacity("cpu", -1),)), "capacity"),
    ],
)
def test_malformed_input_is_invalid_argument(inputs: PlanInputs, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        al.solve(inputs)


# --- objective -------------------------------------------------------------------------------


def test_latency_caps_exclude_slow_options() -> None:
    slow_cheap = opt("forest", 100, 1.0, lat=40.0, max_replicas=10)
    fast_dear = opt("mlp", 100, 3.0, lat=4.0, max_replicas=10)
    uncapped = PlanInputs((slow_cheap, fast_dear), (Demand("classify/digits", "batch", 150.0),))
    plan = al.solve(uncapped)
    assert plan.replicas() == {("forest", "cpu"): 2, ("mlp", "cpu"): 0}

    capped = PlanInputs(
        (slow_cheap, fast_dear), (Demand("classify/digits", "critical", 150.0, 10.0),)
    )
    plan = al.solve(capped)
    assert plan.replicas() == {("forest", "cpu"): 0, ("mlp", "cpu"): 2}
    assert [s.model for s in plan.split("classify/digits", "critical").shares] == ["mlp"]
    check_plan(capped, plan)

    too_tight = PlanInputs(
        (slow_cheap, fast_dear), (Demand("classify/digits", "critical", 5.0, 1.0),)
    )
    with pytest.raises(
        al.Infeasible, match=r"short by 5 rps .*max_latency_ms 1 \(fastest: mlp@cpu"
    ):
        al.solve(too_tight)


@pytest.mark.parametrize("fast", ["a", "z"])
def test_equal_cost_ties_go_to_lower_latency(fast: str) -> None:
    slow = "z" if fast == "a" else "a"
    inputs = PlanInputs(
        (
            opt(fast, 100, 2.0, lat=2.0, max_replicas=3),
            opt(slow, 100, 2.0, lat=9.0, max_replicas=3),
        ),
        (Demand("classify/digits", "normal", 60.0),),
    )
    plan = al.solve(inputs)
    assert plan.replicas() == {(fast, "cpu"): 1, (slow, "cpu"): 0}
    assert plan.total_cost == 2.0
    assert plan.mean_latency_ms == pytest.approx(2.0)


def test_tie_break_survives_small_costs_and_close_latencies() -> None:
    # 1% latency apart, a hundredth of a cost unit per replica: still the faster one.
    inputs = PlanInputs(
        (opt("a", 100, 0.01, lat=5.05), opt("b", 100, 0.01, lat=5.0), opt("c", 90, 0.01, lat=5.1)),
        (Demand("classify/digits", "normal", 200.0),),
    )
    plan = al.solve(inputs)
    assert plan.replicas() == {("a", "cpu"): 0, ("b", "cpu"): 3, ("c", "cpu"): 0}
    # Cost still comes first: one replica of a cheaper, slower option beats a dearer fast one.
    cheaper = PlanInputs(
        (opt("fast", 100, 1.0, lat=1.0), opt("slow", 100, 0.99999, lat=100.0)),
        (Demand("classify/digits", "normal", 50.0),),
    )
    assert al.solve(cheaper).replicas() == {("fast", "cpu"): 0, ("slow", "cpu"): 1}


def test_latency_weight_trades_cost_for_latency() -> None:
    options = (opt("forest", 100, 1.0, lat=50.0), opt("mlp", 100, 1.5, lat=5.0))
    demands = (Demand("classify/digits", "normal", 70.0),)
    cheap = al.solve(PlanInputs(options, demands))
    assert cheap.replicas() == {("forest", "cpu"): 1, ("mlp", "cpu"): 0}
    # 1 cost unit per ms of mean latency: 1.5 + 5 beats 1.0 + 50.
    fast = al.solve(PlanInputs(options, demands, latency_weight=1.0))
    assert fast.replicas() == {("forest", "cpu"): 0, ("mlp", "cpu"): 1}
    assert fast.mean_latency_ms == pytest.approx(5.0)


def test_traffic_split_sums_to_each_demand() -> None:
    inputs = PlanInputs(
        (
            opt("logreg", 100, 1.0, caps=("classify/digits",), lat=1.0, max_replicas=2),
            opt("mlp", 100, 1.0, caps=("classify/digits",), lat=3.0, max_replicas=2),
            opt("knn", 50, 1.0, caps=("arbiter:classify/digits",), max_replicas=4),
        ),
        (
            Demand("classify/digits", "critical", 100.0),
            Demand("classify/digits", "normal", 150.0),
            Demand("arbiter:classify/digits", "normal", 70.0),
            Demand("classify/digits", "batch", 0.0),
        ),
    )
    plan = al.solve(inputs)
    check_plan(inputs, plan)
    by_model = plan.split("classify/digits", "normal").by_model()
    assert sum(by_model.values()) == pytest.approx(1.0)
    assert plan.split("classify/digits", "batch").shares == ()
    assert plan.replicas()[("knn", "cpu")] == 2


# --- re-planning on measurements -------------------------------------------------------------


def heartbeat(model: str, replica: str, ewma_ms: float, capacity: int = 4) -> Heartbeat:
    return Heartbeat(
        model=model,
        version="1",
        replica=replica,
        capabilities=("classify/digits",),
        inputs=(),
        outputs=(),
        labels=(),
        scores_output="probabilities",
        device="cpu",
        ewma_ms=ewma_ms,
        capacity=capacity,
    )


def test_measured_options_from_heartbeats() -> None:
    hbs = [heartbeat("mlp", "r1", 10.0), heartbeat("mlp", "r2", 20.0), heartbeat("mlp", "r3", 0.0)]
    (o,) = al.measured_options(hbs, {"cpu": 0.5}, max_replicas={"mlp": 6})
    # 4 slots / 10 ms = 400 rps, 4 / 20 ms = 200 rps; r3 has not measured yet.
    assert o.throughput_rps == pytest.approx(300.0)
    assert o.latency_ms == pytest.approx(15.0)
    assert (o.model, o.device, o.cost_per_replica, o.max_replicas) == ("mlp", "cpu", 0.5, 6)
    with pytest.raises(InvalidArgument, match="'cpu'"):
        al.measured_options(hbs, {"cuda": 1.0})


def test_halved_throughput_replans_to_more_replicas() -> None:
    demands = (Demand("classify/digits", "normal", 1000.0),)

    def inputs(ewma_ms: float) -> PlanInputs:
        hbs = [heartbeat("mlp", f"r{i}", ewma_ms) for i in range(3)]
        return PlanInputs(al.measured_options(hbs, {"cpu": 1.0}), demands, (Capacity("cpu", 16),))

    before = inputs(10.0)  # 400 rps per replica, 320 at 80%: 4 replicas for 1000 rps
    plan = al.solve(before)
    assert plan.replicas() == {("mlp", "cpu"): 4}

    assert not al.needs_replan(before, inputs(10.5))  # 5% drift keeps the plan
    slower = inputs(20.0)  # throughput halves: 160 rps per replica at 80%
    assert al.needs_replan(before, slower)
    replan = al.solve(slower)
    assert replan.replicas() == {("mlp", "cpu"): 7}
    assert replan.row("mlp", "cpu").replicas > plan.row("mlp", "cpu").replicas


def test_needs_replan_on_demand_and_structure() -> None:
    base = PlanInputs(
        (opt("mlp", 100, 1.0),),
        (Demand("classify/digits", "normal", 100.0),),
        (Capacity("cpu", 4),),
    )

    def with_(**kw: Any) -> PlanInputs:
        return PlanInputs(**{**base.__dict__, **kw})

    assert not al.needs_replan(base, base)
    assert not al.needs_replan(base, with_(demands=(Demand("classify/digits", "normal", 119.0),)))
    assert al.needs_replan(base, with_(demands=(Demand("classify/digits", "normal", 121.0),)))
    assert al.needs_replan(base, with_(demands=(Demand("classify/digits", "normal", 79.0),)))
    assert not al.needs_replan(
        base, with_(demands=(Demand("classify/digits", "normal", 150.0),)), threshold=0.6
    )
    assert al.needs_replan(base, with_(capacities=(Capacity("cpu", 3),)))
    assert al.needs_replan(base, with_(demands=(*base.demands, Demand("x", "batch", 1.0))))
    assert al.needs_replan(base, with_(options=(opt("mlp", 100, 2.0),)))


# --- Kubernetes ------------------------------------------------------------------------------


def _plan(replicas: dict[str, int]) -> al.Allocation:
    rows = tuple(
        al.PlanRow(m, "cpu", n, 0.0, 100.0 * n, 0.0, 1.0 * n, 1.0) for m, n in replicas.items()
    )
    return al.Allocation(rows, (), float(sum(replicas.values())), "optimal", 1.0)


def test_keda_patches() -> None:
    patches = al.keda_patches(_plan({"logreg": 3, "forest": 0}), headroom=1.5)
    by_name = {p["metadata"]["name"]: p["spec"] for p in patches}
    assert by_name == {
        "chorus-model-logreg": {"minReplicaCount": 3, "maxReplicaCount": 5},
        "chorus-model-forest": {"minReplicaCount": 0, "maxReplicaCount": 1},
    }
    assert {p["kind"] for p in patches} == {"ScaledObject"}
    with pytest.raises(InvalidArgument, match="headroom"):
        al.keda_patches(_plan({"logreg": 1}), headroom=0.5)
    both = al.Allocation(
        (
            al.PlanRow("mlp", "cpu", 2, 0, 0, 0, 0, 1),
            al.PlanRow("mlp", "cuda", 1, 0, 0, 0, 0, 1),
        ),
        (),
        0.0,
        "optimal",
        1.0,
    )
    with pytest.raises(InvalidArgument, match="cpu and cuda"):
        al.keda_patches(both)
    assert al.keda_patches(both, device="cuda")[0]["spec"]["minReplicaCount"] == 1


# --- the example file and the CLI ------------------------------------------------------------


def test_example_loads_and_solves() -> None:
    inputs = al.load_inputs(EXAMPLE)
    models = {o.model for o in inputs.options}
    assert models == {"logreg", "forest", "mlp", "knn"}
    assert {o.device for o in inputs.options} == {"cpu", "cuda"}
    assert {d.capability for d in inputs.demands} == {"classify/digits", "arbiter:classify/digits"}
    plan = al.solve(inputs)
    assert plan.status == "optimal"
    check_plan(inputs, plan)
    table = render(plan)
    assert "| model | device | replicas |" in table
    assert "arbiter:classify/digits" in table


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plan_main(["--inputs", str(EXAMPLE)]) == 0
    assert "expected utilisation" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "options": [
                    {
                        "model": "logreg",
                        "device": "cpu",
                        "capabilities": ["classify/digits"],
                        "throughput_rps": 100,
                        "latency_ms": 1,
                        "cost_per_replica": 1,
                        "max_replicas": 2,
                    }
                ],
                "demands": [{"capability": "classify/digits", "rps": 500}],
            }
        )
    )
    assert plan_main(["--inputs", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "RESOURCE_EXHAUSTED" in err
    assert "short by 340 rps" in err

    typo = tmp_path / "typo.yaml"
    typo.write_text("options: []\ndemands: []\ncapacity: {cpu: 1}\n")
    assert plan_main(["--inputs", str(typo)]) == 1
    assert "unknown keys capacity" in capsys.readouterr().err
