"""The demo data: scikit-learn's bundled digits (no download), split the same way everywhere."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 0
TEST_SIZE = 0.3
LABELS: tuple[str, ...] = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split() -> Split:
    """8x8 digit images as FP32 rows of 64 pixels (0..16), 70/30 stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x.astype(np.float32),
        y.astype(np.int64),
        test_size=TEST_SIZE,
        random_state=SEED,
        stratify=y,
    )
    return Split(x_tr, y_tr, x_te, y_te)
