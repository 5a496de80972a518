"""The fuser's one way out: asking a model over NATS for its scores (again).

Negotiation, the arbiter and stacking all need a model's opinion on some rows; they get it
through `MemberClient`, so the policies stay testable with an in-process client and the
deadline and priority of the task reach every composed call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Protocol

import numpy as np

from chorus.core.calls.client import MemberCalls
from chorus.core.codec import from_tensor, to_tensor
from chorus.core.context import CallContext
from chorus.core.heartbeat import Heartbeat
from chorus.core.wire import output
from chorus.pb import wire_pb2


class MemberClient(Protocol):
    async def scores(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        scores_output: str,
        augment: bool,
        ctx: CallContext,
    ) -> np.ndarray:
        """The model's scores output for `inputs`: [rows, classes]."""
        ...


class NatsMembers:
    """A MemberClient over NATS, through the core's MemberCalls: the fuser's calls get the
    router's deadline, retry, hedging, breaker and digest rules, on the replicas its
    heartbeats show."""

    def __init__(self, calls: MemberCalls, replicas: Callable[[str], list[Heartbeat]]) -> None:
        self.calls = calls
        self.replicas = replicas

    async def scores(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        scores_output: str,
        augment: bool,
        ctx: CallContext,
    ) -> np.ndarray:
        call = wire_pb2.InferCall(
            inputs=[to_tensor(n, a) for n, a in inputs.items()], augment=augment
        )
        body = call.SerializeToString()
        digest = hashlib.sha256(body).hexdigest()
        reply, _ = await self.calls.call(model, self.replicas(model), body, digest, ctx)
        return from_tensor(output(reply, scores_output), field=f"{model}.{scores_output}")
