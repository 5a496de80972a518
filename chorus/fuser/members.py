"""The fuser's one way out: asking a model over NATS for its scores (again).

Negotiation, the arbiter and stacking all need a model's opinion on some rows; they get it
through `MemberClient`, so the policies stay testable with an in-process client and the
deadline and priority of the task reach every composed call.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import numpy as np
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from chorus import subjects, tracing
from chorus.codec import from_tensor, to_tensor
from chorus.context import INPUT_SHA256, CallContext
from chorus.errors import ChorusError, DeadlineExceeded, Unavailable
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
    def __init__(self, nc: Client) -> None:
        self.nc = nc

    async def scores(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        scores_output: str,
        augment: bool,
        ctx: CallContext,
    ) -> np.ndarray:
        timeout = ctx.check(f"the fuser asked {model}")
        call = wire_pb2.InferCall(
            inputs=[to_tensor(n, a) for n, a in inputs.items()], augment=augment
        )
        body = call.SerializeToString()
        headers = tracing.inject(
            {**ctx.to_headers(), INPUT_SHA256: hashlib.sha256(body).hexdigest()}
        )
        try:
            msg = await self.nc.request(
                subjects.infer(model), body, timeout=timeout, headers=headers
            )
        except NoRespondersError:
            raise Unavailable(f"model {model}: no replica is running") from None
        except NatsTimeout:
            raise DeadlineExceeded(
                f"model {model}: no answer within {timeout * 1000:.0f} ms"
            ) from None
        code = (msg.headers or {}).get("Nats-Service-Error-Code")
        if code:
            detail = (msg.headers or {}).get("Nats-Service-Error", "")
            raise ChorusError.from_code_name(code, f"model {model}: {detail}")
        reply = wire_pb2.InferReply.FromString(msg.data)
        for t in reply.outputs:
            if t.name == scores_output:
                return from_tensor(t, field=f"{model}.{scores_output}")
        raise Unavailable(f"model {model}: reply has no {scores_output!r} output")
