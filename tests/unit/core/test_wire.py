"""The router-fuser contract beyond the proto (chorus.core.wire)."""

from __future__ import annotations

import pytest

from chorus.core.config import RouterConfig
from chorus.core.errors import Unavailable
from chorus.core.wire import DEFAULT_POLICY, REGRESSION_POLICY, output
from chorus.fuser import strategies
from chorus.pb import tensor_pb2, wire_pb2


def test_a_named_output_is_taken_from_a_reply_and_a_missing_one_names_the_model() -> None:
    reply = wire_pb2.InferReply(
        model="mlp", outputs=[tensor_pb2.Tensor(name="label"), tensor_pb2.Tensor(name="p")]
    )
    assert output(reply, "p").name == "p"
    with pytest.raises(Unavailable, match="model mlp: reply has no 'value' output"):
        output(reply, "value")


def test_the_default_policies_are_strategies_the_fuser_has() -> None:
    assert strategies.get(DEFAULT_POLICY).name == DEFAULT_POLICY
    assert REGRESSION_POLICY in {s.name for s in strategies.REGRESSION}
    assert RouterConfig().default_policy == DEFAULT_POLICY
