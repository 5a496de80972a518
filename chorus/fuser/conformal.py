"""Split conformal prediction on the fused answer: sets of labels, or intervals, that hold
the truth with a chosen probability, whatever the members are.

Calibration keeps one nonconformity score per held-out row: 1 - the fused probability of the
true label (the "LAC" score), or |true value - fused value| for a regression (the largest
over value columns). For coverage 1 - alpha over n scores, the threshold q is the
ceil((n + 1)(1 - alpha))-th smallest score; then a row's set is every label whose fused
probability is at least 1 - q, and its interval is the fused value +- q. If calibration and
served rows are exchangeable, the truth is in the set (interval) with probability at least
1 - alpha; with too few rows for the level asked, q is infinite and the set is every label.
A set of more than one label is a principled conflict: its size is the honest uncertainty.

The scores are kept per capability and fusion strategy (their fused scales differ) in the
JetStream key-value bucket `chorus_conformal`, which every fuser replica watches.
"""

from __future__ import annotations

import json
import math

import numpy as np
from nats.js import JetStreamContext

from chorus.core.config import FuserConfig
from chorus.core.errors import InvalidArgument
from chorus.core.subjects import kv_key
from chorus.fuser.watched import WatchedBucket

BUCKET = "chorus_conformal"
DEFAULT_COVERAGE = FuserConfig().conformal_coverage
"""CHORUS_FUSER_CONFORMAL_COVERAGE's default: the coverage of a request that names none."""
MAX_SCORES = 20_000
"""Older calibration rows are dropped beyond this many, so the threshold follows the mesh."""


def nonconformity(fused: np.ndarray, truth: np.ndarray, regression: bool) -> np.ndarray:
    """One score per row; `fused` is the fused probabilities [rows, classes] or values
    [rows, k], `truth` the true class indices [rows] or values [rows] / [rows, k]."""
    fused = np.asarray(fused, dtype=np.float64)
    if regression:
        values = fused if fused.ndim == 2 else fused[:, None]
        truth_v = np.asarray(truth, dtype=np.float64).reshape(len(values), -1)
        return np.asarray(np.abs(truth_v - values).max(axis=1))
    labels = np.asarray(truth, dtype=np.int64)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= fused.shape[1]:
        raise InvalidArgument(f"labels: expected class indices in [0, {fused.shape[1]})")
    return np.asarray(1.0 - fused[np.arange(len(labels)), labels])


def threshold(scores: np.ndarray, coverage: float) -> float:
    """The conformal threshold q for `coverage` over calibration `scores` (module docstring)."""
    if not 0.0 < coverage < 1.0:
        raise InvalidArgument(f"conflict.coverage: expected a number in (0, 1), got {coverage}")
    n = len(scores)
    rank = math.ceil((n + 1) * coverage)
    if n == 0 or rank > n:
        return math.inf
    return float(np.partition(np.asarray(scores, dtype=np.float64), rank - 1)[rank - 1])


def label_sets(probabilities: np.ndarray, q: float) -> list[list[int]]:
    keep = np.asarray(probabilities, dtype=np.float64) >= 1.0 - q
    return [np.flatnonzero(row).tolist() for row in keep]


def intervals(values: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    return v - q, v + q


def store_key(capability: str, strategy: str) -> str:
    return f"{kv_key(capability)}.{kv_key(strategy)}"


def _decode(value: bytes) -> np.ndarray:
    return np.asarray(json.loads(value)["scores"], dtype=np.float64)


def _encode(scores: np.ndarray) -> bytes:
    return json.dumps({"scores": np.asarray(scores).tolist()}).encode()


class ConformalStore(WatchedBucket[np.ndarray]):
    """The calibration scores by capability and strategy; writes replace or extend."""

    def __init__(self, js: JetStreamContext, bucket: str = BUCKET, replicas: int = 1) -> None:
        super().__init__(js, bucket, _decode, _encode, replicas=replicas)

    def get(self, capability: str, strategy: str) -> np.ndarray | None:
        return self.cached(store_key(capability, strategy))

    async def put(
        self, capability: str, strategy: str, scores: np.ndarray, *, extend: bool = False
    ) -> int:
        """Store (or append) calibration scores; returns how many the key now holds."""
        key = store_key(capability, strategy)
        new = np.asarray(scores, dtype=np.float64)

        def change(current: np.ndarray | None) -> np.ndarray:
            both = np.concatenate([current, new]) if extend and current is not None else new
            return both[-MAX_SCORES:]

        return len(await self.update(key, change))
