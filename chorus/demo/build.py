"""`chorus models build`: trains the demo classifiers on bundled digits and writes ONNX files.

Three member families that err differently (linear, tree ensemble, neural net) so that
fusing them has something to gain, plus the models the fuser itself uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from chorus.demo.build_text import NAME as CAPTION_MODEL
from chorus.demo.build_text import build_caption_model
from chorus.demo.datasets import LABELS, Split, digits_split
from chorus.services import repository
from chorus.services.repository import Manifest
from chorus.spec import TensorSpec

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


MULTIMODAL = "classify/digits+caption"
ARBITER = "knn"
STACKER = "stack"
CAPTION = CAPTION_MODEL
MULTITASK = "multitask"
GATE = "gate"


def _build_multitask(root: Path, *, force: bool) -> Path | None:
    from chorus.demo.build_multitask import build_multitask_model

    return build_multitask_model(root, force=force)


def _build_gate(root: Path, *, force: bool) -> Path | None:
    from chorus.demo.build_gate import build_gate_model

    return build_gate_model(root, force=force)


_OTHER_BUILDERS: dict[str, Callable[..., Path | None]] = {
    CAPTION: build_caption_model,
    MULTITASK: _build_multitask,
    GATE: _build_gate,
}
"""Models with builders of their own (imported lazily: the gate imports this module)."""


def _knn() -> object:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=5, weights="distance")


def build_demo(root: Path, *, force: bool = False, names: list[str] | None = None) -> list[Path]:
    """Train and export the demo models that are missing (all of them when `force`).

    Besides the three members: an arbiter (k-nearest neighbours, asked only to settle
    conflicts) and a stacking meta-model that learns how to combine the members from their
    out-of-fold probabilities on the training split, so it never sees a member's answer on
    data that member was trained on.
    """
    wanted = names or [*DEMO_MODELS, ARBITER, STACKER, CAPTION, MULTITASK, GATE]
    todo = [n for n in wanted if force or n not in repository.list_models(root)]
    if not todo:
        return []
    written: list[Path] = []
    for name, build_other in _OTHER_BUILDERS.items():
        if name in todo:
            todo.remove(name)
            path = build_other(root, force=True)
            if path is not None:
                written.append(path)
    split = digits_split()
    for name in todo:
        if name == STACKER:
            est, x_train, x_test, members = _stacker(split)
        else:
            make = _knn if name == ARBITER else DEMO_MODELS[name][0]
            est, x_train, x_test, members = make(), split.x_train, split.x_test, ()
        est.fit(x_train, split.y_train)  # type: ignore[attr-defined]
        accuracy = float(np.mean(est.predict(x_test) == split.y_test))  # type: ignore[attr-defined]
        if name == STACKER:
            capabilities: tuple[str, ...] = (f"stack:{CAPABILITY}",)
            description = "stacking meta-model"
        elif name == ARBITER:
            capabilities, description = (f"arbiter:{CAPABILITY}",), "5-nearest-neighbours arbiter"
        else:
            capabilities, description = (CAPABILITY, MULTIMODAL), DEMO_MODELS[name][1]
        manifest = Manifest(
            name=name,
            version="1",
            capabilities=capabilities,
            inputs=(TensorSpec("input", "FP32", (-1, x_train.shape[1])),),
            outputs=(
                TensorSpec("label", "INT64", (-1,)),
                TensorSpec("probabilities", "FP32", (-1, len(LABELS))),
            ),
            labels=LABELS,
            scores_output="probabilities",
            description=description,
            metrics={"holdout_accuracy": round(accuracy, 4)},
            augment="" if name == STACKER else "shift2d:8x8",
            members=members,
        )
        written.append(repository.write(root, manifest, _to_onnx(est, x_train.shape[1])).path)
    return written


def _stacker(split: Split) -> tuple[object, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Meta-model over the members' probabilities, concatenated in DEMO_MODELS order."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    members = tuple(DEMO_MODELS)
    oof, test = [], []
    for name in members:
        make = DEMO_MODELS[name][0]
        oof.append(
            cross_val_predict(make(), split.x_train, split.y_train, cv=5, method="predict_proba")
        )
        test.append(make().fit(split.x_train, split.y_train).predict_proba(split.x_test))  # type: ignore[attr-defined]
    x_train = np.hstack(oof).astype(np.float32)
    x_test = np.hstack(test).astype(np.float32)
    return LogisticRegression(max_iter=2000, C=1.0), x_train, x_test, members


def _to_onnx(est: object, n_features: int) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        est,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(_final(est)): {"zipmap": False}},
    )
    return bytes(onx.SerializeToString())


def _final(est: object) -> object:
    steps = getattr(est, "steps", None)
    return steps[-1][1] if steps else est
