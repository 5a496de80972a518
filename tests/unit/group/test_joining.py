"""The Joiner on a fake task runner (a seam it owns): what runs alone, what joins, and how a
failure or a caller gone is handled."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import numpy as np
import pytest

from chorus.group.joining import Joiner, Part


class Runner:
    """Records every run; each answers its rows times ten, after `gate` opens."""

    def __init__(self) -> None:
        self.runs: list[tuple[Hashable, list[Part], float]] = []
        self.gate = asyncio.Event()
        self.fail = False

    async def __call__(
        self, key: Hashable, inputs: dict[str, np.ndarray], parts: list[Part], budget_s: float
    ) -> np.ndarray:
        self.runs.append((key, parts, budget_s))
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("members down")
        return inputs["x"] * 10


def rows(*values: float) -> dict[str, np.ndarray]:
    return {"x": np.array(values, dtype=np.float32).reshape(-1, 1)}


async def test_a_lone_call_runs_at_once_as_a_task_of_its_own() -> None:
    run = Runner()
    run.gate.set()
    joiner = Joiner(run)
    result, part = await joiner.ask("k", "t1", rows(1, 2), 5.0)
    assert part == Part("t1", 0, 2)
    assert run.runs == [("k", [part], 5.0)]
    np.testing.assert_array_equal(result[part.start : part.stop].ravel(), [10, 20])


async def test_calls_that_come_while_one_runs_go_next_as_one_task() -> None:
    run = Runner()
    joiner = Joiner(run)
    first = asyncio.ensure_future(joiner.ask("k", "t1", rows(1), 1.0))
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(joiner.ask("k", f"t{i}", rows(i, i), float(i))) for i in (2, 3)]
    other = asyncio.ensure_future(joiner.ask("other", "t4", rows(4), 1.0))
    await asyncio.sleep(0)
    run.gate.set()
    await first
    got = await asyncio.gather(*later)
    await other
    keys = [key for key, _, _ in run.runs]
    assert keys == ["k", "other", "k"]
    _, parts, budget = run.runs[2]
    assert parts == [Part("t2", 0, 2), Part("t3", 2, 4)]
    assert budget == 3.0  # the longest of the calls joined
    for (result, part), value in zip(got, (2, 3), strict=True):
        np.testing.assert_array_equal(result[part.start : part.stop].ravel(), [value * 10] * 2)
    assert joiner.runs == 3


async def test_no_task_takes_more_than_max_rows_unless_one_call_has_more() -> None:
    run = Runner()
    joiner = Joiner(run, max_rows=3)
    first = asyncio.ensure_future(joiner.ask("k", "a", rows(1), 1.0))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(joiner.ask("k", t, rows(1), 1.0)) for t in "bcde"]
    big = asyncio.ensure_future(joiner.ask("k", "f", rows(1, 1, 1, 1), 1.0))
    await asyncio.sleep(0)
    run.gate.set()
    await asyncio.gather(first, *waiting, big)
    tasks = [[p.tag for p in parts] for _, parts, _ in run.runs]
    assert tasks == [["a"], ["b", "c", "d"], ["e"], ["f"]]


async def test_a_failed_task_fails_each_call_it_joined_and_the_next_ones_still_run() -> None:
    run = Runner()
    joiner = Joiner(run)
    first = asyncio.ensure_future(joiner.ask("k", "t1", rows(1), 1.0))
    await asyncio.sleep(0)
    joined = [asyncio.ensure_future(joiner.ask("k", t, rows(2), 1.0)) for t in ("t2", "t3")]
    await asyncio.sleep(0)
    run.fail = True
    run.gate.set()
    with pytest.raises(RuntimeError, match="members down"):
        await first
    for call in joined:
        with pytest.raises(RuntimeError, match="members down"):
            await call
    run.fail = False
    result, part = await joiner.ask("k", "t4", rows(5), 1.0)
    assert part == Part("t4", 0, 1) and result[0, 0] == 50


async def test_a_caller_gone_before_its_turn_is_left_out_of_the_task() -> None:
    run = Runner()
    joiner = Joiner(run)
    first = asyncio.ensure_future(joiner.ask("k", "t1", rows(1), 1.0))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(joiner.ask("k", "t2", rows(2), 1.0))
    kept = asyncio.ensure_future(joiner.ask("k", "t3", rows(3), 1.0))
    await asyncio.sleep(0)
    gone.cancel()
    run.gate.set()
    await first
    _, part = await kept
    assert part == Part("t3", 0, 1)
    assert [[p.tag for p in parts] for _, parts, _ in run.runs] == [["t1"], ["t3"]]
