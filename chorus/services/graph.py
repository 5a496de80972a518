"""What an ONNX file says about itself: its input and output tensors, as Chorus specs.

A model's graph already names its tensors, their datatypes and shapes, so a manifest need
not repeat them (Triton fills a model's config the same way). Here the graph is read without
its weights, and a manifest's own specs are checked against it, so that a typo in a manifest
is refused at load instead of failing every request.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from chorus.core.spec import TensorSpec

_DATATYPES: dict[int, str] = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
}
FLOATS = ("FP16", "FP32", "FP64")


class GraphError(ValueError):
    """The ONNX file cannot be served as it is; the message says what to change."""


@dataclass(frozen=True)
class GraphSpecs:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def output(self, name: str) -> TensorSpec | None:
        return next((s for s in self.outputs if s.name == name), None)


def read(path: Path) -> GraphSpecs:
    """The graph's inputs (those not fed by an initializer) and outputs."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise GraphError(f"{path}: not a readable ONNX model ({exc})") from None
    graph = model.graph
    fed = {init.name for init in graph.initializer}
    inputs = tuple(_spec(path, "input", v) for v in graph.input if v.name not in fed)
    outputs = tuple(_spec(path, "output", v) for v in graph.output)
    if not inputs or not outputs:
        raise GraphError(f"{path}: the graph has no {'inputs' if not inputs else 'outputs'}")
    return GraphSpecs(inputs, outputs)


def _spec(path: Path, role: str, value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        hint = (
            "; skl2onnx writes a list of maps unless converted with options={'zipmap': False}"
            if kind == "sequence_type"
            else ""
        )
        raise GraphError(f"{path}: {role} {value.name!r} is a {kind}, not a tensor{hint}")
    tensor = value.type.tensor_type
    datatype = _DATATYPES.get(tensor.elem_type)
    if datatype is None:
        name = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise GraphError(f"{path}: {role} {value.name!r} is {name}, which Chorus cannot carry")
    if not tensor.HasField("shape"):
        raise GraphError(f"{path}: {role} {value.name!r} has no declared shape (rank unknown)")
    shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return TensorSpec(value.name, datatype, shape)


def contradictions(
    declared: tuple[TensorSpec, ...], graph: tuple[TensorSpec, ...], role: str
) -> list[str]:
    """Where a manifest's specs disagree with the graph's: unknown names, datatypes, ranks,
    fixed sizes. A manifest may narrow a dynamic size, never change a fixed one."""
    found = {s.name: s for s in graph}
    problems = []
    for spec in declared:
        g = found.get(spec.name)
        if g is None:
            problems.append(
                f"{role} {spec.name!r} is not in the graph (its {role}s: {sorted(found)})"
            )
        elif spec.datatype != g.datatype:
            problems.append(
                f"{role} {spec.name!r}: manifest says datatype {spec.datatype}, "
                f"the graph says {g.datatype}"
            )
        elif len(spec.shape) != len(g.shape):
            problems.append(
                f"{role} {spec.name!r}: manifest says shape {list(spec.shape)} "
                f"(rank {len(spec.shape)}), the graph says {list(g.shape)} (rank {len(g.shape)})"
            )
        elif any(d != -1 and w != -1 and d != w for d, w in zip(spec.shape, g.shape, strict=True)):
            problems.append(
                f"{role} {spec.name!r}: manifest says shape {list(spec.shape)}, "
                f"the graph says {list(g.shape)}"
            )
    return problems


def merged(
    declared: tuple[TensorSpec, ...], graph: tuple[TensorSpec, ...]
) -> tuple[TensorSpec, ...]:
    """The declared specs with every size the graph fixes filled in (after `contradictions`)."""
    found = {s.name: s for s in graph}
    return tuple(
        TensorSpec(
            s.name,
            s.datatype,
            tuple(w if d == -1 else d for d, w in zip(s.shape, found[s.name].shape, strict=True)),
        )
        for s in declared
    )


def score_candidates(outputs: tuple[TensorSpec, ...], kind: str) -> list[str]:
    """The outputs that could carry the scores (classification: float [rows, classes]) or the
    values (regression: float [rows] or [rows, k])."""
    ranks = (1, 2) if kind in ("regression", "binary") else (2,)
    return [s.name for s in outputs if s.datatype in FLOATS and len(s.shape) in ranks]
