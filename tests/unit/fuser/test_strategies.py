"""The fusion strategies beyond soft and majority vote, on hand-made inputs with known answers,
and every classification strategy on the real held-out digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chorus.core.errors import InvalidArgument
from chorus.fuser import strategies
from chorus.fuser.strategies import (
    CLASSIFICATION,
    REGRESSION,
    STRATEGIES,
    FusionStrategy,
    MemberScores,
)
from chorus.fuser.strategies.borda import Borda
from chorus.fuser.strategies.max_confidence import MaxConfidence
from chorus.fuser.strategies.median import Median
from chorus.fuser.strategies.threshold import Threshold
from chorus.fuser.strategies.weighted_mean import WeightedMean, weighted_spread
from chorus.fuser.strategies.weighted_vote import WeightedVote


def m(name: str, *rows: list[float], weight: float = 1.0, priority: int = 0) -> MemberScores:
    return MemberScores(name, np.array(rows, dtype=np.float32), weight, priority=priority)


# --- registry ----------------------------------------------------------------------------


def test_registry_keeps_old_and_adds_new() -> None:
    assert set(STRATEGIES) == {
        "soft_vote",
        "majority_vote",
        "weighted_vote",
        "max_confidence",
        "borda",
        "threshold",
        "stacking",
        "gated",
        "dawid_skene",
        "weighted_mean",
        "median",
    }
    assert {s.name for s in REGRESSION} == {"weighted_mean", "median"}
    threshold = strategies.get("threshold")
    assert isinstance(threshold, Threshold)
    assert threshold.min_confidence == 0.6


# --- weighted vote -----------------------------------------------------------------------


def test_weighted_vote_no_tie_reports_weight() -> None:
    out = WeightedVote().fuse(
        [
            m("a", [0.6, 0.3, 0.1], weight=1.5),
            m("b", [0.2, 0.7, 0.1], weight=0.9),
            m("c", [0.5, 0.4, 0.1], weight=0.6),
        ]
    )
    # votes 0, 1, 0 -> totals [1.5 + 0.6, 0.9, 0] = [2.1, 0.9, 0] of 3.0
    assert out.labels.tolist() == [0]
    assert out.rules == ["weighted_vote: 2.10 of 3.00 weight"]
    np.testing.assert_allclose(out.probabilities, [[0.7, 0.3, 0.0]], rtol=1e-6)
    assert out.confidence[0] == pytest.approx(0.7)
    assert out.agreement[0] == pytest.approx(2 / 3)


def test_weighted_vote_trusted_member_outvotes_a_majority() -> None:
    out = WeightedVote().fuse(
        [m("a", [0.9, 0.1], weight=3.0), m("b", [0.4, 0.6]), m("c", [0.3, 0.7])]
    )
    # majority vote says 1 (two votes to one); by weight it is 3.0 for 0 against 2.0 for 1
    assert out.labels.tolist() == [0]
    assert out.rules == ["weighted_vote: 3.00 of 5.00 weight"]


def test_weighted_vote_tie_broken_by_calibrated_confidence() -> None:
    six = [0.05, 0.05, 0.05, 0.5, 0.05, 0.3], [0.05, 0.05, 0.05, 0.2, 0.05, 0.6]
    out = WeightedVote().fuse([m("a", six[0], weight=1.5), m("b", six[1], weight=1.5)])
    # a votes 3, b votes 5, 1.5 weight each; calibrated: class 3 (0.5 + 0.2) / 2 = 0.35,
    # class 5 (0.3 + 0.6) / 2 = 0.45 -> 5
    assert out.labels.tolist() == [5]
    assert out.rules == [
        "weighted_vote: tie at 1.50 weight between [3, 5], broken by calibrated confidence"
    ]
    np.testing.assert_allclose(out.probabilities[0, [3, 5]], [0.5, 0.5])


def test_weighted_vote_calibrated_confidence_counts_non_voters() -> None:
    out = WeightedVote().fuse(
        [
            m("a", [0.8, 0.2, 0.0]),
            m("b", [0.3, 0.7, 0.0]),
            m("c", [0.0, 0.45, 0.55], weight=0.5),
        ]
    )
    # totals [1, 1, 0.5]: 0 and 1 tie. The two voters alone favour 0 (1.1 vs 0.9), but
    # calibrated confidence uses all members weighted: class 0 (0.8 + 0.3 + 0.5*0) / 2.5 = 0.44,
    # class 1 (0.2 + 0.7 + 0.5*0.45) / 2.5 = 0.45 -> 1
    assert out.labels.tolist() == [1]
    assert "broken by calibrated confidence" in out.rules[0]


def test_weighted_vote_tie_broken_by_model_priority() -> None:
    # weights tie (1 each) and calibrated confidence ties ((0.7 + 0.3) / 2 = 0.5 for both)
    members = [m("a", [0.7, 0.3], priority=0), m("b", [0.3, 0.7], priority=5)]
    out = WeightedVote().fuse(members)
    assert out.labels.tolist() == [1]  # b has the higher priority and voted 1
    assert out.rules == [
        "weighted_vote: tie at 1.00 weight between [0, 1], broken by model priority"
    ]
    flipped = [m("a", [0.7, 0.3], priority=5), m("b", [0.3, 0.7], priority=0)]
    assert WeightedVote().fuse(flipped).labels.tolist() == [0]


def test_weighted_vote_tie_broken_by_lowest_class_index() -> None:
    # everything ties; b (listed second) votes the lower index, which wins
    out = WeightedVote().fuse([m("a", [0.2, 0.3, 0.5]), m("b", [0.5, 0.3, 0.2])])
    # a votes 2, b votes 0; calibrated class 0 (0.2 + 0.5) / 2 = class 2 (0.5 + 0.2) / 2 = 0.35
    assert out.labels.tolist() == [0]
    assert out.rules == [
        "weighted_vote: tie at 1.00 weight between [0, 2], broken by lowest class index"
    ]


def test_weighted_vote_weight_only_member_priority_does_not_count() -> None:
    out = WeightedVote().fuse(
        [m("a", [0.7, 0.3]), m("b", [0.3, 0.7]), m("muted", [0.2, 0.8], weight=0.0, priority=9)]
    )
    # muted has weight 0: totals [1, 1], calibrated [0.5, 0.5], and its priority 9 is ignored,
    # so a and b (priority 0 both) tie to the lowest index
    assert out.labels.tolist() == [0]
    assert "broken by lowest class index" in out.rules[0]


def test_weighted_vote_totals_tie_within_float_rounding() -> None:
    out = WeightedVote().fuse(
        [
            m("a", [0.55, 0.45], weight=0.1),
            m("b", [0.55, 0.45], weight=0.2),
            m("c", [0.1, 0.9], weight=0.3),
        ]
    )
    # 0.1 + 0.2 = 0.30000000000000004 > 0.3 in floats, but it is a tie: calibrated confidence
    # class 1 = (0.045 + 0.09 + 0.27) / 0.6 = 0.675 beats class 0 (0.325) -> 1
    assert out.labels.tolist() == [1]
    assert out.rules == [
        "weighted_vote: tie at 0.30 weight between [0, 1], broken by calibrated confidence"
    ]


def test_weighted_vote_all_zero_weights_vote_equally() -> None:
    out = WeightedVote().fuse(
        [m("a", [0.9, 0.1], weight=0), m("b", [0.4, 0.6], weight=0), m("c", [0.2, 0.8], weight=0)]
    )
    assert out.labels.tolist() == [1]
    assert out.rules == ["weighted_vote: 2.00 of 3.00 weight"]


# --- max confidence ----------------------------------------------------------------------


def test_max_confidence_most_confident_member_decides_per_row() -> None:
    out = MaxConfidence().fuse(
        [
            m("a", [0.6, 0.4], [0.95, 0.05]),
            m("b", [0.1, 0.9], [0.3, 0.7]),
            m("c", [0.3, 0.7], [0.8, 0.2]),
        ]
    )
    # row 0: tops 0.6, 0.9, 0.7 -> b; row 1: tops 0.95, 0.7, 0.8 -> a
    assert out.labels.tolist() == [1, 0]
    np.testing.assert_allclose(out.probabilities, [[0.1, 0.9], [0.95, 0.05]], rtol=1e-6)
    np.testing.assert_allclose(out.confidence, [0.9, 0.95], rtol=1e-6)
    assert out.rules == [
        "max_confidence: model 'b' most confident (0.900)",
        "max_confidence: model 'a' most confident (0.950)",
    ]
    np.testing.assert_allclose(out.agreement, [2 / 3, 2 / 3])


@pytest.mark.parametrize(
    ("b_weight", "b_priority", "decider", "by"),
    [(2.0, 0, "b", "weight"), (1.0, 1, "b", "priority"), (1.0, 0, "a", "member order")],
)
def test_max_confidence_ties(b_weight: float, b_priority: int, decider: str, by: str) -> None:
    out = MaxConfidence().fuse(
        [m("a", [0.8, 0.2]), m("b", [0.2, 0.8], weight=b_weight, priority=b_priority)]
    )
    assert out.labels.tolist() == [0 if decider == "a" else 1]
    assert out.rules == [
        f"max_confidence: model {decider!r} most confident (0.800), "
        f"tie between 2 members broken by {by}"
    ]


def test_max_confidence_weight_zero_member_never_decides() -> None:
    out = MaxConfidence().fuse([m("a", [0.6, 0.4]), m("muted", [0.01, 0.99], weight=0.0)])
    assert out.labels.tolist() == [0]
    assert "'a'" in out.rules[0]


# --- borda -------------------------------------------------------------------------------


def test_borda_all_disagree() -> None:
    out = Borda().fuse([m("a", [0.5, 0.3, 0.2]), m("b", [0.2, 0.3, 0.5]), m("c", [0.3, 0.5, 0.2])])
    # points (2, 1, 0 by rank): a [2, 1, 0], b [0, 1, 2], c [1, 2, 0] -> [3, 4, 2] of 9;
    # each member votes differently, class 1 is everyone's first or second choice
    assert out.labels.tolist() == [1]
    np.testing.assert_allclose(out.probabilities, [[3 / 9, 4 / 9, 2 / 9]], rtol=1e-6)
    assert out.confidence[0] == pytest.approx(4 / 6)  # 4 of the 3 * 2 = 6 possible
    assert out.rules == ["borda: 4.00 of 6.00 points"]
    assert out.agreement[0] == pytest.approx(1 / 3)


def test_borda_weights_points() -> None:
    out = Borda().fuse(
        [m("a", [0.5, 0.3, 0.2], weight=3.0), m("b", [0.2, 0.3, 0.5]), m("c", [0.3, 0.5, 0.2])]
    )
    # a [6, 3, 0] + b [0, 1, 2] + c [1, 2, 0] = [7, 6, 2]
    assert out.labels.tolist() == [0]
    np.testing.assert_allclose(out.probabilities, [[7 / 15, 6 / 15, 2 / 15]], rtol=1e-6)


def test_borda_tie_broken_by_mean_probability_then_index() -> None:
    out = Borda().fuse(
        [m("a", [0.6, 0.3, 0.1], [0.6, 0.4, 0.0]), m("b", [0.1, 0.9, 0.0], [0.4, 0.6, 0.0])]
    )
    # row 0: a [2, 1, 0] + b [1, 2, 0] = [3, 3, 0]; mean [0.35, 0.6, 0.05] -> 1
    # row 1: the same points; mean [0.5, 0.5, 0] -> the lower index, 0
    assert out.labels.tolist() == [1, 0]
    assert out.rules == [
        "borda: tie at 3.00 points between [0, 1], broken by mean probability",
        "borda: tie at 3.00 points between [0, 1], broken by lowest class index",
    ]


def test_borda_equal_probabilities_share_ranks() -> None:
    out = Borda().fuse([m("a", [0.5, 0.5, 0.0]), m("b", [0.2, 0.5, 0.3])])
    # a: classes 0 and 1 span ranks 0 and 1 -> 1.5 points each, class 2 gets 0
    # b: [0, 2, 1]; total [1.5, 3.5, 1.0] of 6
    assert out.labels.tolist() == [1]
    np.testing.assert_allclose(out.probabilities, [[1.5 / 6, 3.5 / 6, 1 / 6]], rtol=1e-6)


# --- threshold ---------------------------------------------------------------------------


def test_threshold_only_confident_members_vote_and_falls_back() -> None:
    out = Threshold().fuse(
        [
            m("a", [0.7, 0.3, 0.0], [0.5, 0.4, 0.1], weight=3.0),
            m("b", [0.0, 0.55, 0.45], [0.1, 0.55, 0.35]),
            m("c", [0.0, 0.5, 0.5], [0.2, 0.5, 0.3]),
        ]
    )
    # row 0: only a (0.7 >= 0.6) takes part -> [0.7, 0.3, 0], label 0. The soft vote of all
    #   (weights 3, 1, 1) would give [2.1, 1.95, 0.95] / 5 -> 0 too, but unweighted -> 1.
    # row 1: nobody reaches 0.6 -> soft vote of all, weights 3, 1, 1:
    #   [1.5 + 0.1 + 0.2, 1.2 + 0.55 + 0.5, 0.3 + 0.35 + 0.3] / 5 = [0.36, 0.45, 0.19] -> 1
    assert out.labels.tolist() == [0, 1]
    np.testing.assert_allclose(out.probabilities, [[0.7, 0.3, 0.0], [0.36, 0.45, 0.19]], rtol=1e-5)
    assert out.rules == [
        "threshold: soft vote of 1 of 3 members at >= 0.60 (0.700)",
        "threshold: no member at >= 0.60; fell back to the soft vote of all 3 members (0.450)",
    ]


def test_threshold_changes_the_answer_against_soft_vote() -> None:
    members = [m("a", [0.7, 0.3, 0.0]), m("b", [0.0, 0.55, 0.45]), m("c", [0.0, 0.5, 0.5])]
    # soft vote of all: [0.233, 0.45, 0.317] -> 1; only a is confident -> 0
    assert STRATEGIES["soft_vote"].fuse(members).labels.tolist() == [1]
    assert Threshold().fuse(members).labels.tolist() == [0]
    # with the bar at 0.5 all three take part again -> 1
    assert Threshold(min_confidence=0.5).fuse(members).labels.tolist() == [1]


def test_threshold_bar_is_inclusive_in_the_members_precision() -> None:
    # float32(0.7) < 0.7 as float64; the member still meets a 0.7 bar
    members = [m("a", [0.7, 0.3]), m("b", [0.0, 0.69])]
    out = Threshold(min_confidence=0.7).fuse(members)
    assert out.labels.tolist() == [0]
    assert out.rules[0].startswith("threshold: soft vote of 1 of 2 members at >= 0.70")


def test_threshold_weight_zero_member_does_not_take_part() -> None:
    out = Threshold().fuse([m("a", [0.45, 0.55]), m("muted", [0.99, 0.01], weight=0.0)])
    # muted is confident but has no say: nobody qualifies, soft vote of all = a's row
    assert out.labels.tolist() == [1]
    assert "fell back" in out.rules[0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan])
def test_threshold_rejects_bad_min_confidence(bad: float) -> None:
    with pytest.raises(ValueError, match=r"min_confidence: expected a number in \[0, 1\]"):
        Threshold(min_confidence=bad)


# --- any number of members, single member, bad input --------------------------------------


@pytest.mark.parametrize("strategy", CLASSIFICATION, ids=lambda s: s.name)
def test_single_member_is_its_own_answer(strategy: FusionStrategy) -> None:
    out = strategy.fuse([m("only", [0.2, 0.8], [0.7, 0.3])])
    assert out.labels.tolist() == [1, 0]
    np.testing.assert_array_equal(out.agreement, [1.0, 1.0])
    assert len(out.rules) == 2


@pytest.mark.parametrize("strategy", CLASSIFICATION, ids=lambda s: s.name)
def test_fewer_members_than_the_previous_call(strategy: FusionStrategy) -> None:
    a, b, c = m("a", [0.9, 0.1]), m("b", [0.8, 0.2]), m("c", [0.1, 0.9])
    assert strategy.fuse([a, b, c]).labels.tolist() == [0]
    # c missing this time (timed out, say); nothing carries over from the previous call
    out = strategy.fuse([c, b])
    assert out.probabilities.shape == (1, 2)
    assert out.agreement[0] == pytest.approx(0.5)
    assert strategy.fuse([c]).labels.tolist() == [1]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("strategy", [*CLASSIFICATION, *REGRESSION], ids=lambda s: s.name)
def test_non_finite_scores_rejected(strategy: FusionStrategy, bad: float) -> None:
    with pytest.raises(
        InvalidArgument, match=r"members\['b'\].probabilities: contains NaN or infinity"
    ):
        strategy.fuse([m("a", [0.5, 0.5]), m("b", [bad, 0.5])])


@pytest.mark.parametrize("strategy", [*CLASSIFICATION, *REGRESSION], ids=lambda s: s.name)
def test_no_members_rejected(strategy: FusionStrategy) -> None:
    with pytest.raises(InvalidArgument, match="members: empty"):
        strategy.fuse([])


# --- regression --------------------------------------------------------------------------


def regression_members() -> list[MemberScores]:
    return [m("a", [1.0], [2.0]), m("b", [3.0], [2.0]), m("c", [5.0], [8.0])]


def test_weighted_mean_values_spread_confidence_agreement() -> None:
    out = WeightedMean().fuse(regression_members())
    # row 0: 1, 3, 5 -> mean 3, spread sqrt((4 + 0 + 4) / 3) = sqrt(8/3) = 1.633;
    #   distances 2, 0, 2 -> only b within 1.633 -> agreement 1/3
    # row 1: 2, 2, 8 -> mean 4, spread sqrt((4 + 4 + 16) / 3) = sqrt(8) = 2.828;
    #   distances 2, 2, 4 -> a and b within -> 2/3
    np.testing.assert_allclose(out.probabilities, [[3.0], [4.0]], rtol=1e-6)
    assert out.labels.dtype == np.int64
    assert out.labels.tolist() == [-1, -1]
    spread = np.array([math.sqrt(8 / 3), math.sqrt(8)])
    np.testing.assert_allclose(weighted_spread(regression_members()), spread)
    np.testing.assert_allclose(out.confidence, 1 / (1 + spread))
    np.testing.assert_allclose(out.agreement, [1 / 3, 2 / 3])
    assert out.rules[0] == "weighted_mean: weighted mean of 3 members, spread 1.633"


def test_median_values() -> None:
    out = Median().fuse(regression_members())
    # row 0: median 3, distances 2, 0, 2 -> 1/3; row 1: median 2, distances 0, 0, 6 -> 2/3.
    # The spread (and so the confidence) is the weighted std, the same as for the mean.
    np.testing.assert_allclose(out.probabilities, [[3.0], [2.0]])
    np.testing.assert_allclose(out.agreement, [1 / 3, 2 / 3])
    np.testing.assert_allclose(out.confidence, 1 / (1 + np.array([math.sqrt(8 / 3), math.sqrt(8)])))
    assert out.labels.tolist() == [-1, -1]
    assert out.rules[1] == "median: median of 3 of 3 members, spread 2.828"


def test_weighted_mean_weights() -> None:
    out = WeightedMean().fuse([m("a", [0.0], weight=3.0), m("b", [4.0], weight=1.0)])
    # mean (3*0 + 1*4) / 4 = 1; variance (3*1 + 1*9) / 4 = 3 -> spread sqrt(3) = 1.732;
    # distances 1 (a, within) and 3 (b, not) -> agreement 1/2
    assert out.probabilities[0, 0] == pytest.approx(1.0)
    assert out.confidence[0] == pytest.approx(1 / (1 + math.sqrt(3)))
    assert out.agreement[0] == pytest.approx(0.5)


def test_median_even_count_and_outlier() -> None:
    members = [m("a", [1.0]), m("b", [2.0]), m("c", [10.0]), m("d", [1000.0])]
    # np.median of an even count: mean of the two middle values (2 + 10) / 2 = 6; the outlier
    # d drags the mean to 253.25 but not the median
    assert Median().fuse(members).probabilities[0, 0] == pytest.approx(6.0)
    assert WeightedMean().fuse(members).probabilities[0, 0] == pytest.approx(253.25)


def test_median_leaves_out_weight_zero_members() -> None:
    out = Median().fuse([m("a", [1.0]), m("b", [2.0]), m("muted", [100.0], weight=0.0)])
    assert out.probabilities[0, 0] == pytest.approx(1.5)
    assert out.rules[0].startswith("median: median of 2 of 3 members")


def test_regression_several_outputs_and_inclusive_agreement() -> None:
    members = [m("a", [0.0, 10.0]), m("b", [2.0, 10.0])]
    out = WeightedMean().fuse(members)
    # means [1, 10]; stds [1, 0] -> spread 0.5; each member's mean distance (1 + 0) / 2 = 0.5
    # is exactly one spread: within (inclusive)
    np.testing.assert_allclose(out.probabilities, [[1.0, 10.0]])
    assert out.confidence[0] == pytest.approx(1 / 1.5)
    assert out.agreement[0] == 1.0


@pytest.mark.parametrize("strategy", REGRESSION, ids=lambda s: s.name)
def test_regression_unanimous(strategy: FusionStrategy) -> None:
    out = strategy.fuse([m("a", [2.5, -1.0]), m("b", [2.5, -1.0])])
    np.testing.assert_allclose(out.probabilities, [[2.5, -1.0]])
    assert out.confidence.tolist() == [1.0]
    assert out.agreement.tolist() == [1.0]


@pytest.mark.parametrize("strategy", REGRESSION, ids=lambda s: s.name)
def test_regression_single_member(strategy: FusionStrategy) -> None:
    out = strategy.fuse([m("only", [7.0], [3.0])])
    np.testing.assert_allclose(out.probabilities, [[7.0], [3.0]])
    np.testing.assert_array_equal(out.agreement, [1.0, 1.0])


# --- the real held-out digits ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_members() -> tuple[list[MemberScores], np.ndarray]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB

    from chorus.demo.datasets import digits_split

    s = digits_split()
    lr = LogisticRegression(max_iter=2000).fit(s.x_train / 16, s.y_train)
    rf = RandomForestClassifier(n_estimators=50, random_state=0).fit(s.x_train, s.y_train)
    nb = GaussianNB().fit(s.x_train, s.y_train)
    members = [
        MemberScores("logreg", lr.predict_proba(s.x_test / 16).astype(np.float32)),
        MemberScores("forest", rf.predict_proba(s.x_test).astype(np.float32)),
        MemberScores("bayes", nb.predict_proba(s.x_test).astype(np.float32)),
    ]
    return members, s.y_test


def digits_accuracy(
    strategy: FusionStrategy, digits_members: tuple[list[MemberScores], np.ndarray]
) -> tuple[float, list[float]]:
    members, y = digits_members
    out = strategy.fuse(members)
    assert out.labels.shape == y.shape
    assert len(out.rules) == len(y)
    member_acc = [float(np.mean(mem.votes == y)) for mem in members]
    acc = float(np.mean(out.labels == y))
    print(f"{strategy.name}: {acc:.4f} (members {[round(a, 4) for a in member_acc]})")
    return acc, member_acc


@pytest.mark.parametrize("strategy", CLASSIFICATION, ids=lambda s: s.name)
def test_strategies_on_held_out_digits_beat_the_worst_member(
    strategy: FusionStrategy, digits_members: tuple[list[MemberScores], np.ndarray]
) -> None:
    acc, member_acc = digits_accuracy(strategy, digits_members)
    assert acc >= min(member_acc)


# GaussianNB is confidently wrong: on this split it gives > 0.99 to its top class on 93% of
# the rows and is wrong on 65 of them (12% of 540), so with equal weights its probabilities
# swamp the soft vote (0.928 against the best member's 0.970), while votes and ranks, blind
# to the scale, stay close to the best member. Weights are the cure: see the next test.
@pytest.mark.parametrize(
    "strategy", [STRATEGIES["weighted_vote"], STRATEGIES["borda"]], ids=lambda s: s.name
)
def test_strategies_on_held_out_digits_near_the_best_member(
    strategy: FusionStrategy, digits_members: tuple[list[MemberScores], np.ndarray]
) -> None:
    acc, member_acc = digits_accuracy(strategy, digits_members)
    assert acc >= max(member_acc) - 0.02


def test_soft_vote_is_swamped_by_an_overconfident_member_until_it_is_weighted(
    digits_members: tuple[list[MemberScores], np.ndarray],
) -> None:
    members, y = digits_members
    equal, member_acc = digits_accuracy(STRATEGIES["soft_vote"], digits_members)
    assert equal < max(member_acc) - 0.02
    damped = [
        MemberScores(m.model, m.probabilities, 0.5 if m.model == "bayes" else 1.0) for m in members
    ]
    weighted, _ = digits_accuracy(STRATEGIES["soft_vote"], (damped, y))
    assert weighted >= max(member_acc) - 0.02
