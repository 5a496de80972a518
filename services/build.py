"""`chorus models build`: trains the demo classifiers on bundled digits and writes ONNX files.

Three model families that err differently (linear, tree ensemble, neural net) so that
fusing them has something to gain.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from chorus.datasets import LABELS, digits_split
from chorus.spec import TensorSpec
from services import repository
from services.repository import Manifest

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


DEMO_MODELS: dict[str, tuple[Callable[[], object], str]] = {
    "logreg": (_logreg, "logistic regression on standardised pixels"),
    "forest": (_forest, "random forest, 200 trees"),
    "mlp": (_mlp, "multi-layer perceptron, one hidden layer of 128"),
}


def build_demo(root: Path, *, force: bool = False, names: list[str] | None = None) -> list[Path]:
    """Train and export the demo models that are missing (all of them when `force`)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    wanted = names or list(DEMO_MODELS)
    todo = [n for n in wanted if force or n not in repository.list_models(root)]
    if not todo:
        return []
    split = digits_split()
    written = []
    for name in todo:
        make, description = DEMO_MODELS[name]
        est = make()
        est.fit(split.x_train, split.y_train)  # type: ignore[attr-defined]
        accuracy = float(np.mean(est.predict(split.x_test) == split.y_test))  # type: ignore[attr-defined]
        onx = convert_sklearn(
            est,
            initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
            options={id(_final(est)): {"zipmap": False}},
        )
        manifest = Manifest(
            name=name,
            version="1",
            capabilities=(CAPABILITY,),
            inputs=(TensorSpec("input", "FP32", (-1, N_FEATURES)),),
            outputs=(
                TensorSpec("label", "INT64", (-1,)),
                TensorSpec("probabilities", "FP32", (-1, len(LABELS))),
            ),
            labels=LABELS,
            scores_output="probabilities",
            description=description,
            metrics={"holdout_accuracy": round(accuracy, 4)},
        )
        written.append(repository.write(root, manifest, onx.SerializeToString()).path)
    return written


def _final(est: object) -> object:
    steps = getattr(est, "steps", None)
    return steps[-1][1] if steps else est
