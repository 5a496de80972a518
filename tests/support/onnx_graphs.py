"""Small ONNX graphs made in the test, for what reads a graph's declared tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from chorus.core.spec import TensorSpec

_ELEM = {"FP32": onnx.TensorProto.FLOAT, "INT64": onnx.TensorProto.INT64,
         "FP64": onnx.TensorProto.DOUBLE, "BYTES": onnx.TensorProto.STRING}  # fmt: skip


def declaring(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> bytes:
    """A graph that declares these tensors and computes nothing (never run, only read)."""

    def info(s: TensorSpec) -> onnx.ValueInfoProto:
        dims = [d if d >= 0 else "N" for d in s.shape]
        return helper.make_tensor_value_info(s.name, _ELEM[s.datatype], dims)

    g = helper.make_graph([], "declared", [info(s) for s in inputs], [info(s) for s in outputs])
    return helper.make_model(g).SerializeToString()


def linear(path: Path, *, softmax: bool = True, classes: int = 3, features: int = 4) -> Path:
    """x FP32 [N, features] -> scores FP32 [N, classes] (softmax or raw), label INT64 [N]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(features, classes)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["z"])]
    nodes.append(helper.make_node("Softmax", ["z"], ["scores"], axis=1) if softmax
                 else helper.make_node("Identity", ["z"], ["scores"]))  # fmt: skip
    nodes.append(helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0))
    g = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", features])],
        [helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["N", classes]),
         helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["N"])],
        [w],
    )  # fmt: skip
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path.write_bytes(model.SerializeToString())
    return path
