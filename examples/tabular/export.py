"""Train a small, user-style set of tabular models and write them as plain ONNX files.

The point is to stand in for "a user's own models": ordinary scikit-learn (and optionally
LightGBM) models exported the way users export them, with no Chorus manifest or repository
layout.  `chorus models add FILE.onnx ...` must work out everything from the graphs alone, so
the set deliberately mixes output conventions (probabilities, raw logits, regression values)
and includes a graph with two inputs of different dtypes.

Every file is re-run with onnxruntime on held-out rows and compared with the model that made
it, so a bad export fails here rather than later inside the mesh.

Usage: python examples/tabular/export.py OUT_DIR [--no-lightgbm] [--seed N]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import is_classifier
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import (
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

Array = npt.NDArray[Any]
# Opset 17 and IR 9 load in onnxruntime 1.15 and later, not only the version installed here.
OPSET = {"": 17, "ai.onnx.ml": 3}
IR_VERSION = 9
LGBM_OPSET = 15  # the highest onnxmltools 1.16 converts LightGBM to
FLAG_COLUMNS = (0, 1, 4)  # mean radius, mean texture, mean smoothness
CANCER, DIABETES = "classify/cancer", "regress/diabetes"


@dataclass
class Exported:
    """An ONNX graph together with what its source model said about the test rows."""

    name: str
    model: onnx.ModelProto
    capability: str
    output_kind: str  # "probabilities" | "logits" | "regression"
    scores_output: str
    feeds: dict[str, Array]
    expected: Array  # predict_proba or predict of the source model


def sk_onnx(model: Any, n_features: int) -> onnx.ModelProto:
    """Export the way a user would: skl2onnx defaults, except no ZipMap (plain tensors)."""
    return to_onnx(
        model,
        initial_types=[("x", FloatTensorType([None, n_features]))],
        target_opset=OPSET,
        options={"zipmap": False} if is_classifier(model) else None,
    )


def linear_graph(
    pipe: Pipeline, name: str, n_flags: int = 0, softmax: bool = True
) -> onnx.ModelProto:
    """Hand-build scaler + binary linear model, as users do for models skl2onnx cannot see.

    A binary sklearn model has one score z; columns (-z/2, z/2) make softmax equal its sigmoid.
    With n_flags > 0 a second INT64 input is cast and appended after the standardised features.
    """
    scaler: StandardScaler = pipe[0]
    clf: LogisticRegression = pipe[-1]
    w = clf.coef_[0].astype(np.float32)
    b = np.float32(clf.intercept_[0])
    inits = [
        numpy_helper.from_array(scaler.mean_.astype(np.float32), "mean"),
        numpy_helper.from_array(scaler.scale_.astype(np.float32), "scale"),
        numpy_helper.from_array(np.stack([-w / 2, w / 2], axis=1), "W"),
        numpy_helper.from_array(np.array([-b / 2, b / 2], dtype=np.float32), "B"),
    ]
    n_x = len(scaler.mean_)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, n_x])]
    nodes = [
        helper.make_node("Sub", ["x", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["z"]),
    ]
    features = "z"
    if n_flags:
        inputs.append(helper.make_tensor_value_info("flags", TensorProto.INT64, [None, n_flags]))
        nodes += [
            helper.make_node("Cast", ["flags"], ["flags_f"], to=TensorProto.FLOAT),
            helper.make_node("Concat", ["z", "flags_f"], ["features"], axis=1),
        ]
        features = "features"
    scores = "scores" if softmax else "logits"
    nodes += [
        helper.make_node("MatMul", [features, "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], [scores]),
    ]
    outputs = []
    if softmax:
        nodes += [
            helper.make_node("Softmax", ["scores"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ]
        outputs.append(helper.make_tensor_value_info("label", TensorProto.INT64, [None]))
    outputs.append(
        helper.make_tensor_value_info(
            "probabilities" if softmax else "logits", TensorProto.FLOAT, [None, 2]
        )
    )
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET[""])])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def lightgbm_models(
    seed: int, cancer: tuple[Array, Array, Array], diabetes: tuple[Array, Array, Array]
) -> list[Exported]:
    """LightGBM is optional: it stands for the non-sklearn converters users also bring."""
    try:
        import lightgbm
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType as MLFloatTensorType
    except ImportError as err:
        print(f"note: skipping LightGBM models ({err.name} is not installed)")
        return []
    out = []
    for name, cls, (xtr, ytr, xte), cap, kind, scores in (
        ("cancer_lgbm", lightgbm.LGBMClassifier, cancer, CANCER, "probabilities", "probabilities"),
        ("diabetes_lgbm", lightgbm.LGBMRegressor, diabetes, DIABETES, "regression", "variable"),
    ):
        est = cls(n_estimators=100, random_state=seed, verbose=-1, n_jobs=1).fit(xtr, ytr)
        onx = onnxmltools.convert_lightgbm(
            est,
            initial_types=[("x", MLFloatTensorType([None, xtr.shape[1]]))],
            target_opset=LGBM_OPSET,
            zipmap=False,
        )
        round_thresholds_down(onx, est.booster_.dump_model())
        for output in onx.graph.output:  # the converter declares `label` as [1], not [N]
            output.type.tensor_type.shape.dim[0].dim_param = "N"
        expected = np.asarray(
            est.predict_proba(xte) if kind == "probabilities" else est.predict(xte)
        )
        out.append(Exported(name, onx, cap, kind, scores, {"x": xte}, expected))
    return out


def round_thresholds_down(onx: onnx.ModelProto, dump: dict[str, Any]) -> None:
    """LightGBM splits at `x <= t` with t a double between two training values; the converter
    rounds t to the nearest float32, which can be the upper value itself, and then that value
    goes left in ONNX and right in LightGBM (seen: 5 of 133 diabetes rows off by up to 3.5).
    For a float32 x, `x <= t` is exactly `x <= the largest float32 not above t`."""
    exact: dict[tuple[int, np.float32], float] = {}

    def walk(node: dict[str, Any]) -> None:
        if "split_feature" in node:
            t = float(node["threshold"])
            exact[(int(node["split_feature"]), np.float32(t))] = t
            walk(node["left_child"])
            walk(node["right_child"])

    for tree in dump["tree_info"]:
        walk(tree["tree_structure"])
    for node in onx.graph.node:
        if not node.op_type.startswith("TreeEnsemble"):
            continue
        attrs = {a.name: a for a in node.attribute}
        features, values = attrs["nodes_featureids"].ints, attrs["nodes_values"].floats
        for i, (feature, value) in enumerate(zip(features, values, strict=True)):
            t = exact.get((feature, np.float32(value)))
            if t is not None and float(np.float32(t)) > t:
                values[i] = float(np.nextafter(np.float32(t), np.float32(-np.inf)))


def check(exp: Exported, labels_y: Array) -> float:
    """Run the written graph with onnxruntime; fail loudly unless it agrees with its source."""
    sess = ort.InferenceSession(exp.model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    result = dict(zip(names, sess.run(None, exp.feeds), strict=True))
    got = np.asarray(result[exp.scores_output])
    if exp.output_kind == "regression":
        got = got.reshape(-1)
        np.testing.assert_allclose(got, exp.expected, rtol=1e-4, atol=1e-4, err_msg=exp.name)
        return float(np.sqrt(np.mean((got - labels_y) ** 2)))
    if exp.output_kind == "logits":
        e = np.exp(got - got.max(axis=1, keepdims=True))
        got = e / e.sum(axis=1, keepdims=True)
    assert got.shape == exp.expected.shape, (exp.name, got.shape)
    np.testing.assert_allclose(got, exp.expected, rtol=1e-4, atol=1e-4, err_msg=exp.name)
    predicted = np.asarray(result["label"]) if "label" in result else got.argmax(axis=1)
    clear = np.abs(exp.expected[:, 1] - 0.5) > 1e-4  # an exact tie may break either way
    assert np.array_equal(predicted[clear], exp.expected.argmax(axis=1)[clear]), exp.name
    return float(np.mean(predicted == labels_y))


def main() -> None:
    """Train, export, verify and describe; the JSON is for humans and the README, not Chorus."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--no-lightgbm", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    seed: int = args.seed

    # Fit on float32 values so the models see exactly what the FP32 graphs will see.
    bc = load_breast_cancer()
    labels = [str(t) for t in bc.target_names]
    cx_tr, cx_te, cy_tr, cy_te = train_test_split(
        bc.data.astype(np.float32),
        bc.target.astype(np.int64),
        test_size=0.3,
        stratify=bc.target,
        random_state=seed,
    )
    medians = np.median(cx_tr[:, FLAG_COLUMNS], axis=0)
    flags_tr, flags_te = ((x[:, FLAG_COLUMNS] > medians).astype(np.int64) for x in (cx_tr, cx_te))

    db = load_diabetes()
    dx_tr, dx_te, dy_tr, dy_te = train_test_split(
        db.data.astype(np.float32), db.target.astype(np.float32), test_size=0.3, random_state=seed
    )

    exports: list[Exported] = []
    feeds = {"x": cx_te}
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(cx_tr, cy_tr)
    forest = RandomForestClassifier(n_estimators=100, n_jobs=1, random_state=seed).fit(cx_tr, cy_tr)
    logits = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000)).fit(
        cx_tr, cy_tr
    )
    for name, est in (("cancer_logreg", logreg), ("cancer_forest", forest)):
        exports.append(
            Exported(
                name,
                sk_onnx(est, 30),
                CANCER,
                "probabilities",
                "probabilities",
                feeds,
                est.predict_proba(cx_te),
            )
        )
    exports.append(
        Exported(
            "cancer_logits",
            linear_graph(logits, "cancer_logits", softmax=False),
            CANCER,
            "logits",
            "logits",
            feeds,
            logits.predict_proba(cx_te),
        )
    )

    # Flags go in unscaled, so only x passes through the scaler; one LR sees all 33 columns.
    scaler = StandardScaler().fit(cx_tr)
    two = LogisticRegression(max_iter=1000).fit(
        np.hstack([scaler.transform(cx_tr), flags_tr]), cy_tr
    )
    two_pipe = Pipeline([("scale", scaler), ("clf", two)])
    exports.append(
        Exported(
            "cancer_two_input",
            linear_graph(two_pipe, "cancer_two_input", n_flags=len(FLAG_COLUMNS)),
            CANCER,
            "probabilities",
            "probabilities",
            {"x": cx_te, "flags": flags_te},
            two.predict_proba(np.hstack([scaler.transform(cx_te), flags_te])),
        )
    )

    for name, est in (
        ("diabetes_ridge", make_pipeline(StandardScaler(), Ridge(alpha=1.0))),
        ("diabetes_forest", RandomForestRegressor(n_estimators=100, n_jobs=1, random_state=seed)),
        ("diabetes_gbr", GradientBoostingRegressor(random_state=seed)),
    ):
        est.fit(dx_tr, dy_tr)
        exports.append(
            Exported(
                name,
                sk_onnx(est, 10),
                DIABETES,
                "regression",
                "variable",
                {"x": dx_te},
                est.predict(dx_te),
            )
        )

    if args.no_lightgbm:
        print("note: skipping LightGBM models (--no-lightgbm)")
    else:
        exports += lightgbm_models(seed, (cx_tr, cy_tr, cx_te), (dx_tr, dy_tr, dx_te))

    np.save(out / "cancer_test_x.npy", cx_te)
    np.save(out / "cancer_test_flags.npy", flags_te)
    np.save(out / "cancer_test_y.npy", cy_te)
    np.save(out / "diabetes_test_x.npy", dx_te)
    np.save(out / "diabetes_test_y.npy", dy_te)
    data_files = {"x": "{}_test_x.npy", "flags": "cancer_test_flags.npy"}

    entries = []
    for exp in exports:
        is_cancer = exp.capability == CANCER
        metric = check(exp, cy_te if is_cancer else dy_te)
        onnx.save(exp.model, out / f"{exp.name}.onnx")
        entry: dict[str, Any] = {
            "file": f"{exp.name}.onnx",
            "name": exp.name,
            "capability": exp.capability,
        }
        if is_cancer:
            entry["labels"] = labels
        entry |= {
            "output_kind": exp.output_kind,
            "scores_output": exp.scores_output,
            "metric": "accuracy" if is_cancer else "rmse",
            "test_metric": round(metric, 6),
            "inputs": {k: data_files[k].format(exp.name.split("_")[0]) for k in exp.feeds},
        }
        entries.append(entry)
        print(f"{exp.name:18s} {'accuracy' if is_cancer else 'rmse':8s} {metric:.4f}")
    (out / "models.json").write_text(json.dumps(entries, indent=2) + "\n")
    print(f"wrote {len(entries)} models and test data to {out}")


if __name__ == "__main__":
    main()
