"""Adaptive member weights: Hedge updates from feedback, kept in a JetStream key-value bucket.

Hedge (multiplicative weights): after feedback, each member's weight is multiplied by
exp(-eta * loss), where loss is the share of the task's rows the member got wrong (its top
class was not the true one); weights are then rescaled to average 1 and floored at `floor` so
a member that improves can earn its way back. The 0/1 loss, not 1 - p(true), keeps two
equally accurate members equal when one of them is merely less confident: a probability loss
would let Hedge pour all trust into the boldest member over a few hundred tasks. Every fuser
replica watches the bucket, so an update by one is seen by all, and a restarted fuser starts
from what was learned.
"""

from __future__ import annotations

import math

from nats.js import JetStreamContext

from chorus.core.subjects import kv_key
from chorus.fuser.watched import WatchedBucket, decode_floats, encode_floats

BUCKET = "chorus_weights"
ETA = 0.1
FLOOR = 0.02


def hedge(
    weights: dict[str, float], losses: dict[str, float], eta: float = ETA, floor: float = FLOOR
) -> dict[str, float]:
    if not losses:
        return dict(weights)
    new = {m: weights.get(m, 1.0) * math.exp(-eta * loss) for m, loss in losses.items()}
    for m, w in weights.items():
        new.setdefault(m, w)
    mean = sum(new.values()) / len(new)
    return {m: max(floor, w / mean) for m, w in sorted(new.items())}


class WeightStore(WatchedBucket[dict[str, float]]):
    def __init__(self, js: JetStreamContext, bucket: str = BUCKET, replicas: int = 1) -> None:
        super().__init__(js, bucket, decode_floats, encode_floats, history=5, replicas=replicas)

    def get(self, capability: str) -> dict[str, float]:
        return dict(self.cached(kv_key(capability)) or {})

    async def learn(self, capability: str, losses: dict[str, float]) -> dict[str, float]:
        """Apply one Hedge step atomically (concurrent replicas retry)."""
        return await self.update(kv_key(capability), lambda current: hedge(current or {}, losses))
