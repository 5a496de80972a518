"""Gated fusion: per-row member weights from a gate model, then a per-row weighted mean.

The gate (see chorus/demo/build_gate.py) looks at one input and the members' answers to it and
says how far to trust each member on that row: its raw per-member probability that the
member's top class is right. Here those scores are floored (so no member is ever silenced
completely by an overconfident gate) and normalised per row; the fused distribution is the
weighted mean of the members' probabilities. The members' static `weight` is not used: the
gate's per-row weights take its place.

The gate is served like any model, with capability `gate:<capability>`; `Gated` asks it for
the weights of the task's rows and falls back to the soft vote, saying so, when a member the
gate knows is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core import needs as declared
from chorus.core.errors import InvalidArgument
from chorus.fuser.strategies.base import Fused, MemberScores, Task, agreement, check_members
from chorus.fuser.strategies.served import served_model, without_missing

DEFAULT_FLOOR = 0.05


class Gated:
    name = "gated"
    needs = declared.STRATEGIES[name]

    async def fuse_task(self, members: Sequence[MemberScores], task: Task) -> Fused:
        found = served_model(self.name, self.needs.model, task)
        if len(task.inputs) != 1:
            raise InvalidArgument("inputs: gated fusion needs the task's single input tensor")
        fallback = without_missing(self.name, found, members)
        if fallback is not None:
            return fallback
        assert task.client is not None
        by_name = {m.model: m for m in members}
        ordered = [by_name[n] for n in found.members]
        pixels = next(iter(task.inputs.values()))
        x = gate_input(pixels, [m.probabilities for m in ordered])
        weights = await task.client.scores(
            found.model, {found.input_name: x}, scores_output="probabilities",
            augment=False, ctx=task.ctx,
        )  # fmt: skip
        return gated_fuse(ordered, weights)


def gate_input(pixels: np.ndarray, member_probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The gate model's input: FP32 [rows, features + members * classes], i.e. the raw input
    row followed by each member's probabilities, in the order the gate's manifest lists its
    `members`."""
    x = np.asarray(pixels, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgument(f"inputs: expected a 2-d [rows, features] array, got {x.shape}")
    parts = [np.asarray(p, dtype=np.float32) for p in member_probabilities]
    for i, p in enumerate(parts):
        if p.ndim != 2 or p.shape[0] != x.shape[0]:
            raise InvalidArgument(
                f"member_probabilities[{i}]: expected shape [{x.shape[0]}, classes], "
                f"got {list(p.shape)}"
            )
    return np.hstack([x, *parts])


def gate_weights_per_row(gate_weights: np.ndarray, floor: float = DEFAULT_FLOOR) -> np.ndarray:
    """Floor the gate's scores at `floor`, then normalise each row to sum to 1.

    A row whose scores are all zero (possible only with floor 0) gets equal weights.
    """
    w = np.maximum(np.asarray(gate_weights, dtype=np.float64), floor)
    sums = w.sum(axis=1, keepdims=True)
    uniform = np.full_like(w, 1.0 / w.shape[1])
    return np.where(sums > 0, w / np.where(sums > 0, sums, 1.0), uniform)


def gated_fuse(
    members: Sequence[MemberScores], gate_weights: np.ndarray, floor: float = DEFAULT_FLOOR
) -> Fused:
    """Fuse with per-row weights: `gate_weights` is [rows, len(members)], in `members` order
    (the gate model's "probabilities" output). Ties in the fused distribution go to the lowest
    class index."""
    rows, _ = check_members(members)
    if not (np.isfinite(floor) and 0.0 <= floor <= 1.0):
        raise InvalidArgument(f"floor: expected a number in [0, 1], got {floor}")
    g = np.asarray(gate_weights)
    n = len(members)
    if g.ndim != 2 or g.shape != (rows, n):
        raise InvalidArgument(
            f"gate_weights: expected shape [{rows}, {n}] (rows x members, in members' order), "
            f"got {list(g.shape)}"
        )
    if not np.issubdtype(g.dtype, np.number) or np.issubdtype(g.dtype, np.complexfloating):
        raise InvalidArgument(f"gate_weights: expected real numbers, got dtype {g.dtype}")
    if not np.all(np.isfinite(g)) or np.any(g < 0):
        raise InvalidArgument("gate_weights: expected finite values >= 0")
    w = gate_weights_per_row(g, floor)
    stacked = np.stack([m.probabilities.astype(np.float64) for m in members])  # [m, r, c]
    fused = np.einsum("rm,mrc->rc", w, stacked)
    labels = np.argmax(fused, axis=1)
    confidence = fused[np.arange(rows), labels]
    names = [m.model for m in members]
    rules = []
    for row in w:
        order = sorted(range(n), key=lambda j: (-row[j], j))
        rules.append("gated: weights " + ", ".join(f"{names[j]} {row[j]:.2f}" for j in order))
    return Fused(fused.astype(np.float32), labels, confidence, agreement(members, labels), rules)
