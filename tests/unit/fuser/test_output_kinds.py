"""What members' scores mean, in the fuser: logits and binary columns made probabilities,
regression fused as values, kinds never mixed. In-process, on hand-made member outputs; the
arbiter is a fake member client standing in for NATS."""

from __future__ import annotations

import numpy as np
import pytest

from chorus.core.codec import to_tensor
from chorus.core.context import CallContext, Priority
from chorus.core.errors import FailedPrecondition, InvalidArgument
from chorus.fuser.fusion import Tools, fuse
from chorus.pb import task_pb2, wire_pb2

CTX = CallContext.start("t-1", Priority.NORMAL, 5.0)


def _call(
    members: dict[str, tuple[list[list[float]] | list[float], str]], **kw: object
) -> wire_pb2.FuseCall:
    c = wire_pb2.FuseCall(capability="toy", task_id="t-1", **kw)  # type: ignore[arg-type]
    for model, (scores, kind) in members.items():
        c.members.add(
            model=model, output_kind=kind, temperature=2.0 if kind == "logits" else 0.0,
            probabilities=to_tensor("s", np.asarray(scores, dtype=np.float32)),
        )  # fmt: skip
    return c


async def test_logits_are_fused_as_probabilities() -> None:
    logits = [[4.0, 0.0], [-2.0, 2.0]]
    call = _call({"p": ([[0.9, 0.1], [0.4, 0.6]], "probabilities"), "z": (logits, "logits"),
                  "b": ([0.2, 0.7], "binary")}, labels=["no", "yes"])  # fmt: skip
    reply, _ = await fuse(call, CTX, Tools())
    fused = np.frombuffer(reply.probabilities.raw, dtype=np.float32).reshape(2, 2)
    z = np.exp(np.array(logits) / 2.0)
    soft = z / z.sum(axis=1, keepdims=True)
    binary = np.array([[0.8, 0.2], [0.3, 0.7]])
    expected = (np.array([[0.9, 0.1], [0.4, 0.6]]) + soft + binary) / 3
    np.testing.assert_allclose(fused, expected, rtol=1e-6)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0, rtol=1e-6)
    assert all(0.0 <= r.confidence <= 1.0 for r in reply.rows)
    assert [r.label for r in reply.rows] == [0, 1]


async def test_regression_defaults_to_the_weighted_mean_and_flags_wide_rows() -> None:
    # Row 0: members within 2% of 100; row 1: 100 vs 160 vs 130.
    call = _call({"a": ([[100.0], [100.0]], "regression"), "b": ([[101.0], [160.0]], "regression"),
                  "c": ([99.0, 130.0], "regression")})  # fmt: skip
    reply, _ = await fuse(call, CTX, Tools())
    assert reply.policy == "weighted_mean"
    values = np.frombuffer(reply.probabilities.raw, dtype=np.float32)
    np.testing.assert_allclose(values, [100.0, 130.0], rtol=1e-6)
    agreed, wide = reply.rows
    assert agreed.status == "agreed" and wide.status == "conflicted"
    assert wide.label == -1 and list(wide.value) == pytest.approx([130.0])
    assert wide.spread == pytest.approx(np.std([100.0, 160.0, 130.0]))
    assert dict(wide.member_values) == {"a": 100.0, "b": 160.0, "c": 130.0}
    assert "spread 24.495 > 13.000" in wide.rule


async def test_quorum_and_arbiter_settle_regression_rows() -> None:
    members = {"a": ([[100.0], [100.0]], "regression"), "b": ([[101.0], [160.0]], "regression"),
               "c": ([[99.0], [104.0]], "regression")}  # fmt: skip
    quorum = _call(members, conflict=task_pb2.ConflictPolicy(name="quorum", quorum=3))
    reply, _ = await fuse(quorum, CTX, Tools())
    assert [r.status for r in reply.rows] == ["agreed", "unresolved"]
    assert "only 0 of 3 members back 121.3" in reply.rows[1].rule

    class Arbiter:
        async def scores(self, model, inputs, *, scores_output, augment, ctx):  # type: ignore[no-untyped-def]
            return np.full((next(iter(inputs.values())).shape[0], 1), 103.0, dtype=np.float32)

    x = to_tensor("x", np.zeros((2, 3), dtype=np.float32))
    arb = _call(members, inputs=[x], conflict=task_pb2.ConflictPolicy(name="arbiter", arbiter="j"))
    reply, _ = await fuse(arb, CTX, Tools(client=Arbiter()))
    assert reply.rows[1].status == "resolved" and list(reply.rows[1].value) == [103.0]
    assert list(reply.rows[0].value) == pytest.approx([100.0])


async def test_kinds_and_strategies_never_mix() -> None:
    mixed = _call({"p": ([[0.9, 0.1]], "probabilities"), "r": ([[3.0]], "regression")})
    with pytest.raises(FailedPrecondition, match=r"\['r'\] regress but \['p'\] classify"):
        await fuse(mixed, CTX, Tools())
    regression = _call({"r": ([[3.0]], "regression")}, policy="soft_vote")
    with pytest.raises(InvalidArgument, match=r"'soft_vote' fuses classifiers.*regression"):
        await fuse(regression, CTX, Tools())
    classes = _call({"p": ([[0.9, 0.1]], "probabilities")}, policy="median")
    with pytest.raises(InvalidArgument, match="'median' fuses regression values"):
        await fuse(classes, CTX, Tools())
    negotiate = _call({"r": ([[3.0]], "regression")}, inputs=[to_tensor("x", np.zeros((1, 1)))],
                      conflict=task_pb2.ConflictPolicy(name="negotiate"))  # fmt: skip
    with pytest.raises(FailedPrecondition, match="regression"):
        await fuse(negotiate, CTX, Tools(client=object()))  # type: ignore[arg-type]
