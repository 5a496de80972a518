"""The bench summary quotes the mesh against each peer's layouts and the faster of them."""

from __future__ import annotations

from typing import Any

from chorus.bench.run import _summary


def _results(rps: dict[str, tuple[float, float]], p50_at_1: dict[str, float]) -> dict[str, Any]:
    """`rps`: path -> (throughput at 1, at 16)."""
    out: dict[str, Any] = {}
    for path, (at_1, at_16) in rps.items():
        out[f"{path}@1"] = {"throughput_rps": at_1, "p50_ms": p50_at_1[path]}
        out[f"{path}@16"] = {"throughput_rps": at_16, "p50_ms": 10.0}
    return out


def test_the_ratio_to_quote_is_against_the_faster_layout_at_each_concurrency() -> None:
    results = _results(
        {
            "bare": (8000.0, 8000.0),
            "mesh": (250.0, 640.0),
            # The single model is faster at 1 and the ensemble at 16: each side is the
            # faster one somewhere, so the quoted ratio mixes them.
            "triton-ensemble": (500.0, 3200.0),
            "triton-single": (1000.0, 1600.0),
            "ray": (50.0, 80.0),
            "ray-single": (125.0, 320.0),
        },
        {
            "bare": 0.1,
            "mesh": 4.0,
            "triton-ensemble": 1.6,
            "triton-single": 1.0,
            "ray": 17.0,
            "ray-single": 7.0,
        },
    )
    summary = _summary(results, (1, 16))
    assert summary["mesh_over_triton_ensemble_throughput"] == {"conc 1": 0.5, "conc 16": 0.2}
    assert summary["mesh_over_triton_single_throughput"] == {"conc 1": 0.25, "conc 16": 0.4}
    assert summary["mesh_over_fastest_triton_throughput"] == {"conc 1": 0.25, "conc 16": 0.2}
    assert summary["mesh_p50_over_triton_ensemble_p50_at_conc_1"] == 2.5
    assert summary["mesh_p50_over_triton_single_p50_at_conc_1"] == 4.0
    # Ray's keys are as they were.
    assert summary["mesh_over_ray_throughput"] == {"conc 1": 5.0, "conc 16": 8.0}
    assert summary["mesh_over_fastest_ray_throughput"] == {"conc 1": 2.0, "conc 16": 2.0}
    assert summary["mesh_added_p50_ms_at_conc_1"] == 3.9


def test_the_cohosted_shape_is_quoted_beside_the_mesh() -> None:
    results = _results(
        {"bare": (8000.0, 8000.0), "cohosted": (800.0, 2400.0), "triton-ensemble": (640.0, 2000.0),
         "triton-single": (1000.0, 4000.0)},
        {"bare": 0.1, "cohosted": 1.2, "triton-ensemble": 1.5, "triton-single": 1.0},
    )  # fmt: skip
    summary = _summary(results, (1, 16))
    assert summary["cohosted_over_fastest_triton_throughput"] == {"conc 1": 0.8, "conc 16": 0.6}
    assert summary["cohosted_over_triton_ensemble_throughput"] == {"conc 1": 1.25, "conc 16": 1.2}
    assert summary["cohosted_p50_over_triton_ensemble_p50_at_conc_1"] == 0.8
    assert summary["cohosted_added_p50_ms_at_conc_1"] == 1.1
    assert not any(k.startswith("mesh_") for k in summary)


def test_the_groups_own_model_is_quoted_under_a_key_without_dashes() -> None:
    results = _results(
        {"cohosted-kserve": (700.0, 900.0), "triton-ensemble": (350.0, 1800.0)},
        {"cohosted-kserve": 1.5, "triton-ensemble": 3.0},
    )
    summary = _summary(results, (1, 16))
    assert summary["cohosted_kserve_over_triton_ensemble_throughput"] == {
        "conc 1": 2.0,
        "conc 16": 0.5,
    }
    assert summary["cohosted_kserve_p50_over_triton_ensemble_p50_at_conc_1"] == 0.5


def test_no_peer_measured_no_ratio() -> None:
    results = _results({"bare": (8000.0, 8000.0), "mesh": (250.0, 640.0)},
                       {"bare": 0.1, "mesh": 4.0})  # fmt: skip
    assert set(_summary(results, (1, 16))) == {"mesh_added_p50_ms_at_conc_1"}
