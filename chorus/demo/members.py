"""The demo's three members of classify/digits, shared by everything that trains on them:
three families that err differently (linear, tree ensemble, neural net), so that fusing them
has something to gain."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from chorus.demo.datasets import Split

CAPABILITY = "classify/digits"
N_FEATURES = 64


def _logreg() -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.05))


def _forest() -> object:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=200, random_state=0, n_jobs=1)


def _mlp() -> object:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(128,), max_iter=600, random_state=0),
    )


MEMBERS: dict[str, tuple[Callable[[], object], str]] = {
    "logreg": (_logreg, "logistic regression on standardised pixels"),
    "forest": (_forest, "random forest, 200 trees"),
    "mlp": (_mlp, "multi-layer perceptron, one hidden layer of 128"),
}


def stacking_data(split: Split) -> tuple[object, np.ndarray, np.ndarray, tuple[str, ...]]:
    """A meta-model over the members' probabilities (concatenated in MEMBERS order), with its
    training rows (out-of-fold, so no member's answer on its own training data) and test rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    members = tuple(MEMBERS)
    oof, test = [], []
    for name in members:
        make = MEMBERS[name][0]
        oof.append(
            cross_val_predict(make(), split.x_train, split.y_train, cv=5, method="predict_proba")
        )
        test.append(make().fit(split.x_train, split.y_train).predict_proba(split.x_test))  # type: ignore[attr-defined]
    x_train = np.hstack(oof).astype(np.float32)
    x_test = np.hstack(test).astype(np.float32)
    return LogisticRegression(max_iter=2000, C=1.0), x_train, x_test, members


def final_step(est: object) -> object:
    """The estimator at the end of a pipeline (where skl2onnx options go)."""
    steps = getattr(est, "steps", None)
    return steps[-1][1] if steps else est
