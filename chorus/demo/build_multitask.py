"""The multi-task model: one shared trunk, three heads, one ONNX call for all of them.

An MLP with one hidden layer of 128 trained on a multi-label target over the demo digits:
ten one-hot digit columns, then is-odd, then greater-than-four (12 sigmoid outputs). The
hidden layer is the shared trunk; each capability reads its own columns of "probabilities",
as the manifest's `heads` say (services/heads.py cuts them out at serving time).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from chorus.core.spec import TensorSpec
from chorus.demo.datasets import LABELS, Split, digits_split
from chorus.services import repository
from chorus.services.heads import apply_head
from chorus.services.repository import Head, Manifest

NAME = "multitask"
DIGITS = "classify/digits"
PARITY = "classify/parity"
GREATER_THAN_FOUR = "classify/greater-than-four"
CAPABILITIES = (DIGITS, PARITY, GREATER_THAN_FOUR)
N_FEATURES = 64
HEADS: dict[str, Head] = {
    DIGITS: Head(columns=tuple(range(10)), labels=LABELS, kind="probabilities"),
    PARITY: Head(columns=(10,), labels=("even", "odd"), kind="binary"),
    GREATER_THAN_FOUR: Head(columns=(11,), labels=("<=4", ">4"), kind="binary"),
}
N_COLUMNS = 12


def head_targets(y: np.ndarray) -> dict[str, np.ndarray]:
    """Each head's true label index for digits `y`."""
    y = np.asarray(y, dtype=np.int64)
    return {DIGITS: y, PARITY: y % 2, GREATER_THAN_FOUR: (y > 4).astype(np.int64)}


def multitask_target(y: np.ndarray) -> np.ndarray:
    """int64 [rows, 12]: one-hot digit, is_odd, greater_than_four."""
    t = head_targets(y)
    onehot = np.eye(10, dtype=np.int64)[t[DIGITS]]
    return np.column_stack([onehot, t[PARITY], t[GREATER_THAN_FOUR]])


def multitask_pipeline() -> object:
    """Untrained pipeline: standardised pixels into one shared hidden layer of 128."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        MLPClassifier(hidden_layer_sizes=(128,), max_iter=1000, random_state=0),
    )


def fit_multitask(split: Split) -> object:
    """The pipeline trained on the split's training rows (deterministic: random_state=0)."""
    from threadpoolctl import threadpool_limits

    est = multitask_pipeline()
    # One BLAS thread: the matrices are small, and on a busy host more threads only contend
    # (seen: 1.5 s with one, 37 s with two).
    with threadpool_limits(limits=1, user_api="blas"):
        est.fit(split.x_train, multitask_target(split.y_train))  # type: ignore[attr-defined]
    return est


def build_multitask_model(root: Path, *, force: bool = False) -> Path | None:
    """Train and export the multitask model unless it is there already (always when `force`)."""
    if not force and NAME in repository.list_models(root):
        return None
    split = digits_split()
    est = fit_multitask(split)
    scores = est.predict_proba(split.x_test)  # type: ignore[attr-defined]
    manifest = Manifest(
        name=NAME,
        version="1",
        capabilities=CAPABILITIES,
        inputs=(TensorSpec("input", "FP32", (-1, N_FEATURES)),),
        outputs=(
            TensorSpec("label", "INT64", (-1, N_COLUMNS)),
            TensorSpec("probabilities", "FP32", (-1, N_COLUMNS)),
        ),
        labels=LABELS,
        scores_output="probabilities",
        description=("multi-task MLP, one shared hidden layer of 128; heads: digit, parity, >4"),
        augment="shift2d:8x8",
        heads=HEADS,
    )
    truth = head_targets(split.y_test)
    metrics: dict[str, float] = {}
    for capability in CAPABILITIES:
        predicted = apply_head(manifest, capability, {"probabilities": scores})["label"]
        metrics[f"accuracy/{capability}"] = round(float(np.mean(predicted == truth[capability])), 4)
    metrics["holdout_accuracy"] = metrics[f"accuracy/{DIGITS}"]
    return repository.write(root, replace(manifest, metrics=metrics), _to_onnx(est)).path


def _to_onnx(est: object) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    mlp = est.steps[-1][1]  # type: ignore[attr-defined]
    onx = convert_sklearn(
        est,
        initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
        options={id(mlp): {"zipmap": False}},
    )
    # skl2onnx declares a multi-label "label" as [N] although it is [N, 12] (0/1 per column);
    # say so, or ONNX Runtime warns on every call.
    for output in onx.graph.output:
        if output.name == "label":
            dims = output.type.tensor_type.shape.dim
            if len(dims) == 1:
                dims.add().dim_value = N_COLUMNS
    return bytes(onx.SerializeToString())
