"""What each fusion strategy and conflict policy needs besides the members' scores, by name.

The fuser's strategies and policies carry these as their `needs`, and the router asks here
whether a task's fuser must receive the task's inputs: the two services meet only on the
proto and NATS subjects, so the declarations live in the core both import, once. A strategy
or policy added later is declared by its registration (`chorus.fuser.strategies.register`,
`chorus.fuser.policies.register`); one whose fuser must receive the inputs is listed here as
well, since a router never imports the fuser's code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Needs:
    inputs: bool = False
    """It reads the task's input tensors and cannot work without them."""
    forwards_inputs: bool = False
    """It passes the task's inputs on (escalate: to people), so they are sent; none is refused."""
    model: str = ""
    """The role of the served model it asks (`stack`, `gate`, `arbiter`): the model with
    capability `<role>:<capability>`."""
    reliability: bool = False
    """The members' confusion matrices, estimated from their votes (fuser.reliability)."""
    calibration: bool = False
    """Held-out rows' nonconformity scores for the capability and strategy (fuser.conformal)."""
    follow_ups: tuple[str, ...] = ()
    """The policies it may hand the rows it leaves conflicted to (`conflict.then`)."""
    stackable: bool = False
    """Row by row from the scores alone: tasks fused alike may share one stacked pass."""
    regression: bool = False
    """A strategy that fuses members' values (regression), not class probabilities."""

    @property
    def scores_only(self) -> bool:
        """A pure function of the members' scores: nothing asked, nothing read."""
        return not (self.inputs or self.model or self.reliability or self.calibration)

    @property
    def sends_inputs(self) -> bool:
        """The fuser must receive the task's inputs."""
        return self.inputs or self.forwards_inputs

    def then(self, name: str, follow_up: Needs | None) -> Needs:
        """These needs with those of the policy `name` its conflicted rows go on to, if it
        takes that follow-up."""
        if name not in self.follow_ups or follow_up is None:
            return self
        return replace(
            self,
            inputs=self.inputs or follow_up.inputs,
            forwards_inputs=self.forwards_inputs or follow_up.forwards_inputs,
            model=self.model or follow_up.model,
            stackable=self.stackable and follow_up.stackable,
        )


_VOTE = Needs(stackable=True)
_VALUES = Needs(regression=True)

STRATEGIES: dict[str, Needs] = {
    "soft_vote": _VOTE,
    "majority_vote": _VOTE,
    "weighted_vote": _VOTE,
    "max_confidence": _VOTE,
    "borda": _VOTE,
    "threshold": _VOTE,
    "stacking": Needs(model="stack"),
    "gated": Needs(inputs=True, model="gate"),
    "dawid_skene": Needs(reliability=True),
    "weighted_mean": _VALUES,
    "median": _VALUES,
}
"""Fusion strategies (`fusion_policy`) by name."""

CONFLICT_POLICIES: dict[str, Needs] = {
    "none": Needs(stackable=True),
    "quorum": Needs(),
    "negotiate": Needs(inputs=True),
    "arbiter": Needs(inputs=True, model="arbiter"),
    "escalate": Needs(forwards_inputs=True),
    "conformal": Needs(calibration=True, follow_ups=("arbiter", "escalate")),
}
"""Conflict policies (`conflict.name`; empty is `none`) by name."""


def strategy(name: str) -> Needs | None:
    return STRATEGIES.get(name)


def conflict_policy(name: str, then: str = "") -> Needs | None:
    """The policy's needs with its follow-up's (`then`) where it hands rows on."""
    found = CONFLICT_POLICIES.get(name or "none")
    return None if found is None else found.then(then, CONFLICT_POLICIES.get(then))


def sends_inputs(strategy_name: str, conflict: str, then: str = "") -> bool:
    """Whether a task fused so must carry its inputs to the fuser; unknown names need nothing
    (the fuser refuses them)."""
    found = [strategy(strategy_name), conflict_policy(conflict, then)]
    return any(n is not None and n.sends_inputs for n in found)


def stackable(strategy_name: str, conflict: str, then: str = "") -> bool:
    """Whether tasks fused so may share one pass row by row: the fuser's stacked passes, and
    a group's KServe calls joined into one task (chorus.group.joining)."""
    found = [strategy(strategy_name), conflict_policy(conflict, then)]
    return all(n is not None and n.stackable for n in found)


def declare(table: dict[str, Needs], name: str, needs: Needs) -> Needs:
    """Declares `name`'s needs in `table` (STRATEGIES or CONFLICT_POLICIES); the same name
    declared with other needs is a mistake, refused."""
    known = table.setdefault(name, needs)
    if known != needs:
        raise ValueError(f"{name!r} is declared with {known}, not {needs}")
    return needs
