"""Small ONNX graphs made in the test, for what reads a graph's declared tensors."""

from __future__ import annotations

import onnx
from onnx import helper

from chorus.spec import TensorSpec

_ELEM = {"FP32": onnx.TensorProto.FLOAT, "INT64": onnx.TensorProto.INT64,
         "FP64": onnx.TensorProto.DOUBLE, "BYTES": onnx.TensorProto.STRING}  # fmt: skip


def declaring(inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> bytes:
    """A graph that declares these tensors and computes nothing (never run, only read)."""

    def info(s: TensorSpec) -> onnx.ValueInfoProto:
        dims = [d if d >= 0 else "N" for d in s.shape]
        return helper.make_tensor_value_info(s.name, _ELEM[s.datatype], dims)

    g = helper.make_graph([], "declared", [info(s) for s in inputs], [info(s) for s in outputs])
    return helper.make_model(g).SerializeToString()
