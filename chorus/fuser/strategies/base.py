"""What every fusion strategy takes and returns."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeGuard

import numpy as np

from chorus.core.context import CallContext
from chorus.core.errors import InvalidArgument
from chorus.core.needs import Needs
from chorus.fuser.members import MemberClient
from chorus.fuser.reliability import Estimate


@dataclass(frozen=True)
class MemberScores:
    """One member's output for every row.

    Classification members fill `probabilities` (FP32 [rows, classes]); regression members
    fill `probabilities` with their predicted values, [rows, outputs], and the regression
    strategies read them as values. `priority` orders members for the last tie-break (higher
    wins); `weight` is the member's current trust (learned or configured).
    """

    model: str
    probabilities: np.ndarray
    weight: float = 1.0
    version: str = ""
    priority: int = 0
    output_kind: str = "probabilities"
    """What the member's own output held, before the fuser made it comparable (fuser.kinds)."""
    temperature: float = 1.0

    # Computed once: the strategy, conflict detection, the reply and the reliability estimate
    # all read them, and the arrays are not changed after a member's scores are decoded.
    # Memoised by hand: functools.cached_property takes a lock on every read (Python 3.11),
    # which cost the fuser about 8 us a task.
    @property
    def votes(self) -> np.ndarray:
        memo: np.ndarray | None = self.__dict__.get("_votes")
        if memo is None:
            memo = self.__dict__["_votes"] = np.argmax(self.probabilities, axis=1)
        return memo

    @property
    def finite(self) -> bool:
        memo: bool | None = self.__dict__.get("_finite")
        if memo is None:
            memo = self.__dict__["_finite"] = bool(np.all(np.isfinite(self.probabilities)))
        return memo


@dataclass(frozen=True)
class Fused:
    """Per row: the fused distribution (or values, for regression), the chosen label, its
    confidence, the share of members agreeing, and the rule that decided, in words."""

    probabilities: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    agreement: np.ndarray
    rules: list[str]


@dataclass(frozen=True)
class Stacker:
    """A served model a strategy asks (a stacker, a gate): its name, the members it was
    trained on, in order, and its input's name."""

    model: str
    members: tuple[str, ...]
    input_name: str = "input"


@dataclass(frozen=True)
class Task:
    """What a strategy may have besides the scores, each filled in only where its `needs`
    say so: the task's inputs, the served model of its `needs.model` role, the members'
    estimated reliability."""

    capability: str
    ctx: CallContext
    inputs: Mapping[str, np.ndarray]
    client: MemberClient | None = None
    model: Stacker | None = None
    reliability: Estimate | None = None


class FusionStrategy(Protocol):
    """A pure function of the members' scores (`needs.scores_only`)."""

    name: str
    needs: Needs

    def fuse(self, members: Sequence[MemberScores]) -> Fused: ...


class TaskStrategy(Protocol):
    """A strategy that needs more than the scores (its `needs` say what), given in `task`."""

    name: str
    needs: Needs

    async def fuse_task(self, members: Sequence[MemberScores], task: Task) -> Fused: ...


Strategy = FusionStrategy | TaskStrategy


def from_scores(strategy: Strategy) -> TypeGuard[FusionStrategy]:
    """Whether `strategy` fuses from the scores alone (else it takes the task). Asked of the
    method, not by isinstance on a runtime-checkable Protocol, which walks the protocol's
    attributes on every call (about 10 us, twice a task on the fuser's hot path)."""
    return not hasattr(strategy, "fuse_task")


def check_members(members: Sequence[MemberScores], n_classes: int | None = None) -> tuple[int, int]:
    """(rows, classes) shared by all members; InvalidArgument naming the member otherwise."""
    if not members:
        raise InvalidArgument("members: empty; fusion needs at least one member's output")
    rows, classes = members[0].probabilities.shape
    for m in members:
        p = m.probabilities
        if p.ndim != 2 or p.shape != (rows, classes):
            raise InvalidArgument(
                f"members[{m.model!r}].probabilities: expected shape [{rows}, {classes}] "
                f"like the first member, got {list(p.shape)}"
            )
        if not m.finite:
            raise InvalidArgument(
                f"members[{m.model!r}].probabilities: contains NaN or infinity; "
                "a member that cannot score must be left out, not sent"
            )
        if not math.isfinite(m.weight) or m.weight < 0:
            raise InvalidArgument(f"members[{m.model!r}].weight: expected >= 0, got {m.weight}")
    if n_classes is not None and classes != n_classes:
        raise InvalidArgument(
            f"members: {classes} probability columns, but {n_classes} labels were given"
        )
    return rows, classes


def agreement(members: Sequence[MemberScores], labels: np.ndarray) -> np.ndarray:
    """Per row, the share of members whose own top class is the fused label."""
    votes = np.stack([m.votes for m in members])
    return np.asarray((votes == labels[None, :]).mean(axis=0), dtype=np.float64)


def member_weights(members: Sequence[MemberScores]) -> np.ndarray:
    """The members' weights as float64; all 1 when every weight is 0."""
    weights = np.array([m.weight for m in members], dtype=np.float64)
    return weights if weights.sum() > 0 else np.ones_like(weights)


def weighted_mean(members: Sequence[MemberScores]) -> np.ndarray:
    """The members' probabilities averaged under `member_weights`, float64 [rows, classes]."""
    return weighted_average(np.stack([m.probabilities for m in members]), member_weights(members))


def weighted_average(stacked: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """`stacked` [members, rows, classes] averaged under `weights` [members], float64.

    One matrix product; `np.tensordot` gives the same numbers but costs several times as much
    on the one-row tasks the fuser mostly sees.
    """
    flat = stacked.astype(np.float64, copy=False).reshape(len(weights), -1)
    return np.dot((weights / weights.sum())[None, :], flat).reshape(stacked.shape[1:])
