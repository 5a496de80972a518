"""What one request to one replica did, in the one shape every caller of a member reports
it: the router's own calls and the fuser's on the one-way path (which sends them back in
`FuseReply.attempts` for the router's replica choice and breakers)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from chorus.pb import wire_pb2

OUTRUN = "CANCELLED"
"""The code of an attempt another replica answered first: slow, not failed."""
FAILED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})
"""Codes that count against a replica's breaker: it is gone or too slow. Bad input or a
corrupt reply is not the replica's fault."""


@dataclass(frozen=True, slots=True)
class Attempt:
    model: str
    replica: str
    """"" when the model's queue group took it, or when who took it is not known here."""
    latency_ms: float
    code: str = ""
    """"" when answered; else the error's code name, or OUTRUN."""
    call: str = ""
    """The one-way call token it answered, so the router can name the replica it chose."""

    @property
    def answered(self) -> bool:
        return not self.code

    def to_proto(self) -> wire_pb2.Attempt:
        return wire_pb2.Attempt(
            model=self.model,
            replica=self.replica,
            latency_ms=self.latency_ms,
            code=self.code,
            call=self.call,
        )

    @classmethod
    def from_proto(cls, a: wire_pb2.Attempt) -> Attempt:
        return cls(a.model, a.replica, a.latency_ms, a.code, a.call)


@dataclass(slots=True)
class InFlight:
    """A first attempt another process sent (the router, on the one-way path), whose answer
    arrives here: `answer` is settled with the reply or the error, `replica` filled in with
    who took it when that is known."""

    answer: asyncio.Future[wire_pb2.InferReply]
    started: float
    """When this caller began waiting for it (its clock)."""
    call: str = ""
    """The sender's token for it, reported in its Attempt."""
    replica: str = ""
    patience: float | None = None
    """How long it is waited for alone before another replica is asked (`patience`); None:
    until it ends."""
