"""What a conflict policy is given and what it gives back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from chorus.core.context import CallContext
from chorus.core.needs import Needs
from chorus.fuser.conflict import ConflictReport, ConflictThresholds, detect, spread_limit
from chorus.fuser.conformal import DEFAULT_COVERAGE
from chorus.fuser.members import MemberClient
from chorus.fuser.strategies import Fused, MemberScores

FuseFn = Callable[[Sequence[MemberScores]], Awaitable[Fused]]
ReviewFn = Callable[[list[int], Fused, Sequence[MemberScores]], Awaitable[None]]


@dataclass(frozen=True)
class Settings:
    quorum: int = 0
    """Members that must agree; 0 means a strict majority."""
    max_rounds: int = 2
    concede_below: float = 0.9
    """Only members less confident than this in a dissenting answer are asked again."""
    arbiter: str = ""
    coverage: float = DEFAULT_COVERAGE
    """conformal: the probability that a row's set (interval) holds the truth."""
    then: str = ""
    """conformal: what its conflicted rows get next ("" flags them, "arbiter", "escalate")."""


@dataclass
class Case:
    """One fused batch and everything a policy may use to settle its conflicted rows."""

    capability: str
    members: list[MemberScores]
    inputs: dict[str, np.ndarray]
    scores_outputs: dict[str, str]
    fuse: FuseFn
    thresholds: ConflictThresholds
    settings: Settings
    ctx: CallContext
    client: MemberClient | None = None
    review: ReviewFn | None = None
    regression: bool = False
    strategy: str = ""
    calibration: np.ndarray | None = None
    """conformal: the nonconformity scores of held-out rows for this capability and strategy."""


@dataclass
class Outcome:
    fused: Fused
    members: list[MemberScores]
    report: ConflictReport
    status: list[str]
    rules: list[str]
    rounds: list[int] = field(default_factory=list)
    coverage: float = 0.0
    calibration_rows: int = 0
    prediction_sets: list[list[int]] | None = None
    intervals: tuple[np.ndarray, np.ndarray] | None = None
    """Conformal answers: per row the label set, or (lower, upper) [rows, k] for regression."""

    def __post_init__(self) -> None:
        if not self.rounds:
            self.rounds = [0] * len(self.status)


class ConflictPolicy(Protocol):
    name: str
    needs: Needs

    async def resolve(self, case: Case, fused: Fused) -> Outcome: ...


def first_pass(case: Case, fused: Fused) -> Outcome:
    """Rows as the strategy left them: agreed, or conflicted and unsettled."""
    report = detect(case.members, fused, case.thresholds, regression=case.regression)
    status = ["conflicted" if c else "agreed" for c in report.conflicted]
    rules = [
        f"{rule}; conflicted: {why}" if c else rule
        for rule, c, why in zip(fused.rules, report.conflicted, report.reasons, strict=True)
    ]
    return Outcome(fused, list(case.members), report, status, rules)


class ActsOnConflicts:
    """A policy that leaves agreed rows to the first pass and decides only the conflicted
    ones; another policy (negotiation) can hand it the rows it could not settle."""

    async def resolve(self, case: Case, fused: Fused) -> Outcome:
        out = first_pass(case, fused)
        return await self.decide(
            case, out, [r for r, s in enumerate(out.status) if s == "conflicted"]
        )

    async def decide(self, case: Case, out: Outcome, rows: list[int]) -> Outcome:
        raise NotImplementedError


def rows_of(inputs: dict[str, np.ndarray], rows: list[int]) -> dict[str, np.ndarray]:
    return {name: np.ascontiguousarray(a[rows]) for name, a in inputs.items()}


def backing(case: Case, fused: Fused) -> np.ndarray:
    """Per row, how many members stand behind the fused answer: those voting its label, or
    for regression those within the conflict tolerance of the fused value."""
    if case.regression:
        values = np.stack([m.probabilities for m in case.members])  # [members, rows, k]
        distance = np.abs(values - fused.probabilities[None]).mean(axis=2)
        limit = spread_limit(case.thresholds, fused.probabilities)
        return np.asarray((distance <= limit[None]).sum(axis=0))
    votes = np.stack([m.votes for m in case.members])
    return np.asarray((votes == fused.labels[None, :]).sum(axis=0))
