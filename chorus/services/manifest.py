"""The manifest: the contract a model offers the mesh, as a documented, validated schema.

It says what a model can do (capabilities), what its scores mean (`output_kind`), which
output carries them, its class labels, and how it wants to be run. What the ONNX graph
already says (input and output names, datatypes, shapes) may be left out: `parse` completes
it from the graph and refuses a manifest that contradicts the graph. Every refusal names the
file, the key, what was expected and what came, so a user never reads a traceback.

`manifest_keys.KEYS` is the one table of keys: validation reads it, and the README's table
is checked against it by the tests.
"""

from __future__ import annotations

import difflib
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from chorus.core.spec import TensorSpec
from chorus.services import graph
from chorus.services.manifest_keys import BY_NAME, strings

MANIFEST = "manifest.json"
HeadKind = Literal["probabilities", "logits", "binary", "binary_logit"]
HEAD_KINDS: tuple[HeadKind, ...] = ("probabilities", "logits", "binary", "binary_logit")
"""What a head's columns hold, named for it: `probabilities` (one column per label,
renormalised over the head), `logits` (one column per label, softmax(z / temperature)),
`binary` (one column holding p, read as [1 - p, p]), `binary_logit` (one column holding a
logit z, p = sigmoid(z / temperature)). Left out, a head's kind follows `output_kind`."""
OLD_HEAD_KIND = "softmax"
"""The kind every one-label-per-column head had before kinds said what the columns hold. It
never took a softmax (it renormalised), so it reads as the model's own kind, `logits` under
output_kind `logits` and `probabilities` otherwise, with a FutureWarning."""
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
CLASSIFY, REGRESS = "classify/", "regress/"
ROLES = ("arbiter:", "stack:", "gate:")


class ManifestError(ValueError):
    """A manifest the mesh cannot serve; the message names the file and the key."""


@dataclass(frozen=True)
class RuntimeOptions:
    """How this model wants to be run, shipped with it because the best settings are the
    model's (a CNN wants batches, a tree ensemble does not). A zero means "the service's
    setting decides"; a service setting given explicitly wins over the manifest.
    """

    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    instances: int = 0
    """ONNX Runtime sessions serving this model at once, each on its own thread."""
    max_batch: int = 0
    max_batch_delay_ms: float = 0.0
    warmup: bool = True
    """Run every instance once at load (first-run costs and CUDA kernels before traffic)."""
    tensorrt: bool = False
    """Prefer TensorrtExecutionProvider where it really loads (engine builds take minutes)."""
    io_binding: bool = True
    """On CUDA, bind inputs and outputs so ONNX Runtime copies each once."""

    def __post_init__(self) -> None:
        if self.graph_optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(
                f"runtime.graph_optimization: expected one of {OPTIMIZATION_LEVELS}, "
                f"got {self.graph_optimization!r}"
            )
        if self.execution_mode not in EXECUTION_MODES:
            raise ValueError(
                f"runtime.execution_mode: expected one of {EXECUTION_MODES}, "
                f"got {self.execution_mode!r}"
            )
        for name in ("intra_op_threads", "inter_op_threads", "instances", "max_batch"):
            if getattr(self, name) < 0:
                raise ValueError(f"runtime.{name}: expected >= 0, got {getattr(self, name)}")
        if self.max_batch_delay_ms < 0:
            raise ValueError(
                f"runtime.max_batch_delay_ms: expected >= 0, got {self.max_batch_delay_ms}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RuntimeOptions:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"runtime: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def default_head_kind(output_kind: str) -> HeadKind:
    """A head's kind when its manifest leaves it out: what the model says its scores are."""
    if output_kind == "logits":
        return "logits"
    if output_kind == "binary":
        return "binary"
    return "probabilities"


def renamed_head_kind(output_kind: str) -> HeadKind:
    """What the old "softmax" (one label per column) means under `output_kind`."""
    return "logits" if output_kind == "logits" else "probabilities"


@dataclass(frozen=True)
class Head:
    """One capability's share of a multi-task model's scores output; `kind` says what its
    columns hold (HEAD_KINDS), and so how they become the capability's probabilities."""

    columns: tuple[int, ...]
    labels: tuple[str, ...]
    kind: HeadKind = "probabilities"

    def __post_init__(self) -> None:
        if self.kind == OLD_HEAD_KIND:
            raise ValueError(
                f"head kind: {OLD_HEAD_KIND!r} is the old name; expected one of {HEAD_KINDS} "
                "('probabilities' renormalises the columns, 'logits' takes their softmax)"
            )
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head kind: expected one of {HEAD_KINDS}, got {self.kind!r}")
        if not self.columns or any(c < 0 for c in self.columns):
            raise ValueError(f"head columns: expected column indices >= 0, got {self.columns}")
        if self.binary and (len(self.columns) != 1 or len(self.labels) != 2):
            raise ValueError(
                f"{self.kind} head: expected 1 column and 2 labels, got {len(self.columns)} "
                f"column(s) and {len(self.labels)} label(s)"
            )
        if not self.binary and len(self.columns) != len(self.labels):
            raise ValueError(
                f"{self.kind} head: expected one label per column, got {len(self.columns)} "
                f"column(s) and {len(self.labels)} label(s)"
            )

    @property
    def binary(self) -> bool:
        """One column read as [1 - p, p] over two labels."""
        return self.kind in ("binary", "binary_logit")

    @classmethod
    def from_dict(cls, d: dict[str, Any], output_kind: str = "probabilities") -> Head:
        """A head as a manifest writes it; a missing kind, or the old "softmax", reads as the
        model's `output_kind` says (`parse` warns about "softmax", this does not)."""
        kind = d.get("kind", default_head_kind(output_kind))
        if kind == OLD_HEAD_KIND:
            kind = renamed_head_kind(output_kind)
        return cls(
            columns=tuple(int(c) for c in d["columns"]),
            labels=tuple(str(label) for label in d["labels"]),
            kind=kind,
        )


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    capabilities: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    labels: tuple[str, ...]
    scores_output: str
    file: str = "model.onnx"
    platform: str = "onnxruntime_onnx"
    description: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    augment: str = ""
    members: tuple[str, ...] = ()
    heads: dict[str, Head] = field(default_factory=dict)
    """Capability -> its head, for a multi-task model; empty for a single-task one."""
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    output_kind: str = "probabilities"
    temperature: float = 1.0
    replicas: int = 1

    @property
    def regression(self) -> bool:
        return self.output_kind == "regression"

    def to_json(self) -> str:
        d = asdict(self)
        if not self.heads:
            del d["heads"]  # single-task manifests stay as they were
        if self.runtime == RuntimeOptions():
            del d["runtime"]
        for key, default in (("output_kind", "probabilities"), ("temperature", 1.0),
                             ("replicas", 1)):  # fmt: skip
            if d[key] == default:
                del d[key]
        return json.dumps(d, indent=2) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """A complete manifest, as `to_json` writes it (no graph to fill gaps from)."""
        return cls(
            name=d["name"],
            version=str(d["version"]),
            capabilities=tuple(d["capabilities"]),
            inputs=tuple(TensorSpec.from_dict(t) for t in d["inputs"]),
            outputs=tuple(TensorSpec.from_dict(t) for t in d["outputs"]),
            labels=tuple(d.get("labels", ())),
            scores_output=d["scores_output"],
            file=d.get("file", "model.onnx"),
            platform=d.get("platform", "onnxruntime_onnx"),
            description=d.get("description", ""),
            metrics={k: float(v) for k, v in d.get("metrics", {}).items()},
            augment=d.get("augment", ""),
            members=tuple(d.get("members", ())),
            heads={
                str(k): Head.from_dict(v, d.get("output_kind", "probabilities"))
                for k, v in d.get("heads", {}).items()
            },
            runtime=RuntimeOptions.from_dict(d.get("runtime", {})),
            output_kind=d.get("output_kind", "probabilities"),
            temperature=float(d.get("temperature", 1.0)),
            replicas=int(d.get("replicas", 1)),
        )


def parse(
    raw: Any, *, source: Path, folder: Path, graph_specs: graph.GraphSpecs | None
) -> Manifest:
    """The manifest in `source` (parsed JSON `raw`), checked and completed from the graph.

    `folder` is the version folder (<root>/<model>/<version>); `graph_specs` is what the ONNX
    file says, or None to take the manifest's specs as they are (they must then be given).
    """

    def fail(key: str, why: str) -> ManifestError:
        return ManifestError(f"{source}: {key}: {why}")

    if not isinstance(raw, dict):
        raise ManifestError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    for key in raw:
        if key not in BY_NAME:
            near = difflib.get_close_matches(key, list(BY_NAME), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known keys: {', '.join(BY_NAME)}"
            raise fail(key, f"unknown key ({hint})")
    for key, value in raw.items():
        spec = BY_NAME[key]
        if not spec.check(value):
            raise fail(key, f"expected {spec.type} ({spec.meaning}), got {json.dumps(value)}")
    model, version = folder.parent.name, folder.name
    name = raw.get("name", model)
    if name != model:
        raise fail("name", f"{name!r} differs from its folder {model!r}; rename one of them")
    if str(raw.get("version", version)) != version:
        raise fail("version", f"{raw['version']!r} differs from its folder {version!r}")
    if "capabilities" not in raw:
        raise fail("capabilities", f"missing; expected {BY_NAME['capabilities'].meaning}")
    kind = raw.get("output_kind", "probabilities")
    _check_capabilities(raw["capabilities"], kind, fail)
    labels = tuple(raw.get("labels", ()))
    if kind != "regression" and not labels and not raw.get("heads"):
        raise fail("labels", f"missing; a {kind} model needs its class names in column order "
                    "(a multi-task model's heads carry their own)")  # fmt: skip
    if kind == "binary" and len(labels) != 2:
        raise fail("labels", f"a binary model has 2 labels ([1-p, p]), got {len(labels)}")
    if "temperature" in raw and kind == "regression":
        raise fail("temperature", "calibrates a classifier's scores; a regression has none")
    inputs = _tensors(raw, "inputs", graph_specs, fail)
    outputs = _tensors(raw, "outputs", graph_specs, fail)
    scores_output = raw.get("scores_output") or _only_scores(outputs, kind, fail)
    scores = next((s for s in outputs if s.name == scores_output), None)
    if scores is None:
        raise fail("scores_output", f"{scores_output!r} is not an output (outputs: "
                    f"{[s.name for s in outputs]})")  # fmt: skip
    _check_scores(scores, kind, labels, raw.get("heads"), fail)
    heads = _heads(raw.get("heads", {}), raw["capabilities"], kind, scores, source, fail)
    try:
        d = {
            **raw, "name": name, "version": version, "labels": list(labels),
            "inputs": [asdict(s) for s in inputs], "outputs": [asdict(s) for s in outputs],
            "scores_output": scores_output, "heads": heads,
        }  # fmt: skip
        return Manifest.from_dict(d)
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{source}: {exc}") from None


def _check_capabilities(
    capabilities: list[str], kind: str, fail: Callable[[str, str], ManifestError]
) -> None:
    for cap in capabilities:
        task = next((cap.removeprefix(r) for r in ROLES if cap.startswith(r)), cap)
        if task.startswith(REGRESS) and kind != "regression" and cap == task:
            raise fail("output_kind", f"{kind!r} under the regression capability {cap!r}; "
                        "a regress/... capability takes output_kind 'regression'")  # fmt: skip
        if task.startswith(CLASSIFY) and kind == "regression" and cap == task:
            raise fail("output_kind", f"'regression' under the classification capability "
                        f"{cap!r}; use a regress/... capability")  # fmt: skip


def _tensors(
    raw: dict[str, Any],
    key: str,
    found: graph.GraphSpecs | None,
    fail: Callable[[str, str], ManifestError],
) -> tuple[TensorSpec, ...]:
    declared = tuple(TensorSpec.from_dict(t) for t in raw.get(key, ()))
    if found is None:
        if not declared:
            raise fail(key, "missing, and there is no ONNX graph to read it from")
        return declared
    in_graph = found.inputs if key == "inputs" else found.outputs
    if not declared:
        return in_graph
    problems = graph.contradictions(declared, in_graph, key[:-1])
    if key == "inputs":
        missing = sorted({s.name for s in in_graph} - {s.name for s in declared})
        if missing:
            problems.append(f"the graph also takes {missing}, which the manifest leaves out")
    if problems:
        raise fail(key, "contradicts the ONNX graph: " + "; ".join(problems))
    return graph.merged(declared, in_graph)


def _only_scores(
    outputs: tuple[TensorSpec, ...], kind: str, fail: Callable[[str, str], ManifestError]
) -> str:
    candidates = graph.score_candidates(outputs, kind)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise fail("scores_output", f"missing, and no output fits a {kind} model (outputs: "
                    f"{[(s.name, s.datatype, list(s.shape)) for s in outputs]})")  # fmt: skip
    raise fail("scores_output", f"missing, and {candidates} could each be the scores; name one")


def _check_scores(
    scores: TensorSpec,
    kind: str,
    labels: tuple[str, ...],
    heads: Any,
    fail: Callable[[str, str], ManifestError],
) -> None:
    shape = list(scores.shape)
    if scores.datatype not in graph.FLOATS:
        raise fail("scores_output", f"{scores.name!r} is {scores.datatype}; scores are floats")
    if kind in ("regression", "binary"):
        if len(shape) not in (1, 2) or (kind == "binary" and len(shape) == 2 and shape[1] > 1):
            want = "[rows] or [rows, 1]" if kind == "binary" else "[rows] or [rows, k]"
            raise fail("scores_output", f"a {kind} output is {want}, {scores.name!r} is {shape}")
        return
    if len(shape) != 2:
        raise fail("scores_output", f"{scores.name!r} is {shape}; {kind} are [rows, classes]")
    if not heads and shape[1] != -1 and shape[1] != len(labels):
        raise fail("labels", f"{len(labels)} labels for the {shape[1]} columns of "
                    f"{scores.name!r}")  # fmt: skip


HEAD_KEYS = ("columns", "labels", "kind")


def _heads(
    heads: dict[str, Any],
    capabilities: list[str],
    kind: str,
    scores: TensorSpec,
    source: Path,
    fail: Callable[[str, str], ManifestError],
) -> dict[str, dict[str, Any]]:
    """Each head checked, its kind filled in from `output_kind` where left out; the old
    "softmax" read as that too, with a FutureWarning naming the file and the head."""
    if heads and kind == "regression":
        raise fail("heads", "a regression model has no heads (a head cuts class scores)")
    # A role (arbiter:, stack:, gate:) is asked without a head and answers with the raw scores.
    headless = [c for c in capabilities if c not in heads and not c.startswith(ROLES)]
    if heads and headless:
        raise fail("heads", f"no head for {headless}: a multi-task model answers each of its "
                    "capabilities from a head (add one, or serve it as another model)")  # fmt: skip
    out: dict[str, dict[str, Any]] = {}
    for capability, head in heads.items():
        key = f"heads.{capability}"
        if capability not in capabilities:
            raise fail(key, f"{capability!r} is not among the capabilities {capabilities}")
        if not isinstance(head, dict):
            raise fail(key, f"expected an object {{columns, labels, kind}}, got {json.dumps(head)}")
        unknown = sorted(set(head) - set(HEAD_KEYS))
        if unknown:
            raise fail(key, f"unknown key(s) {unknown}; a head takes {list(HEAD_KEYS)}")
        columns = head.get("columns")
        if not (isinstance(columns, list) and columns and all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in columns
        )):  # fmt: skip
            raise fail(f"{key}.columns", "expected a non-empty list of column indices >= 0, "
                        f"got {json.dumps(columns)}")  # fmt: skip
        width = scores.shape[-1] if len(scores.shape) == 2 else -1
        if width != -1 and max(columns) >= width:
            raise fail(f"{key}.columns", f"{columns} reach past the {width} columns of "
                        f"{scores.name!r}")  # fmt: skip
        if not strings(head.get("labels")):
            raise fail(f"{key}.labels", f"expected a list of strings, got "
                        f"{json.dumps(head.get('labels'))}")  # fmt: skip
        head_kind = head.get("kind", default_head_kind(kind))
        if head_kind == OLD_HEAD_KIND:
            head_kind = renamed_head_kind(kind)
            warnings.warn(
                f"{source}: {key}.kind: {OLD_HEAD_KIND!r} is deprecated and read as "
                f"{head_kind!r} (output_kind {kind!r}); write {head_kind!r} (what the columns "
                "hold: 'probabilities' are renormalised, 'logits' take a softmax)",
                FutureWarning,
                stacklevel=2,
            )
        if head_kind not in HEAD_KINDS:
            raise fail(f"{key}.kind", f"expected one of {list(HEAD_KINDS)}, got "
                        f"{json.dumps(head_kind)}")  # fmt: skip
        if head_kind == "binary" and kind == "logits":
            raise fail(f"{key}.kind", "'binary' reads its column as a probability p, but "
                        "output_kind 'logits' says the scores are logits: a logit column is "
                        "'binary_logit' (p = sigmoid(z / temperature)); a model whose scores mix "
                        "probabilities and logits declares output_kind 'probabilities' and "
                        "marks its logit heads 'logits' or 'binary_logit'")  # fmt: skip
        try:
            Head(tuple(columns), tuple(head["labels"]), head_kind)
        except ValueError as exc:
            raise fail(key, str(exc)) from None
        out[capability] = {"columns": columns, "labels": head["labels"], "kind": head_kind}
    return out
