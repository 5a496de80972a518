"""`chorus models build`: trains the demo classifiers on bundled digits and writes ONNX files.

The three members (chorus.demo.members), plus the models the fuser itself uses: the
arbiter, the stacking meta-model, the gate, the caption model and the multi-task model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from chorus.core.spec import TensorSpec
from chorus.demo.build_text import NAME as CAPTION_MODEL
from chorus.demo.build_text import build_caption_model
from chorus.demo.datasets import LABELS, digits_split
from chorus.demo.members import CAPABILITY, MEMBERS, final_step, stacking_data
from chorus.services import repository
from chorus.services.repository import Manifest

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
"""Models with builders of their own (imported when built: they train for a while)."""


def _knn() -> object:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=5, weights="distance")


def build_demo(
    root: Path,
    *,
    force: bool = False,
    names: list[str] | None = None,
    on_model: Callable[[str], None] | None = None,
) -> list[Path]:
    """Train and export the demo models that are missing (all of them when `force`);
    `on_model(name)` is told before each one (training takes seconds: `chorus models build`
    shows it as progress).

    Besides the three members: an arbiter (k-nearest neighbours, asked only to settle
    conflicts) and a stacking meta-model that learns how to combine the members from their
    out-of-fold probabilities on the training split, so it never sees a member's answer on
    data that member was trained on.
    """
    wanted = names or [*MEMBERS, ARBITER, STACKER, CAPTION, MULTITASK, GATE]
    todo = [n for n in wanted if force or n not in repository.list_models(root)]
    if not todo:
        return []
    written: list[Path] = []
    for name, build_other in _OTHER_BUILDERS.items():
        if name in todo:
            todo.remove(name)
            if on_model is not None:
                on_model(name)
            path = build_other(root, force=True)
            if path is not None:
                written.append(path)
    split = digits_split()
    for name in todo:
        if on_model is not None:
            on_model(name)
        if name == STACKER:
            est, x_train, x_test, members = stacking_data(split)
        else:
            make = _knn if name == ARBITER else MEMBERS[name][0]
            est, x_train, x_test, members = make(), split.x_train, split.x_test, ()
        est.fit(x_train, split.y_train)  # type: ignore[attr-defined]
        accuracy = float(np.mean(est.predict(x_test) == split.y_test))  # type: ignore[attr-defined]
        if name == STACKER:
            capabilities: tuple[str, ...] = (f"stack:{CAPABILITY}",)
            description = "stacking meta-model"
        elif name == ARBITER:
            capabilities, description = (f"arbiter:{CAPABILITY}",), "5-nearest-neighbours arbiter"
        else:
            capabilities, description = (CAPABILITY, MULTIMODAL), MEMBERS[name][1]
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


def _to_onnx(est: object, n_features: int) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        est,
        initial_types=[("input", FloatTensorType([None, n_features]))],
        options={id(final_step(est)): {"zipmap": False}},
    )
    return bytes(onx.SerializeToString())
