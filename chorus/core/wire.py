"""What the router and the fuser both mean by a FuseCall and an InferReply beyond the proto:
the fusion policy a call that names none gets, and how a named output is taken from a
member's reply. Services meet only on the proto and NATS subjects, so these live here, in
the core both import, never in one service for the other to copy."""

from __future__ import annotations

from chorus.core.errors import Unavailable
from chorus.pb import tensor_pb2, wire_pb2

DEFAULT_POLICY = "soft_vote"
"""The fusion strategy of a classification task that names none."""
REGRESSION_POLICY = "weighted_mean"
"""The fusion strategy of a regression task that names none."""


def output(reply: wire_pb2.InferReply, name: str) -> tensor_pb2.Tensor:
    """The output `name` of a member's reply; UNAVAILABLE, naming the model, when missing."""
    for t in reply.outputs:
        if t.name == name:
            return t
    raise Unavailable(f"model {reply.model}: reply has no {name!r} output")
