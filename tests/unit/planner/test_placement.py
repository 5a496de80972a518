"""Placement: co-host a capability's members when hops dominate their cost, keep the heavy and
the GPU ones apart, let an operator force either; `chorus plan` shows it and `chorus up`
starts the groups it names."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from chorus.cli.placement import groups_for
from chorus.core.errors import InvalidArgument
from chorus.planner.inputs import parse_inputs
from chorus.planner.placement import LIGHT_HOPS, MemberCost, groups, place, placements

HOP = 0.5


def test_light_members_are_cohosted_and_a_heavy_one_stays_apart() -> None:
    p = place(
        "classify/digits",
        [
            MemberCost("logreg", 0.2),
            MemberCost("mlp", 0.4),
            MemberCost("cnn", LIGHT_HOPS * HOP * 3),
        ],
        HOP,
    )
    assert p.shape == "cohost"
    assert p.cohosted == ("logreg", "mlp")
    assert p.apart == ("cnn",)
    assert "cnn 6 ms > 2 ms" in p.why and "logreg 0.2 ms <= 2 ms" in p.why
    assert p.group == "classify-digits"


def test_one_light_member_or_gpu_members_give_no_group() -> None:
    p = place("c", [MemberCost("a", 0.1), MemberCost("b", 50.0)], HOP)
    assert (p.shape, p.cohosted, p.apart) == ("apart", (), ("a", "b"))
    gpu = place("c", [MemberCost("a", 0.1, "cuda"), MemberCost("b", 0.1, "cuda")], HOP)
    assert gpu.shape == "apart" and "a on cuda" in gpu.why


def test_the_hop_cost_decides_the_boundary() -> None:
    members = [MemberCost("a", 1.0), MemberCost("b", 1.0)]
    assert place("c", members, hop_ms=0.5).shape == "cohost"
    assert place("c", members, hop_ms=0.2).shape == "apart"


def test_an_operator_forces_either_shape() -> None:
    members = [MemberCost("a", 0.1), MemberCost("b", 100.0), MemberCost("g", 0.1, "cuda")]
    forced = place("c", members, HOP, forced="cohost")
    assert forced.cohosted == ("a", "b") and forced.apart == ("g",)
    assert "forced" in forced.why
    assert place("c", [MemberCost("a", 0.1), MemberCost("b", 0.1)], HOP, "apart").shape == "apart"
    with pytest.raises(InvalidArgument, match="cohost needs two CPU members"):
        place("c", [MemberCost("a", 0.1)], HOP, forced="cohost")
    with pytest.raises(InvalidArgument, match="expected one of"):
        place("c", members, HOP, forced="sideways")  # type: ignore[arg-type]


def test_a_model_goes_to_one_group_only() -> None:
    a = place("x", [MemberCost("m1", 0.1), MemberCost("m2", 0.1)], HOP)
    b = place("y", [MemberCost("m2", 0.1), MemberCost("m3", 0.1), MemberCost("m4", 0.1)], HOP)
    assert groups([a, b]) == {"x": ["m1", "m2"], "y": ["m3", "m4"]}


def _inputs(**top: object) -> dict[str, object]:
    option = {"device": "cpu", "capabilities": ["classify/digits"], "throughput_rps": 500,
              "cost_per_replica": 0.1}  # fmt: skip
    return {
        "options": [
            {**option, "model": "logreg", "latency_ms": 0.3},
            {**option, "model": "mlp", "latency_ms": 0.6},
            {**option, "model": "forest", "latency_ms": 9.0},
            {**option, "model": "forest", "device": "cuda", "latency_ms": 0.2},
            {
                **option,
                "model": "knn",
                "capabilities": ["arbiter:classify/digits"],
                "latency_ms": 0.1,
            },
        ],
        "demands": [
            {"capability": "classify/digits", "rps": 100},
            {"capability": "arbiter:classify/digits", "rps": 10},
        ],
        **top,
    }


def test_the_plan_places_from_its_own_measurements() -> None:
    shapes = placements(parse_inputs(_inputs(hop_ms=0.5)))
    assert [p.capability for p in shapes] == ["classify/digits"]
    (p,) = shapes
    assert p.cohosted == ("logreg", "mlp") and p.apart == ("forest",)
    forced = placements(parse_inputs(_inputs(placement={"classify/digits": "apart"})))
    assert forced[0].shape == "apart"
    with pytest.raises(InvalidArgument, match=r"placement\.classify/digits: expected one of"):
        parse_inputs(_inputs(placement={"classify/digits": "together"}))
    with pytest.raises(InvalidArgument, match=r"hop_ms must be finite and > 0"):
        parse_inputs(_inputs(hop_ms=0))


def _repo(tmp_path: Path) -> Path:
    for model, caps, heads in (
        ("logreg", ["classify/digits"], {}),
        ("mlp", ["classify/digits"], {}),
        ("multi", ["classify/digits", "classify/other"], {"classify/digits": {}}),
        ("caption", ["caption/digits"], {}),
    ):
        d = tmp_path / model / "1"
        d.mkdir(parents=True)
        (d / "manifest.json").write_text(json.dumps({"capabilities": caps, "heads": heads}))
    return tmp_path


def test_chorus_up_starts_the_groups_forced_or_planned(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    models = ["logreg", "mlp", "multi", "caption"]
    forced = argparse.Namespace(cohost=["classify/digits"], plan=None)
    assert groups_for(forced, repo, models) == {"classify-digits": ["logreg", "mlp"]}
    plan = tmp_path / "plan.yaml"
    plan.write_text(json.dumps(_inputs(hop_ms=0.5)))
    planned = argparse.Namespace(cohost=[], plan=plan)
    assert groups_for(planned, repo, models) == {"classify-digits": ["logreg", "mlp"]}
    assert groups_for(argparse.Namespace(cohost=[], plan=None), repo, models) == {}
