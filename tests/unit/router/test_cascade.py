"""The cascade policy on a fake ensemble whose confidence grows with the members asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from chorus.core.errors import ChorusError, InvalidArgument
from chorus.router.cascade import (
    CascadeConfig,
    CascadeResult,
    CascadeStep,
    order_by_cost,
    run_cascade,
)

MEMBERS = ["logreg", "forest", "mlp"]
COSTS = {"logreg": 1.0, "forest": 2.0, "mlp": 3.0}


class Ensemble:
    """A fake Ask: row r is confident once `need[r]` members are asked; label = 10*members + r.

    Confidence is 0.95 when enough members are asked, else 0.5; it records every call.
    """

    def __init__(self, need: Sequence[int]) -> None:
        self.need = list(need)
        self.calls: list[tuple[list[str], list[int]]] = []

    async def __call__(self, members: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append((members, rows))
        k = len(members)
        labels = np.array([10 * k + r for r in rows], dtype=np.int64)
        conf = np.array([0.95 if k >= self.need[r] else 0.5 for r in rows], dtype=np.float32)
        return labels, conf


async def test_all_confident_at_the_first_step() -> None:
    ask = Ensemble([1, 1, 1, 1])
    result = await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(), rows=4)
    assert isinstance(result, CascadeResult)
    assert ask.calls == [(["logreg"], [0, 1, 2, 3])]
    assert result.steps_taken == 1
    assert result.depth.tolist() == [1, 1, 1, 1]
    assert result.labels.tolist() == [10, 11, 12, 13]
    np.testing.assert_allclose(result.confidence, 0.95, rtol=1e-6)
    assert result.confident.all()
    assert result.steps == (CascadeStep(("logreg",), (0, 1, 2, 3)),)


async def test_open_rows_escalate_to_two_then_three_members() -> None:
    # rows 0 and 3 settle with one member, row 2 with two, rows 1 and 4 need all three
    ask = Ensemble([1, 3, 2, 1, 3])
    result = await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(threshold=0.9), rows=5)
    assert ask.calls == [
        (["logreg"], [0, 1, 2, 3, 4]),
        (["logreg", "forest"], [1, 2, 4]),
        (["logreg", "forest", "mlp"], [1, 4]),
    ]
    assert result.steps_taken == 3
    assert result.depth.tolist() == [1, 3, 2, 1, 3]
    assert result.labels.tolist() == [10, 31, 22, 13, 34]
    assert result.confident.tolist() == [True] * 5
    assert [(s.members, s.rows_asked) for s in result.steps] == [
        (("logreg",), (0, 1, 2, 3, 4)),
        (("logreg", "forest"), (1, 2, 4)),
        (("logreg", "forest", "mlp"), (1, 4)),
    ]
    assert result.labels.dtype == np.int64 and result.depth.dtype == np.int64


async def test_rows_unsure_after_the_last_step_keep_the_fullest_answer() -> None:
    ask = Ensemble([1, 4])  # row 1 is never confident with 3 members
    result = await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(), rows=2)
    assert result.steps_taken == 3
    assert result.depth.tolist() == [1, 3]
    assert result.labels.tolist() == [10, 31]
    np.testing.assert_allclose(result.confidence, [0.95, 0.5], rtol=1e-6)
    assert result.confident.tolist() == [True, False]


async def test_costs_reorder_members_ties_keep_given_order() -> None:
    costs = {"logreg": 5.0, "forest": 0.5, "mlp": 0.5, "unused": 0.0}
    assert order_by_cost(MEMBERS, costs) == ("forest", "mlp", "logreg")
    ask = Ensemble([3])
    result = await run_cascade(MEMBERS, costs, ask, CascadeConfig(), rows=1)
    assert [c[0] for c in ask.calls] == [["forest"], ["forest", "mlp"], ["forest", "mlp", "logreg"]]
    assert result.members == ("forest", "mlp", "logreg")


async def test_custom_steps_skip_sizes() -> None:
    ask = Ensemble([1, 2, 3])
    result = await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(steps=(1, 3)), rows=3)
    assert ask.calls == [(["logreg"], [0, 1, 2]), (["logreg", "forest", "mlp"], [1, 2])]
    assert result.depth.tolist() == [1, 3, 3]
    # steps that stop short of all members
    ask = Ensemble([3])
    result = await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(steps=(2,)), rows=1)
    assert ask.calls == [(["logreg", "forest"], [0])]
    assert result.depth.tolist() == [2] and not result.confident[0]


async def test_threshold_is_inclusive_even_in_float32() -> None:
    async def ask(members: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(rows), dtype=np.int64), np.full(len(rows), 0.9, dtype=np.float32)

    result = await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(threshold=0.9), rows=2)
    assert result.steps_taken == 1


async def test_nan_confidence_escalates() -> None:
    async def ask(members: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(rows)), np.full(len(rows), np.nan)

    result = await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(), rows=1)
    assert result.steps_taken == 3


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"threshold": 0.0}, r"cascade.threshold: expected a number in \(0, 1\], got 0.0"),
        ({"threshold": 1.5}, r"cascade.threshold: .* got 1.5"),
        ({"threshold": float("nan")}, r"cascade.threshold: .* got nan"),
        ({"threshold": True}, r"cascade.threshold: .* got True"),
        ({"steps": (0, 1)}, r"cascade.steps\[0\]: expected a member count of at least 1, got 0"),
        ({"steps": (2, 2)}, r"cascade.steps: expected strictly increasing .* got \[2, 2\]"),
        ({"steps": (3, 1)}, r"cascade.steps: expected strictly increasing"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidArgument, match=expected):
        CascadeConfig(**kwargs)


def test_threshold_one_is_allowed() -> None:
    assert CascadeConfig(threshold=1).threshold == 1


@pytest.mark.parametrize(
    ("members", "costs", "config", "rows", "expected"),
    [
        ([], COSTS, CascadeConfig(), 1, r"members: expected at least one member model, got \[\]"),
        (["logreg", "logreg"], COSTS, CascadeConfig(), 1, r"members: 'logreg' appears twice"),
        (["logreg", "knn"], COSTS, CascadeConfig(), 1, r"costs: no cost for members \['knn'\]"),
        (MEMBERS, COSTS | {"mlp": -1.0}, CascadeConfig(), 1, r"costs\['mlp'\]: expected a finite"),
        (MEMBERS, COSTS | {"mlp": float("inf")}, CascadeConfig(), 1, r"costs\['mlp'\]"),
        (MEMBERS, COSTS, CascadeConfig(steps=(1, 4)), 1, r"up to 4 members, but .* has 3"),
        (MEMBERS, COSTS, CascadeConfig(), 0, r"rows: expected at least 1 row, got 0"),
    ],
)
async def test_run_validation(
    members: list[str], costs: dict[str, float], config: CascadeConfig, rows: int, expected: str
) -> None:
    ask = Ensemble([1])
    with pytest.raises(InvalidArgument, match=expected):
        await run_cascade(members, costs, ask, config, rows=rows)
    assert ask.calls == []


async def test_answer_of_the_wrong_length_is_an_internal_error() -> None:
    async def ask(members: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(1), np.zeros(1)

    with pytest.raises(ChorusError, match=r"labels: expected shape \(3,\) .* got \(1,\)") as info:
        await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(), rows=3)
    assert type(info.value) is ChorusError


async def test_ask_errors_propagate() -> None:
    async def ask(members: list[str], rows: list[int]) -> tuple[np.ndarray, np.ndarray]:
        raise InvalidArgument("inputs: bad")

    with pytest.raises(InvalidArgument, match="inputs: bad"):
        await run_cascade(MEMBERS, COSTS, ask, CascadeConfig(), rows=3)
