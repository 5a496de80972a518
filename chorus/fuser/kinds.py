"""What a member's scores mean, made comparable before any fusion.

A member says what its scores output holds (its manifest's `output_kind`); the fuser turns
every classifier's scores into probabilities, so a soft vote never averages raw logits with
another member's probabilities, and reads a regressor's output as values [rows, k]. A
classifier's temperature (fitted by `chorus models calibrate`, chorus.core.calibration) divides its
logits, or its log-probabilities, before the softmax. Members of
one task must agree on classification or regression: mixing them has no meaning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.core.calibration import temper
from chorus.core.errors import FailedPrecondition, InvalidArgument

PROBABILITIES, LOGITS, BINARY, REGRESSION = "probabilities", "logits", "binary", "regression"
KINDS = (PROBABILITIES, LOGITS, BINARY, REGRESSION)


def as_scores(raw: np.ndarray, kind: str, temperature: float, *, field: str) -> np.ndarray:
    """Probabilities [rows, classes] for a classifier, values [rows, k] for a regressor."""
    kind = kind or PROBABILITIES
    if kind not in KINDS:
        raise InvalidArgument(f"{field}: unknown output_kind {kind!r}; expected one of {KINDS}")
    x = np.asarray(raw, dtype=np.float64)
    if kind in (BINARY, REGRESSION) and x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise InvalidArgument(f"{field}: expected [rows, columns], got shape {list(x.shape)}")
    if kind != REGRESSION and not temperature > 0:
        raise InvalidArgument(f"{field}: temperature must be > 0, got {temperature}")
    if kind == LOGITS:
        z = x / temperature
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)
    if kind == BINARY:
        if x.shape[1] != 1:
            raise InvalidArgument(f"{field}: a binary output is one column, got {x.shape[1]}")
        p = np.clip(x[:, 0], 0.0, 1.0)
        return temper(np.stack([1.0 - p, p], axis=1), temperature)
    if kind == PROBABILITIES:
        return temper(x, temperature)
    return x


def task_kind(models: Sequence[str], kinds: Sequence[str]) -> str:
    """REGRESSION when every member regresses, "classification" when none does;
    FailedPrecondition naming the members when they are mixed."""
    regress = [m for m, k in zip(models, kinds, strict=True) if k == REGRESSION]
    if not regress:
        return "classification"
    if len(regress) == len(models):
        return REGRESSION
    others = [m for m in models if m not in regress]
    raise FailedPrecondition(
        f"members: {regress} regress but {others} classify; one capability's members must "
        "share an output_kind family (fix the manifests' output_kind or capabilities)"
    )
