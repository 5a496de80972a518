"""A member call's body is encoded and hashed once, and reads back as it was."""

from __future__ import annotations

import hashlib

import numpy as np

from chorus.core.calls.payload import Payload
from chorus.core.codec import from_tensor, to_tensor
from chorus.pb import wire_pb2


def test_a_payload_round_trips_and_carries_the_sha256_of_its_body() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    p = Payload.from_proto(wire_pb2.InferCall(inputs=[to_tensor("x", x)]))
    assert p.digest == hashlib.sha256(p.body).hexdigest()
    np.testing.assert_array_equal(from_tensor(p.to_proto().inputs[0]), x)
    assert Payload.of(p.body) == p
