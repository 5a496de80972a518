"""A member call's body as it goes on the bus: the InferCall encoded once and its SHA-256
computed once, then handed to whichever path carries it (the one-way path, the two-hop
fan-out, a fallback from one to the other) without encoding or hashing it again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from chorus.pb import wire_pb2


@dataclass(frozen=True, slots=True)
class Payload:
    body: bytes
    """The encoded InferCall."""
    digest: str
    """SHA-256 of `body`, hex: sent with it, checked and echoed by the member."""

    @classmethod
    def of(cls, body: bytes) -> Payload:
        return cls(body, hashlib.sha256(body).hexdigest())

    @classmethod
    def from_proto(cls, call: wire_pb2.InferCall) -> Payload:
        return cls.of(call.SerializeToString())

    def to_proto(self) -> wire_pb2.InferCall:
        return wire_pb2.InferCall.FromString(self.body)
