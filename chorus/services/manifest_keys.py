"""The manifest's keys, one table: what each is, its default, what it means, and the check
its value must pass. `manifest.parse` validates against it, and the README's table of keys is
made from it (`schema_table`) and checked against it by the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OUTPUT_KINDS = ("probabilities", "logits", "binary", "regression")
"""probabilities: rows sum to 1; logits: softmax(x / temperature) before fusion; binary: one
column holding p, read as [1 - p, p]; regression: a value (or k values) per row."""


@dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str
    meaning: str
    check: Callable[[Any], bool]


def strings(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) and x for x in v)


def _specs(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(t, dict)
        and set(t) == {"name", "datatype", "shape"}
        and isinstance(t["name"], str)
        and isinstance(t["datatype"], str)
        and _shape(t["shape"])
        for t in v
    )


def _shape(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= -1 for d in v
    )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


REQUIRED = "required"
KEYS: tuple[Key, ...] = (
    Key("name", "string", "the folder's name", "the model's name; must equal its folder",
        lambda v: isinstance(v, str) and bool(v)),
    Key("version", "string", "the version folder's name",
        "must equal the version folder when given", lambda v: isinstance(v, str | int)),
    Key("capabilities", "list of strings", REQUIRED,
        "what the model answers, e.g. `classify/cancer`; `classify/...` and `regress/...` "
        "must match `output_kind`; `arbiter:C`, `stack:C`, `gate:C` serve the fuser for C",
        lambda v: strings(v) and bool(v)),
    Key("output_kind", "string", "`probabilities`",
        "what the scores are: `probabilities`, `logits` (softmax before fusion), `binary` "
        "(one column p, read as [1-p, p]) or `regression` (a value per row)",
        lambda v: v in OUTPUT_KINDS),
    Key("labels", "list of strings", "required unless regression or `heads`",
        "class names in score-column order (two for `binary`); for regression, optional "
        "names of the value columns", strings),
    Key("scores_output", "string", "the one float output that fits",
        "the output carrying the scores (or values) the fuser merges",
        lambda v: isinstance(v, str)),
    Key("temperature", "number > 0", "1.0",
        "calibration: logits, or log-probabilities, are divided by it before the softmax "
        "(`chorus models calibrate` fits it); classifiers only",
        lambda v: _number(v) and v > 0),
    Key("inputs", "list of {name, datatype, shape}", "from the graph",
        "input tensors; KServe datatypes (FP32, INT64, ...), -1 for any size", _specs),
    Key("outputs", "list of {name, datatype, shape}", "from the graph",
        "the outputs served (a subset of the graph's)", _specs),
    Key("replicas", "integer >= 1", "1", "model service processes `chorus up` starts",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1),
    Key("file", "string", "`model.onnx`", "the ONNX file, in the version folder",
        lambda v: isinstance(v, str) and bool(v) and "/" not in v),
    Key("description", "string", "\"\"", "for people", lambda v: isinstance(v, str)),
    Key("metrics", "object of numbers", "{}", "measured quality, shown by `chorus models ls`",
        lambda v: isinstance(v, dict) and all(_number(x) for x in v.values())),
    Key("augment", "string", "\"\"", "test-time augmentation for negotiation (`shift2d:HxW`)",
        lambda v: isinstance(v, str) and (not v or v.startswith("shift2d:"))),
    Key("members", "list of strings", "[]",
        "for a stacking or gate model: the members whose scores it takes, in order", strings),
    Key("heads", "object", "{}",
        "multi-task models: capability -> {columns, labels, kind}, the scores' columns that "
        "answer it; `kind` says what they hold: `probabilities` (renormalised over the head), "
        "`logits` (a softmax after `temperature`), `binary` (one column p, read as [1-p, p]) or "
        "`binary_logit` (one logit z, p = sigmoid(z / temperature)); left out, it follows "
        "`output_kind`, and the old `softmax` reads the same way with a warning. A head "
        "answers probabilities, which the fuser takes as they are",
        lambda v: isinstance(v, dict)),
    Key("runtime", "object", "{}",
        "ONNX Runtime options: graph_optimization, execution_mode, intra_op_threads, "
        "inter_op_threads, instances, max_batch, max_batch_delay_ms, warmup, tensorrt, "
        "io_binding", lambda v: isinstance(v, dict)),
    Key("platform", "string", "`onnxruntime_onnx`", "as in Triton; only ONNX is served",
        lambda v: v == "onnxruntime_onnx"),
)  # fmt: skip
BY_NAME = {k.name: k for k in KEYS}


def schema_table() -> str:
    """The README's table of manifest keys."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k.name}` | {k.type} | {k.default} | {k.meaning} |" for k in KEYS]
    return "\n".join(lines) + "\n"
