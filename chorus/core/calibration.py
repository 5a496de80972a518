"""Temperature scaling and the measures that say whether probabilities can be taken at their
word: expected calibration error (ECE) and the Brier score.

A member's probabilities p become softmax(log p / T): T > 1 softens an over-confident member,
T < 1 sharpens an under-confident one, and the top class never changes. T is the one number
that minimises the negative log-likelihood of held-out rows (Guo et al., 2017).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

EPS = 1e-12
T_BOUNDS = (0.05, 20.0)
ECE_BINS = 15


def temper(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row; T = 1 returns p unchanged."""
    p = np.asarray(probabilities, dtype=np.float64)
    if temperature == 1.0:
        return p
    z = np.log(np.clip(p, EPS, None)) / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(z / z.sum(axis=1, keepdims=True))


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    p = np.asarray(probabilities, dtype=np.float64)
    picked = p[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(np.log(np.clip(picked, EPS, None))))


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The T in T_BOUNDS minimising the held-out NLL of softmax(log p / T)."""
    if len(labels) == 0:
        raise ValueError("fit_temperature: no rows to fit on")
    lo, hi = (math.log(b) for b in T_BOUNDS)
    found = minimize_scalar(
        lambda log_t: nll(temper(probabilities, math.exp(log_t)), labels),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(math.exp(found.x))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Top-label ECE: rows binned by confidence, the |accuracy - confidence| gap of each bin
    weighted by its share of rows."""
    p = np.asarray(probabilities, dtype=np.float64)
    confidence = p.max(axis=1)
    correct = p.argmax(axis=1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared distance between the probabilities and the one-hot truth."""
    p = np.asarray(probabilities, dtype=np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
