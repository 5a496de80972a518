"""Conflict detection: the measures on hand-made inputs, and thresholds crossed and not."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from chorus.core.errors import InvalidArgument
from chorus.fuser.conflict import ConflictThresholds, detect, entropy, margin, vote_margin
from chorus.fuser.strategies import MemberScores
from chorus.fuser.strategies.soft_vote import SoftVote
from chorus.fuser.strategies.weighted_mean import WeightedMean


def m(name: str, *rows: list[float], weight: float = 1.0) -> MemberScores:
    return MemberScores(name, np.array(rows, dtype=np.float32), weight)


def h(*p: float) -> float:
    """Shannon entropy in nats."""
    return -sum(x * math.log(x) for x in p if x > 0)


# Only the named measure can flag a row under these.
ONLY_MARGIN = {"max_entropy": 1.0, "min_vote_margin": 0.0}
ONLY_ENTROPY = {"min_margin": 0.0, "min_vote_margin": 0.0}
ONLY_VOTES = {"min_margin": 0.0, "max_entropy": 1.0}


def test_margin() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(margin(p), [0.5, 0.0, 1.0], atol=1e-7)
    # one class: nothing to compete with, the margin is the top probability
    np.testing.assert_allclose(margin(np.array([[0.75]])), [0.75])


def test_entropy_normalised_by_log_classes() -> None:
    p = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.7, 0.2, 0.1]])
    # one-hot 0, uniform 1, [0.7, 0.2, 0.1]: (0.2497 + 0.3219 + 0.2303) / ln 3 = 0.7298
    np.testing.assert_allclose(entropy(p), [0.0, 1.0, h(0.7, 0.2, 0.1) / math.log(3)])
    assert entropy(p)[2] == pytest.approx(0.7298, abs=1e-4)
    # rows are renormalised: vote counts [2, 2] read as [0.5, 0.5]; one class has no entropy
    np.testing.assert_allclose(entropy(np.array([[2.0, 2.0]])), [1.0])
    np.testing.assert_allclose(entropy(np.array([[1.0]])), [0.0])


def test_vote_margin() -> None:
    members = [
        m("a", [0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.8, 0.1, 0.1]),
        m("b", [0.6, 0.4, 0.0], [0.2, 0.8, 0.0], [0.1, 0.8, 0.1]),
        m("c", [0.2, 0.8, 0.0], [0.3, 0.7, 0.0], [0.1, 0.1, 0.8]),
    ]
    # row 0: votes 0, 0, 1 -> 2/3 - 1/3; row 1: unanimous -> 1 - 0; row 2: all differ -> 1/3 - 1/3
    np.testing.assert_allclose(vote_margin(members), [1 / 3, 1.0, 0.0])
    assert vote_margin([m("only", [0.4, 0.6])]).tolist() == [1.0]


def test_detect_defaults_clean_row_and_split_row() -> None:
    members = [
        m("a", [0.9, 0.05, 0.05], [0.6, 0.3, 0.1]),
        m("b", [0.9, 0.05, 0.05], [0.6, 0.3, 0.1]),
        m("c", [0.9, 0.05, 0.05], [0.1, 0.8, 0.1]),
    ]
    report = detect(members, SoftVote().fuse(members), ConflictThresholds())
    # row 0: unanimous, fused [0.9, 0.05, 0.05]: margin 0.85, entropy 0.359, votes 1 -> clean
    # row 1: fused [1.3, 1.4, 0.3] / 3: margin 0.033 < 0.2, entropy 0.863 > 0.5, and the
    #   2-to-1 vote (0.333 < 0.34) -> conflicted on all three counts
    assert report.conflicted.tolist() == [False, True]
    assert report.margin is not None and report.entropy is not None
    assert report.vote_margin is not None
    np.testing.assert_allclose(report.margin, [0.85, 0.1 / 3], rtol=1e-5)
    np.testing.assert_allclose(
        report.entropy,
        [h(0.9, 0.05, 0.05) / math.log(3), h(1.3 / 3, 1.4 / 3, 0.1) / math.log(3)],
        rtol=1e-5,
    )
    np.testing.assert_allclose(report.vote_margin, [1.0, 1 / 3])
    assert report.spread is None
    assert report.reasons == (
        "",
        "margin 0.033 < 0.200; entropy 0.863 > 0.500; vote margin 0.333 < 0.340",
    )
    assert report.rate == 0.5


def test_margin_threshold_is_strict() -> None:
    members = [m("a", [0.625, 0.375], [0.5625, 0.4375])]  # margins 0.25 and 0.125, exactly
    fused = SoftVote().fuse(members)
    report = detect(members, fused, ConflictThresholds(min_margin=0.25, **ONLY_MARGIN))
    assert report.conflicted.tolist() == [False, True]
    assert report.reasons[1] == "margin 0.125 < 0.250"


def test_entropy_threshold() -> None:
    members = [m("a", [0.9, 0.1], [0.8, 0.2], [0.5, 0.5])]
    fused = SoftVote().fuse(members)
    # H(0.9, 0.1) / ln 2 = 0.469 (under 0.5), H(0.8, 0.2) / ln 2 = 0.722 (over), uniform 1
    report = detect(members, fused, ConflictThresholds(max_entropy=0.5, **ONLY_ENTROPY))
    assert report.conflicted.tolist() == [False, True, True]
    # a bar of 1 flags nothing: even the uniform row only reaches it
    report = detect(members, fused, ConflictThresholds(max_entropy=1.0, **ONLY_ENTROPY))
    assert report.conflicted.tolist() == [False, False, False]


def test_vote_margin_threshold() -> None:
    three_to_one = [m("a", [0.9, 0.1]), m("b", [0.8, 0.2]), m("c", [0.7, 0.3]), m("d", [0.4, 0.6])]
    fused = SoftVote().fuse(three_to_one)
    # vote margin 3/4 - 1/4 = 0.5
    assert not detect(three_to_one, fused, ConflictThresholds(**ONLY_VOTES)).conflicted[0]
    strict = ConflictThresholds(min_vote_margin=0.5, **ONLY_VOTES)
    assert not detect(three_to_one, fused, strict).conflicted[0]
    stricter = ConflictThresholds(min_vote_margin=0.51, **ONLY_VOTES)
    report = detect(three_to_one, fused, stricter)
    assert report.conflicted.tolist() == [True]
    assert report.reasons == ("vote margin 0.500 < 0.510",)


def test_detect_regression_spread() -> None:
    members = [
        m("a", [1.0], [0.0], [1.0]),
        m("b", [1.0], [2.0], [3.0]),
        m("c", [1.0], [1.0], [5.0]),
    ]
    fused = WeightedMean().fuse(members)
    # spreads: 0; sqrt(2/3) = 0.816; sqrt(8/3) = 1.633
    report = detect(members, fused, ConflictThresholds(), regression=True)
    assert report.spread is not None
    np.testing.assert_allclose(report.spread, [0.0, math.sqrt(2 / 3), math.sqrt(8 / 3)])
    assert report.conflicted.tolist() == [False, False, True]
    assert report.reasons == ("", "", "spread 1.633 > 1.000")
    assert report.margin is None and report.entropy is None and report.vote_margin is None
    # the bar is strict: a spread of exactly 0 is not over max_spread=0
    tight = detect(members, fused, ConflictThresholds(max_spread=0.0), regression=True)
    assert tight.conflicted.tolist() == [False, True, True]


def test_detect_regression_uses_weights() -> None:
    members = [m("a", [0.0], weight=3.0), m("b", [4.0], weight=1.0)]
    # weighted std sqrt((3*1 + 1*9) / 4) = sqrt(3) = 1.732; unweighted it would be 2
    report = detect(members, WeightedMean().fuse(members), ConflictThresholds(), regression=True)
    assert report.spread is not None
    assert report.spread[0] == pytest.approx(math.sqrt(3))


def test_detect_checks_fused_rows_and_members() -> None:
    members = [m("a", [0.9, 0.1], [0.2, 0.8])]
    other = SoftVote().fuse([m("x", [0.5, 0.5])])
    with pytest.raises(InvalidArgument, match=r"fused.probabilities: expected \[2, n\]"):
        detect(members, other, ConflictThresholds())
    with pytest.raises(InvalidArgument, match=r"members\['b'\].probabilities: contains NaN"):
        detect([*members, m("b", [np.nan, 1.0], [0.5, 0.5])], other, ConflictThresholds())


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("min_margin", -0.1, r"min_margin: expected a number in \[0, 1\], got -0.1"),
        ("max_entropy", 1.5, r"max_entropy: expected a number in \[0, 1\], got 1.5"),
        ("min_vote_margin", math.nan, r"min_vote_margin: expected a number in \[0, 1\], got nan"),
        ("max_spread", -1.0, r"max_spread: expected a finite number >= 0, got -1.0"),
        ("max_spread", math.inf, r"max_spread: expected a finite number >= 0, got inf"),
    ],
)
def test_thresholds_validated(field: str, value: float, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        ConflictThresholds(**{field: value})


def test_thresholds_frozen_with_documented_defaults() -> None:
    t = ConflictThresholds()
    assert (t.min_margin, t.max_entropy, t.min_vote_margin, t.max_spread) == (0.2, 0.5, 0.34, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.min_margin = 0.5  # type: ignore[misc]
