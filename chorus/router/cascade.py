"""The cascade policy: ask the cheapest member first, more members only where it is unsure.

Most rows are easy, and one cheap model answers them as well as the whole ensemble; asking
every member about every row pays for the hard few on all rows. A cascade asks a growing
prefix of the members, cheapest first, and at each step only about the rows whose fused
confidence is still below the threshold. A row's answer is the one from the last step that
asked about it: the first confident one, or the fullest ensemble's when none was.

This module is pure: `Ask` (fan out to some members about some rows, fuse, return each row's
label and confidence) is the router's, injected into `run_cascade`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from chorus.core.errors import ChorusError, InvalidArgument

Ask = Callable[[list[str], list[int]], Awaitable[tuple[np.ndarray, np.ndarray]]]
"""Asks `members` about the task rows `rows` (indices into the task's rows) and returns the
fused (labels [len(rows)], confidence [len(rows)]) for those rows, in that order."""


@dataclass(frozen=True)
class CascadeConfig:
    """`threshold`: the fused confidence at which a row stops, in (0, 1]. `steps`: how many
    members (cheapest first) each step asks, strictly increasing; empty means 1, 2, ..., all.
    """

    threshold: float = 0.9
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t <= 1:
            raise InvalidArgument(f"cascade.threshold: expected a number in (0, 1], got {t!r}")
        steps = tuple(self.steps)
        for i, k in enumerate(steps):
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise InvalidArgument(
                    f"cascade.steps[{i}]: expected a member count of at least 1, got {k!r}"
                )
            if i and k <= steps[i - 1]:
                raise InvalidArgument(
                    f"cascade.steps: expected strictly increasing member counts, got {list(steps)}"
                )
        object.__setattr__(self, "steps", steps)

    def step_sizes(self, members: int) -> tuple[int, ...]:
        """The member count of each step for a cascade over `members` members."""
        if not self.steps:
            return tuple(range(1, members + 1))
        if self.steps[-1] > members:
            raise InvalidArgument(
                f"cascade.steps: {list(self.steps)} asks for up to {self.steps[-1]} members, "
                f"but the cascade has {members}"
            )
        return self.steps


class CascadeStep(NamedTuple):
    """One step: the members asked, and the rows they were asked about."""

    members: tuple[str, ...]
    rows_asked: tuple[int, ...]


@dataclass(frozen=True)
class CascadeResult:
    """Each row's final answer, and how the cascade got there.

    `labels`, `confidence`: [rows], from the last step that asked about the row. `depth`:
    [rows], the number of members behind that answer. `confident`: [rows], whether the
    answer reached the threshold (False where even the last step stayed unsure). `members`:
    the members cheapest first, the order steps take them in.
    """

    labels: np.ndarray
    confidence: np.ndarray
    depth: np.ndarray
    confident: np.ndarray
    steps_taken: int
    steps: tuple[CascadeStep, ...]
    members: tuple[str, ...]


def order_by_cost(members: Sequence[str], costs: Mapping[str, float]) -> tuple[str, ...]:
    """Members by ascending cost; equal costs keep their given order."""
    _check_members(members, costs)
    return tuple(sorted(members, key=lambda m: costs[m]))


async def run_cascade(
    members: Sequence[str],
    costs: Mapping[str, float],
    ask: Ask,
    config: CascadeConfig,
    *,
    rows: int,
) -> CascadeResult:
    """Runs the cascade over the task's `rows` rows; see the module docstring.

    Steps stop early once every row is confident. An error from `ask` propagates unchanged.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise InvalidArgument(f"rows: expected at least 1 row, got {rows!r}")
    ordered = order_by_cost(members, costs)
    sizes = config.step_sizes(len(ordered))

    labels = np.zeros(rows, dtype=np.int64)
    confidence = np.zeros(rows, dtype=np.float64)
    depth = np.zeros(rows, dtype=np.int64)
    confident = np.zeros(rows, dtype=bool)
    open_rows = list(range(rows))
    taken: list[CascadeStep] = []
    for k in sizes:
        if not open_rows:
            break
        asked = list(ordered[:k])
        got_labels, got_conf = await ask(asked, list(open_rows))
        got_labels, got_conf = _check_answer(got_labels, got_conf, asked, len(open_rows))
        idx = np.asarray(open_rows, dtype=np.intp)
        labels[idx] = got_labels
        confidence[idx] = got_conf
        depth[idx] = k
        sure = got_conf >= config.threshold
        confident[idx] = sure
        taken.append(CascadeStep(tuple(asked), tuple(open_rows)))
        open_rows = [r for r, s in zip(open_rows, sure.tolist(), strict=True) if not s]
    return CascadeResult(
        labels=labels,
        confidence=confidence,
        depth=depth,
        confident=confident,
        steps_taken=len(taken),
        steps=tuple(taken),
        members=ordered,
    )


def _check_members(members: Sequence[str], costs: Mapping[str, float]) -> None:
    if isinstance(members, str) or not members:
        raise InvalidArgument(f"members: expected at least one member model, got {members!r}")
    seen: set[str] = set()
    for m in members:
        if m in seen:
            raise InvalidArgument(f"members: {m!r} appears twice in {list(members)}")
        seen.add(m)
    missing = [m for m in members if m not in costs]
    if missing:
        raise InvalidArgument(
            f"costs: no cost for members {missing} (costs given for {sorted(costs)})"
        )
    for m in members:
        c = costs[m]
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
            raise InvalidArgument(f"costs[{m!r}]: expected a finite non-negative number, got {c!r}")


def _check_answer(
    labels: np.ndarray, confidence: np.ndarray, members: list[str], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The answer for `n` rows as 1-D arrays; a wrong shape is a bug in `Ask`, not the caller's."""
    labels, confidence = np.asarray(labels), np.asarray(confidence)
    for name, a in (("labels", labels), ("confidence", confidence)):
        if a.shape != (n,):
            raise ChorusError(
                f"cascade step {members}: {name}: expected shape ({n},) for the {n} rows asked, "
                f"got {a.shape}"
            )
    return labels, confidence
