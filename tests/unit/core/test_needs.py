"""The router asks chorus.core.needs whether a task's fuser needs its inputs: the same answer the
names it once wrote out gave, for every strategy, policy and follow-up."""

from __future__ import annotations

import itertools

import pytest

from chorus.core import needs

OLD_NEEDS_INPUTS = ("negotiate", "arbiter", "escalate")
OLD_STRATEGIES_NEEDING_INPUTS = ("gated",)


def _old(strategy: str, conflict: str, then: str) -> bool:
    follow_up = conflict == "conformal" and then in OLD_NEEDS_INPUTS
    return conflict in OLD_NEEDS_INPUTS or follow_up or strategy in OLD_STRATEGIES_NEEDING_INPUTS


@pytest.mark.parametrize(
    ("strategy", "conflict", "then"),
    list(
        itertools.product(
            [*needs.STRATEGIES, "nope"],
            [*needs.CONFLICT_POLICIES, "", "nope"],
            ["", "none", "arbiter", "escalate", "quorum", "nope"],
        )
    ),
)
def test_sends_inputs_as_the_router_did(strategy: str, conflict: str, then: str) -> None:
    assert needs.sends_inputs(strategy, conflict, then) == _old(strategy, conflict, then)


def test_a_follow_up_conformal_refuses_brings_no_inputs() -> None:
    """The one change: conformal then negotiate, which the fuser refuses (not a follow-up
    conformal takes), no longer carries the inputs there to be refused."""
    assert _old("soft_vote", "conformal", "negotiate")
    assert not needs.sends_inputs("soft_vote", "conformal", "negotiate")


def test_conformal_takes_the_needs_of_its_follow_up_only() -> None:
    arbiter = needs.conflict_policy("conformal", "arbiter")
    assert arbiter is not None and arbiter.inputs and arbiter.model == "arbiter"
    assert arbiter.calibration
    assert needs.conflict_policy("conformal", "negotiate") == needs.CONFLICT_POLICIES["conformal"]
    assert needs.conflict_policy("quorum", "arbiter") == needs.CONFLICT_POLICIES["quorum"]
    assert needs.conflict_policy("nope") is None


def test_what_may_be_stacked_and_what_needs_no_more_than_scores() -> None:
    stackable = {n for n, d in needs.STRATEGIES.items() if d.stackable}
    assert stackable == {
        "soft_vote", "majority_vote", "weighted_vote", "max_confidence", "borda", "threshold",
    }  # fmt: skip
    asks = {n for n, d in needs.STRATEGIES.items() if not d.scores_only}
    assert asks == {"stacking", "gated", "dawid_skene"}
    assert {n for n, d in needs.STRATEGIES.items() if d.regression} == {"weighted_mean", "median"}
    assert {n for n, d in needs.CONFLICT_POLICIES.items() if d.stackable} == {"none"}


def test_a_task_may_share_a_pass_only_when_its_strategy_and_conflict_policy_both_may() -> None:
    assert needs.stackable("soft_vote", "")
    assert needs.stackable("borda", "none")
    assert not needs.stackable("soft_vote", "negotiate")
    assert not needs.stackable("weighted_mean", "none")
    assert not needs.stackable("stacking", "none")
    assert not needs.stackable("nope", "none")
