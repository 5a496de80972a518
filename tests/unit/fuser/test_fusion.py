import numpy as np
import pytest

from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import InvalidArgument
from chorus.fuser import strategies
from chorus.fuser.fusion import Tools, fuse
from chorus.fuser.strategies import MemberScores
from chorus.fuser.strategies.base import weighted_mean
from chorus.fuser.strategies.majority_vote import MajorityVote
from chorus.fuser.strategies.soft_vote import SoftVote
from chorus.pb import wire_pb2

CTX = CallContext.start("t-1", Priority.NORMAL, 5.0)


def m(name: str, *rows: list[float], weight: float = 1.0) -> MemberScores:
    return MemberScores(name, np.array(rows, dtype=np.float32), weight)


def test_soft_vote_takes_mean_probability() -> None:
    out = SoftVote().fuse([m("a", [0.6, 0.4]), m("b", [0.6, 0.4]), m("c", [0.0, 1.0])])
    # mean = [0.4, 0.6]: the confident dissenter wins although two members lean to class 0
    np.testing.assert_allclose(out.probabilities, [[0.4, 0.6]], rtol=1e-6)
    assert out.labels.tolist() == [1]
    assert out.confidence[0] == pytest.approx(0.6)
    assert out.agreement[0] == pytest.approx(1 / 3)


def test_soft_vote_weights() -> None:
    out = SoftVote().fuse([m("a", [0.9, 0.1], weight=3.0), m("b", [0.0, 1.0], weight=1.0)])
    np.testing.assert_allclose(out.probabilities, [[0.675, 0.325]], rtol=1e-6)
    assert out.labels.tolist() == [0]


def test_soft_vote_exact_tie_goes_to_lowest_class() -> None:
    out = SoftVote().fuse([m("a", [1.0, 0.0]), m("b", [0.0, 1.0])])
    assert out.labels.tolist() == [0]


def test_majority_vote_counts_top_classes() -> None:
    out = MajorityVote().fuse(
        [
            m("a", [0.6, 0.4], [0.2, 0.8]),
            m("b", [0.51, 0.49], [0.3, 0.7]),
            m("c", [0.0, 1.0], [0.9, 0.1]),
        ]
    )
    # row 0: two votes for 0 beat one confident vote for 1 (soft vote would say 1)
    assert out.labels.tolist() == [0, 1]
    np.testing.assert_allclose(out.probabilities, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]], rtol=1e-6)
    assert out.rules[0] == "majority_vote: 2 of 3 votes"


def test_majority_tie_broken_by_mean_probability() -> None:
    out = MajorityVote().fuse([m("a", [0.55, 0.45, 0.0]), m("b", [0.05, 0.95, 0.0])])
    # one vote each for 0 and 1; mean probability of 1 (0.70) beats 0 (0.30)
    assert out.labels.tolist() == [1]
    assert "tie at 1 of 2 votes between [0, 1]" in out.rules[0]


def test_majority_all_disagree_three_way() -> None:
    out = MajorityVote().fuse(
        [m("a", [0.5, 0.3, 0.2]), m("b", [0.2, 0.45, 0.35]), m("c", [0.1, 0.3, 0.6])]
    )
    # 1 vote each; mean = [0.267, 0.35, 0.383]
    assert out.labels.tolist() == [2]
    assert out.agreement[0] == pytest.approx(1 / 3)


def test_single_member_is_its_own_answer() -> None:
    out = MajorityVote().fuse([m("only", [0.2, 0.8])])
    assert out.labels.tolist() == [1]
    assert out.agreement[0] == 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_rejected(bad: float) -> None:
    with pytest.raises(
        InvalidArgument, match=r"members\['b'\].probabilities: contains NaN or infinity"
    ):
        SoftVote().fuse([m("a", [0.5, 0.5]), m("b", [bad, 0.5])])


def test_shape_mismatch_names_member() -> None:
    with pytest.raises(
        InvalidArgument, match=r"members\['b'\].probabilities: expected shape \[1, 2\]"
    ):
        SoftVote().fuse([m("a", [0.5, 0.5]), m("b", [0.2, 0.3, 0.5])])


def test_no_members() -> None:
    with pytest.raises(InvalidArgument, match="members: empty"):
        MajorityVote().fuse([])


def test_unknown_policy() -> None:
    with pytest.raises(InvalidArgument, match="fusion_policy: unknown policy 'tea_leaves'"):
        strategies.get("tea_leaves")


async def test_fuse_call_round_trip_explains_every_row() -> None:
    call = wire_pb2.FuseCall(policy="soft_vote", labels=["cat", "dog"])
    call.members.add(
        model="a",
        version="1",
        weight=1.0,
        probabilities=to_tensor("p", np.array([[0.9, 0.1], [0.4, 0.6]], np.float32)),
    )
    call.members.add(
        model="b",
        version="2",
        weight=1.0,
        probabilities=to_tensor("p", np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)),
    )
    reply, _ = await fuse(wire_pb2.FuseCall.FromString(call.SerializeToString()), CTX, Tools())
    assert reply.policy == "soft_vote"
    np.testing.assert_allclose(
        from_tensor(reply.probabilities), [[0.8, 0.2], [0.3, 0.7]], rtol=1e-6
    )
    assert [r.label for r in reply.rows] == [0, 1]
    assert dict(reply.rows[1].votes) == {"a": 1, "b": 1}
    assert reply.rows[0].agreement == 1.0


async def test_fuse_call_labels_must_match_columns() -> None:
    call = wire_pb2.FuseCall(labels=["only-one"])
    call.members.add(
        model="a", weight=1.0, probabilities=to_tensor("p", np.array([[0.9, 0.1]], np.float32))
    )
    with pytest.raises(InvalidArgument, match="labels: 1 given for 2 probability columns"):
        await fuse(call, CTX, Tools())


async def test_duplicate_member_rejected() -> None:
    call = wire_pb2.FuseCall()
    p = to_tensor("p", np.array([[0.9, 0.1]], np.float32))
    call.members.add(model="a", probabilities=p, weight=1.0)
    call.members.add(model="a", probabilities=p, weight=1.0)
    with pytest.raises(InvalidArgument, match="model 'a' appears twice"):
        await fuse(call, CTX, Tools())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_mean_is_the_weighted_average(dtype: type) -> None:
    rng = np.random.default_rng(3)
    probs = rng.random((3, 4, 5)).astype(dtype)
    weights = [0.5, 2.0, 0.0]
    members = [
        MemberScores(f"m{i}", p, w) for i, (p, w) in enumerate(zip(probs, weights, strict=True))
    ]
    got = weighted_mean(members)
    assert got.dtype == np.float64 and got.shape == (4, 5)
    np.testing.assert_allclose(got, np.average(probs.astype(np.float64), axis=0, weights=weights))
    unweighted = [MemberScores(m.model, m.probabilities, 0.0) for m in members]
    np.testing.assert_allclose(weighted_mean(unweighted), probs.astype(np.float64).mean(axis=0))
