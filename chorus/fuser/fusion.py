"""FuseCall -> FuseReply: weigh the members, run the strategy, settle conflicts, explain.

I/O stays outside: whatever this needs from NATS (learned weights, a stacking or arbiter
model, the review stream) comes in through `Tools`, so the same code serves the fuser
service and the offline fusion report.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from chorus.codec import from_tensor, to_tensor
from chorus.context import CallContext
from chorus.errors import FailedPrecondition, InvalidArgument
from chorus.fuser import kinds, policies, strategies
from chorus.fuser.conflict import ConflictThresholds
from chorus.fuser.conformal import DEFAULT_COVERAGE
from chorus.fuser.members import MemberClient
from chorus.fuser.policies import Case, Outcome, Settings
from chorus.fuser.reliability import MIN_ROWS, Estimate
from chorus.fuser.strategies import Fused, MemberScores
from chorus.fuser.strategies.base import agreement, check_members
from chorus.fuser.strategies.gated import gate_input, gated_fuse
from chorus.pb import task_pb2, wire_pb2
from chorus.wire import DEFAULT_POLICY, REGRESSION_POLICY

STACKING = "stacking"
GATED = "gated"
DAWID_SKENE = "dawid_skene"
REGRESSION_NAMES = frozenset(s.name for s in strategies.REGRESSION)


@dataclass(frozen=True)
class Stacker:
    model: str
    members: tuple[str, ...]
    input_name: str = "input"


@dataclass
class Tools:
    client: MemberClient | None = None
    weights: Callable[[str], dict[str, float]] = lambda capability: {}
    stacker: Callable[[str], Stacker | None] = lambda capability: None
    gate: Callable[[str], Stacker | None] = lambda capability: None
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
    if regression and name not in REGRESSION_NAMES:
        raise InvalidArgument(
            f"fusion_policy: {name!r} fuses classifiers, but capability {call.capability!r} is "
            f"a regression; use one of {sorted(REGRESSION_NAMES)}"
        )
    if not regression and name in REGRESSION_NAMES:
        raise InvalidArgument(
            f"fusion_policy: {name!r} fuses regression values, but capability "
            f"{call.capability!r} is a classification; use e.g. {DEFAULT_POLICY!r}"
        )
    return name


def _fuse_fn(
    name: str,
    capability: str,
    tools: Tools,
    ctx: CallContext,
    inputs: dict[str, np.ndarray],
) -> Callable[[Sequence[MemberScores]], Awaitable[Fused]]:
    if name == GATED:
        return _gated_fn(capability, tools, ctx, inputs)
    if name == DAWID_SKENE:
        return _dawid_skene_fn(capability, tools)
    if name != STACKING:
        strategy = strategies.get(name)

        async def plain(members: Sequence[MemberScores]) -> Fused:
            return strategy.fuse(members)

        return plain

    async def stacked(members: Sequence[MemberScores]) -> Fused:
        found = _served_model(STACKING, "stack", tools.stacker(capability), tools, capability)
        fallback = _without_missing(STACKING, found, members)
        if fallback is not None:
            return fallback
        by_name = {m.model: m for m in members}
        assert tools.client is not None
        x = np.hstack([by_name[n].probabilities for n in found.members]).astype(np.float32)
        probs = await tools.client.scores(
            found.model, {found.input_name: x}, scores_output="probabilities",
            augment=False, ctx=ctx,
        )  # fmt: skip
        labels = np.argmax(probs, axis=1)
        confidence = probs[np.arange(len(labels)), labels]
        rules = [
            f"stacking: {found.model} over {list(found.members)} ({c:.3f})" for c in confidence
        ]
        return Fused(probs, labels, confidence, agreement(members, labels), rules)

    return stacked


def _served_model(
    strategy: str, prefix: str, found: Stacker | None, tools: Tools, capability: str
) -> Stacker:
    """The model a strategy asks (stacker, gate), or why it cannot."""
    if found is None or tools.client is None:
        raise FailedPrecondition(
            f"fusion_policy: {strategy} needs a model with capability "
            f"'{prefix}:{capability}'; none is running"
        )
    return found


def _without_missing(
    strategy: str, found: Stacker, members: Sequence[MemberScores]
) -> Fused | None:
    """The soft vote, saying why, when a member the model was trained on did not answer."""
    present = {m.model for m in members}
    missing = [n for n in found.members if n not in present]
    if not missing:
        return None
    fallback = strategies.get(DEFAULT_POLICY).fuse(members)
    rules = [f"{strategy}: {missing} missing, so {r}" for r in fallback.rules]
    return Fused(
        fallback.probabilities, fallback.labels, fallback.confidence, fallback.agreement, rules
    )


def _gated_fn(
    capability: str, tools: Tools, ctx: CallContext, inputs: dict[str, np.ndarray]
) -> Callable[[Sequence[MemberScores]], Awaitable[Fused]]:
    """Per-row member weights from the gate model (served like any model), then a weighted
    mean; falls back to the soft vote, and says so, when a member the gate knows is missing."""

    async def gated(members: Sequence[MemberScores]) -> Fused:
        found = _served_model(GATED, "gate", tools.gate(capability), tools, capability)
        if len(inputs) != 1:
            raise InvalidArgument("inputs: gated fusion needs the task's single input tensor")
        fallback = _without_missing(GATED, found, members)
        if fallback is not None:
            return fallback
        assert tools.client is not None
        by_name = {m.model: m for m in members}
        ordered = [by_name[n] for n in found.members]
        pixels = next(iter(inputs.values()))
        x = gate_input(pixels, [m.probabilities for m in ordered])
        weights = await tools.client.scores(
            found.model, {found.input_name: x}, scores_output="probabilities",
            augment=False, ctx=ctx,
        )  # fmt: skip
        return gated_fuse(ordered, weights)

    return gated


def _dawid_skene_fn(
    capability: str, tools: Tools
) -> Callable[[Sequence[MemberScores]], Awaitable[Fused]]:
    """Each row's posterior over the true label under the members' confusion matrices,
    estimated from their votes alone (fuser.reliability), with each member's probabilities
    as its evidence; the majority vote, saying so, until enough votes have been seen."""

    async def dawid_skene(members: Sequence[MemberScores]) -> Fused:
        _, classes = check_members(members)
        found = tools.reliability(capability)
        seen = found.counts.rows if found is not None else 0.0
        if found is None or seen < MIN_ROWS:
            fallback = strategies.get("majority_vote").fuse(members)
            rules = [
                f"dawid_skene: {seen:.0f} rows of votes seen (needs {MIN_ROWS}), so {r}"
                for r in fallback.rules
            ]
            return Fused(fallback.probabilities, fallback.labels, fallback.confidence,
                         fallback.agreement, rules)  # fmt: skip
        counts = found.aligned([m.model for m in members], classes)
        posterior = counts.posterior_from_scores([m.probabilities for m in members])
        labels = np.argmax(posterior, axis=1)
        confidence = posterior[np.arange(len(labels)), labels]
        accuracy = ", ".join(
            f"{m.model} {a:.2f}" for m, a in zip(members, counts.accuracy(), strict=True)
        )
        rules = [
            f"dawid_skene: posterior {c:.3f} from {seen:.0f} rows of votes "
            f"(estimated accuracy {accuracy})"
            for c in confidence
        ]
        return Fused(posterior, labels, confidence, agreement(members, labels), rules)

    return dawid_skene


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
    fuse_fn = _fuse_fn(name, call.capability, tools, ctx, inputs)
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
    asks_arbiter = policy.name == "conformal" and call.conflict.then == "arbiter"
    if (policy.name in ("negotiate", "arbiter") or asks_arbiter) and not inputs:
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
        calibration=tools.conformal(call.capability, name) if policy.name == "conformal" else None,
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
