"""`chorus models build --bench`: a small residual CNN with random weights, for throughput work.

Written with onnx's helpers, not torch (from the package index torch brings gigabytes of CUDA
libraries into every install). Its accuracy means nothing; its cost per image is what a real
vision model's would be: convolutions dominate, so batching pays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from chorus.core.spec import TensorSpec
from chorus.services import repository
from chorus.services.repository import Manifest, RuntimeOptions

NAME = "cnn"
CAPABILITY = "classify/bench-images"
SHAPE = (3, 32, 32)
WIDTH = 48
BLOCKS = 3
CLASSES = 10


def cnn_graph(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def weight(name: str, shape: tuple[int, ...]) -> str:
        fan_in = int(np.prod(shape[1:])) or 1
        w = rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
        inits.append(numpy_helper.from_array(w, name))
        return name

    def conv(x: str, cin: int, cout: int, name: str, relu: bool = True) -> str:
        w = weight(f"{name}.w", (cout, cin, 3, 3))
        b = weight(f"{name}.b", (cout,))
        out = f"{name}.out"
        nodes.append(helper.make_node("Conv", [x, w, b], [out], pads=[1, 1, 1, 1]))
        if not relu:
            return out
        nodes.append(helper.make_node("Relu", [out], [f"{name}.relu"]))
        return f"{name}.relu"

    x = conv("input", SHAPE[0], WIDTH, "stem")
    for i in range(BLOCKS):
        h = conv(x, WIDTH, WIDTH, f"block{i}.a")
        h = conv(h, WIDTH, WIDTH, f"block{i}.b", relu=False)
        nodes.append(helper.make_node("Add", [x, h], [f"block{i}.sum"]))
        nodes.append(helper.make_node("Relu", [f"block{i}.sum"], [f"block{i}.out"]))
        x = f"block{i}.out"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    fc_w = weight("fc.w", (CLASSES, WIDTH))
    fc_b = weight("fc.b", (CLASSES,))
    nodes.append(helper.make_node("Gemm", ["flat", fc_w, fc_b], ["logits"], transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    nodes.append(helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "chorus-bench-cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *SHAPE])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_cnn(root: Path, *, force: bool = False) -> Path | None:
    if not force and NAME in repository.list_models(root):
        return None
    manifest = Manifest(
        name=NAME,
        version="1",
        capabilities=(CAPABILITY,),
        inputs=(TensorSpec("input", "FP32", (-1, *SHAPE)),),
        outputs=(
            TensorSpec("label", "INT64", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, CLASSES)),
        ),
        labels=tuple(str(i) for i in range(CLASSES)),
        scores_output="probabilities",
        description=f"residual CNN, {BLOCKS} blocks of {WIDTH} channels, random weights",
        # A convolution costs little more per image in a batch of 64 than alone.
        runtime=RuntimeOptions(max_batch=64, max_batch_delay_ms=5.0),
    )
    return repository.write(root, manifest, cnn_graph().SerializeToString()).path
