"""The gate for gated fusion: per-input trust in each member, learned on held-out answers.

Input "input", FP32 [-1, 94]: the 64 pixels of a digit followed by the members' class
probabilities for it, concatenated in MEMBERS order (logreg, forest, mlp; 3 x 10).
Output "probabilities", FP32 [-1, 3]: for each member, in the same order, the gate's raw
probability that this member's top class is right on this input. They are not normalised
(a row need not sum to 1); `fuser.strategies.gated.gated_fuse` floors and normalises them
into per-row weights. The manifest's `labels` and `members` both name the members, so
column j of the output belongs to `members[j]`.

Training data: the members' out-of-fold probabilities on the training split (the same
5-fold cross_val_predict the stacking meta-model uses), so the gate learns how members err
on data they did not see. The model: standardised features, then one L2-regularised
logistic regression per member (sklearn's MultiOutputClassifier). skl2onnx exports that as a
sequence of per-member [rows, 2] probability tensors; a two-node tail (ConcatFromSequence,
Gather of the "correct" columns) turns it into the [rows, members] tensor above.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from chorus.core.spec import TensorSpec
from chorus.demo.datasets import LABELS, digits_split
from chorus.demo.members import CAPABILITY, MEMBERS, N_FEATURES, final_step, stacking_data
from chorus.services import repository
from chorus.services.repository import Manifest

if TYPE_CHECKING:
    from onnx import GraphProto

NAME = "gate"
VERSION = "1"
GATE_CAPABILITY = f"gate:{CAPABILITY}"
INPUT = "input"
OUTPUT = "probabilities"
C = 0.1
"""Inverse L2 strength of each member's logistic regression: strong enough to keep the gate
smooth (members are right ~97% of the time, so each target has only 30-50 positives of
'wrong')."""


def gate_estimator() -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.multioutput import MultiOutputClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), MultiOutputClassifier(LogisticRegression(max_iter=5000, C=C))
    )


def build_gate_model(root: Path, *, force: bool = False) -> Path | None:
    """Train and export the gate unless it is in `root` already (always when `force`).

    Returns the written version's directory, or None when nothing was written.
    """
    from threadpoolctl import threadpool_limits

    from chorus.fuser.strategies.base import MemberScores
    from chorus.fuser.strategies.gated import gate_input, gated_fuse

    if not force and NAME in repository.list_models(root):
        return None
    split = digits_split()
    members = tuple(MEMBERS)
    n_classes = len(LABELS)
    # The data are small: BLAS threads only contend (10x slower on a busy 2-core host).
    with threadpool_limits(limits=1):
        _, oof, test, _ = stacking_data(split)
        oof_p = np.split(oof, len(members), axis=1)
        test_p = np.split(test, len(members), axis=1)
        # Target column j: member j's top class is the true class.
        correct = np.stack([p.argmax(axis=1) == split.y_train for p in oof_p], axis=1)
        x_train = gate_input(split.x_train, oof_p)
        est = gate_estimator()
        est.fit(x_train, correct.astype(np.int64))  # type: ignore[attr-defined]
    onnx_bytes = _to_onnx(est, x_train.shape[1], len(members))
    weights = _run(onnx_bytes, gate_input(split.x_test, test_p))
    scores = [MemberScores(n, p) for n, p in zip(members, test_p, strict=True)]
    fused = gated_fuse(scores, weights)
    accuracy = float(np.mean(fused.labels == split.y_test))
    manifest = Manifest(
        name=NAME,
        version=VERSION,
        capabilities=(GATE_CAPABILITY,),
        inputs=(TensorSpec(INPUT, "FP32", (-1, N_FEATURES + len(members) * n_classes)),),
        outputs=(TensorSpec(OUTPUT, "FP32", (-1, len(members))),),
        labels=members,
        scores_output=OUTPUT,
        description=(
            "gate for gated fusion: input = 64 pixels + members' probabilities "
            f"({', '.join(members)}); output = per-member raw probability that the member's "
            "top class is right (not normalised; the gated strategy floors and normalises)"
        ),
        metrics={"holdout_accuracy": round(accuracy, 4)},
        members=members,
    )
    return repository.write(root, manifest, onnx_bytes).path


def _to_onnx(est: object, n_features: int, n_members: int) -> bytes:
    """skl2onnx's export, its per-member sequence output turned into one [rows, members]."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        est,
        initial_types=[(INPUT, FloatTensorType([None, n_features]))],
        options={id(final_step(est)): {"zipmap": False}},
    )
    graph = onx.graph
    seq = "member_correct_seq"
    for node in graph.node:
        node.output[:] = [seq if o == OUTPUT else o for o in node.output]
    # Each member's tensor is [rows, 2] over classes (0 = wrong, 1 = right): concatenated,
    # the "right" columns are 1, 3, 5, ...
    graph.initializer.append(
        helper.make_tensor(
            "member_correct_cols", TensorProto.INT64, [n_members], range(1, 2 * n_members, 2)
        )
    )
    graph.node.extend(
        [
            helper.make_node("ConcatFromSequence", [seq], ["member_pairs"], axis=1),
            helper.make_node("Gather", ["member_pairs", "member_correct_cols"], [OUTPUT], axis=1),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None, n_members]))
    _prune(graph)
    onnx.checker.check_model(onx)
    return bytes(onx.SerializeToString())


def _prune(graph: GraphProto) -> None:
    """Drop nodes and initializers no graph output depends on (the per-member labels)."""
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def _run(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT], {INPUT: x})[0])
