"""Members' temperatures refined by feedback, kept per capability in the JetStream key-value
bucket `chorus_temperatures` (every fuser replica watches it).

A manifest's temperature (`chorus models calibrate`) is where a member starts; each feedback
moves log T one gradient step down the negative log-likelihood of that task's true labels, so
the calibration follows a member whose confidence drifts, without a refit. Once learned, the
fuser uses this temperature in place of the manifest's.
"""

from __future__ import annotations

import math

import numpy as np
from nats.js import JetStreamContext

from chorus.core.calibration import T_BOUNDS, nll, temper
from chorus.core.subjects import kv_key
from chorus.fuser.watched import WatchedBucket, decode_floats, encode_floats

BUCKET = "chorus_temperatures"
STEP = 0.2
"""Learning rate on log T per feedback task."""
_H = 1e-3


def step(temperature: float, probabilities: np.ndarray, labels: np.ndarray) -> float:
    """One gradient step on log T for the NLL of softmax(log p / T) on these rows."""
    log_t = math.log(temperature)

    def loss(x: float) -> float:
        return nll(temper(probabilities, math.exp(x)), labels)

    gradient = (loss(log_t + _H) - loss(log_t - _H)) / (2 * _H)
    lo, hi = (math.log(b) for b in T_BOUNDS)
    return math.exp(min(hi, max(lo, log_t - STEP * gradient)))


class TemperatureStore(WatchedBucket[dict[str, float]]):
    def __init__(self, js: JetStreamContext, bucket: str = BUCKET, replicas: int = 1) -> None:
        super().__init__(js, bucket, decode_floats, encode_floats, replicas=replicas)

    def get(self, capability: str) -> dict[str, float]:
        return dict(self.cached(kv_key(capability)) or {})

    async def learn(
        self,
        capability: str,
        members: dict[str, tuple[float, np.ndarray]],
        labels: np.ndarray,
    ) -> dict[str, float]:
        """`members`: each member's temperature used for the task and its untempered
        probabilities on the rows the labels are for."""

        def change(current: dict[str, float] | None) -> dict[str, float]:
            new = dict(current or {})
            for model, (used, probs) in members.items():
                new[model] = round(step(new.get(model, used), probs, labels), 6)
            return new

        return await self.update(kv_key(capability), change)
