"""FuseCall -> FuseReply: weigh the members, run the strategy, settle conflicts, explain.

I/O stays outside: whatever this needs from NATS (learned weights, a stacking or arbiter
model, the review stream) comes in through `Tools`, so the same code serves the fuser
service and the offline fusion report.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext
from chorus.core.errors import InvalidArgument
from chorus.core.wire import DEFAULT_POLICY, REGRESSION_POLICY
from chorus.fuser import kinds, policies, strategies
from chorus.fuser.conflict import ConflictThresholds
from chorus.fuser.conformal import DEFAULT_COVERAGE
from chorus.fuser.members import MemberClient
from chorus.fuser.policies import Case, Outcome, Settings
from chorus.fuser.reliability import Estimate
from chorus.fuser.strategies import (
    Fused,
    MemberScores,
    Stacker,
    Strategy,
    Task,
    TaskStrategy,
    from_scores,
)
from chorus.pb import task_pb2, wire_pb2


@dataclass
class Tools:
    client: MemberClient | None = None
    weights: Callable[[str], dict[str, float]] = lambda capability: {}
    served: Callable[[str, str], Stacker | None] = lambda role, capability: None
    """The live model serving a role (a strategy's `needs.model`: stack, gate) for a
    capability, over its members."""
    arbiter: Callable[[str], str | None] = lambda capability: None
    review: Callable[[wire_pb2.ReviewCase], Awaitable[None]] | None = None
    thresholds: ConflictThresholds = field(default_factory=ConflictThresholds)
    conformal: Callable[[str, str], np.ndarray | None] = lambda capability, strategy: None
    reliability: Callable[[str], Estimate | None] = lambda capability: None
    temperatures: Callable[[str], dict[str, float]] = lambda capability: {}
    coverage: float = DEFAULT_COVERAGE


def decode_members(
    call: wire_pb2.FuseCall,
    learned: dict[str, float],
    temperatures: dict[str, float] | None = None,
) -> list[MemberScores]:
    """Members as sent; a weight of 0 on the wire means "use the learned weight", and a
    temperature learned from feedback replaces the manifest's."""
    members = []
    seen: set[str] = set()
    for m in call.members:
        if m.model in seen:
            raise InvalidArgument(f"members: model {m.model!r} appears twice")
        seen.add(m.model)
        where = f"members[{m.model!r}].probabilities"
        temperature = (temperatures or {}).get(m.model) or m.temperature or 1.0
        probs = kinds.as_scores(
            from_tensor(m.probabilities, field=where), m.output_kind, temperature, field=where
        )
        weight = m.weight if m.weight > 0 else learned.get(m.model, 1.0)
        members.append(
            MemberScores(
                m.model,
                probs,
                weight,
                m.version,
                m.priority,
                m.output_kind or kinds.PROBABILITIES,
                temperature,
            )
        )
    return members


def _strategy_name(call: wire_pb2.FuseCall, regression: bool) -> str:
    """The policy asked for, or the kind's default; a strategy of the other kind is refused."""
    name = call.policy or (REGRESSION_POLICY if regression else DEFAULT_POLICY)
    found = strategies.STRATEGIES.get(name)
    if regression and (found is None or not found.needs.regression):
        raise InvalidArgument(
            f"fusion_policy: {name!r} fuses classifiers, but capability {call.capability!r} is "
            f"a regression; use one of {strategies.names(regression=True)}"
        )
    if not regression and found is not None and found.needs.regression:
        raise InvalidArgument(
            f"fusion_policy: {name!r} fuses regression values, but capability "
            f"{call.capability!r} is a classification; use e.g. {DEFAULT_POLICY!r}"
        )
    return name


def _fuse_fn(
    strategy: Strategy,
    capability: str,
    tools: Tools,
    ctx: CallContext,
    inputs: dict[str, np.ndarray],
) -> Callable[[Sequence[MemberScores]], Awaitable[Fused]]:
    """The strategy as the conflict policies call it, given what its `needs` ask for."""
    if from_scores(strategy):
        plain = strategy

        async def scores_only(members: Sequence[MemberScores]) -> Fused:
            return plain.fuse(members)

        return scores_only
    by_task = cast(TaskStrategy, strategy)
    needs = by_task.needs
    task = Task(
        capability=capability,
        ctx=ctx,
        inputs=inputs,
        client=tools.client,
        model=tools.served(needs.model, capability) if needs.model else None,
        reliability=tools.reliability(capability) if needs.reliability else None,
    )
    return functools.partial(by_task.fuse_task, task=task)


async def fuse(
    call: wire_pb2.FuseCall, ctx: CallContext, tools: Tools
) -> tuple[wire_pb2.FuseReply, Outcome]:
    members = decode_members(
        call, tools.weights(call.capability), tools.temperatures(call.capability)
    )
    if not members:
        raise InvalidArgument("members: empty; fusion needs at least one member's output")
    kind = kinds.task_kind([m.model for m in members], [m.output_kind for m in members])
    regression = kind == kinds.REGRESSION
    name = _strategy_name(call, regression)
    inputs = {t.name: from_tensor(t) for t in call.inputs}
    fuse_fn = _fuse_fn(strategies.get(name), call.capability, tools, ctx, inputs)
    fused = await fuse_fn(members)
    if not regression and call.labels and len(call.labels) != fused.probabilities.shape[1]:
        raise InvalidArgument(
            f"labels: {len(call.labels)} given for {fused.probabilities.shape[1]} "
            "probability columns"
        )
    policy = policies.get(call.conflict.name)
    settings = Settings(
        quorum=call.conflict.quorum,
        max_rounds=call.conflict.max_rounds or Settings.max_rounds,
        concede_below=call.conflict.concede_below or Settings.concede_below,
        arbiter=call.conflict.arbiter or tools.arbiter(call.capability) or "",
        coverage=call.conflict.coverage or tools.coverage,
        then=call.conflict.then,
    )
    then = call.conflict.then
    needs = policy.needs.then(then, policies.needs_of(then))
    if needs.inputs and not inputs:
        raise InvalidArgument(f"inputs: conflict policy {policy.name!r} needs the task's inputs")

    async def review(rows: list[int], fused: Fused, members: Sequence[MemberScores]) -> None:
        assert tools.review is not None
        await tools.review(_review_case(call, rows, fused, members))

    case = Case(
        capability=call.capability,
        members=members,
        inputs=inputs,
        scores_outputs={m.model: m.scores_output or "probabilities" for m in call.members},
        fuse=fuse_fn,
        thresholds=tools.thresholds,
        settings=settings,
        ctx=ctx,
        client=tools.client,
        review=review if tools.review is not None else None,
        regression=regression,
        strategy=name,
        calibration=tools.conformal(call.capability, name) if needs.calibration else None,
    )
    outcome = await policy.resolve(case, fused)
    return reply_for(name, policy.name, outcome), outcome


def _rows(outcome: Outcome) -> list[task_pb2.RowDecision]:
    if outcome.report.spread is not None:
        return _regression_rows(outcome)
    fused, report = outcome.fused, outcome.report
    votes = [m.votes for m in outcome.members]
    margin = report.margin if report.margin is not None else np.zeros(len(fused.labels))
    entropy = report.entropy if report.entropy is not None else np.zeros(len(fused.labels))
    return [
        task_pb2.RowDecision(
            label=int(fused.labels[r]),
            confidence=float(fused.confidence[r]),
            agreement=float(fused.agreement[r]),
            votes={m.model: int(v[r]) for m, v in zip(outcome.members, votes, strict=True)},
            rule=outcome.rules[r],
            status=outcome.status[r],
            round=outcome.rounds[r],
            margin=float(margin[r]),
            entropy=float(entropy[r]),
            prediction_set=outcome.prediction_sets[r] if outcome.prediction_sets else None,
        )
        for r in range(len(fused.labels))
    ]


def _regression_rows(outcome: Outcome) -> list[task_pb2.RowDecision]:
    fused, spread = outcome.fused, outcome.report.spread
    assert spread is not None
    values = [m.probabilities[:, 0] for m in outcome.members]
    return [
        task_pb2.RowDecision(
            label=-1,
            confidence=float(fused.confidence[r]),
            agreement=float(fused.agreement[r]),
            rule=outcome.rules[r],
            status=outcome.status[r],
            round=outcome.rounds[r],
            value=[float(v) for v in fused.probabilities[r]],
            spread=float(spread[r]),
            member_values={
                m.model: float(v[r]) for m, v in zip(outcome.members, values, strict=True)
            },
            lower=outcome.intervals[0][r].tolist() if outcome.intervals else None,
            upper=outcome.intervals[1][r].tolist() if outcome.intervals else None,
        )
        for r in range(fused.probabilities.shape[0])
    ]


def reply_for(strategy: str, policy: str, outcome: Outcome) -> wire_pb2.FuseReply:
    return wire_pb2.FuseReply(
        policy=strategy,
        probabilities=to_tensor("probabilities", outcome.fused.probabilities.astype(np.float32)),
        rows=_rows(outcome),
        weights={m.model: float(m.weight) for m in outcome.members},
        conflict_policy=policy,
        temperatures={m.model: m.temperature for m in outcome.members if m.temperature != 1.0},
        coverage=outcome.coverage,
        calibration_rows=outcome.calibration_rows,
    )


def _review_case(
    call: wire_pb2.FuseCall, rows: list[int], fused: Fused, members: Sequence[MemberScores]
) -> wire_pb2.ReviewCase:
    case = wire_pb2.ReviewCase(
        task_id=call.task_id,
        capability=call.capability,
        labels=call.labels,
        inputs=call.inputs,
        review_rows=rows,
    )
    for m in members:
        case.members.add(
            model=m.model, version=m.version, weight=m.weight,
            probabilities=to_tensor("probabilities", m.probabilities.astype(np.float32)),
        )  # fmt: skip
    for r in range(len(fused.labels)):
        case.rows.add(label=int(fused.labels[r]), confidence=float(fused.confidence[r]),
                      agreement=float(fused.agreement[r]), rule=fused.rules[r])  # fmt: skip
    return case
