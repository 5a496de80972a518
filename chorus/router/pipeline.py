"""Task decomposition: a pipeline is a DAG of stages, each a task on one capability.

A pipeline lets one request ask several capabilities at once and feed one stage's answer to
another, without the application orchestrating the calls. It is declared in YAML:

```yaml
name: digits-describe          # pipeline name
inputs: [image, caption]       # the task input names the pipeline takes
stages:
  - name: digit                # unique stage name
    capability: classify/digits
    fusion_policy: soft_vote   # optional: the fuser's strategy for this stage
    conflict: {name: quorum, quorum: 2}   # optional: a ConflictPolicy, passed through as a dict
    inputs: {input: image}     # stage input name -> task input name, or "<stage>.<output>"
  - name: parity
    capability: classify/parity
    inputs: {input: digit.probabilities}  # the `probabilities` output of stage `digit`
outputs: {digit: digit.label, parity: parity.label}   # pipeline output -> "<stage>.<output>"
```

Names of task inputs and stages are letters, digits, `_` and `-` (no `.`, which separates a
stage from its output). A source with a `.` is always a stage output; one without is always a
task input. Every declared task input must be used by some stage, so a misspelt one cannot go
unnoticed. Stages may be listed in any order; the graph they form must have no cycle.

This module is pure: it parses, validates and schedules. Running a stage (fanning out to the
capability's members and fusing) is the router's `RunStage`, injected into `run_pipeline`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import yaml

from chorus.errors import ChorusError, InvalidArgument, NotFound
from chorus.pb import task_pb2

RunStage = Callable[["Stage", dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]
"""Runs one stage on its inputs (by stage input name) and returns its outputs by name."""

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
"""Task input and stage names: no `.`, which separates a stage from its output in a source."""

PIPELINE_KEYS = frozenset({"name", "inputs", "stages", "outputs"})
STAGE_KEYS = frozenset({"name", "capability", "fusion_policy", "conflict", "inputs"})
REQUIRED_STAGE_KEYS = ("name", "capability", "inputs")

_CONFLICT_FIELDS = task_pb2.ConflictPolicy.DESCRIPTOR.fields_by_name
"""The settings a stage's `conflict` may carry: the fields of the ConflictPolicy it becomes."""


@dataclass(frozen=True)
class Source:
    """Where a stage input or pipeline output comes from: a task input, or a stage's output."""

    stage: str | None
    name: str

    @staticmethod
    def parse(text: str) -> Source:
        stage, dot, output = text.partition(".")
        return Source(stage, output) if dot else Source(None, text)

    def __str__(self) -> str:
        return f"{self.stage}.{self.name}" if self.stage is not None else self.name


@dataclass(frozen=True)
class Stage:
    """One task of the pipeline: `inputs` maps the stage's input names to their sources.

    Equal stages hash alike by name; the mappings are read-only views.
    """

    name: str
    capability: str
    inputs: Mapping[str, str]
    fusion_policy: str | None = None
    conflict: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))
        if self.conflict is not None:
            object.__setattr__(self, "conflict", MappingProxyType(dict(self.conflict)))

    def __hash__(self) -> int:
        return hash(self.name)

    def sources(self) -> dict[str, Source]:
        """Each stage input's source, parsed."""
        return {name: Source.parse(src) for name, src in self.inputs.items()}

    @property
    def depends_on(self) -> frozenset[str]:
        """The stages whose outputs this stage takes."""
        return frozenset(s.stage for s in self.sources().values() if s.stage is not None)


@dataclass(frozen=True)
class Pipeline:
    """A validated DAG of stages; constructing one checks the graph (see `from_dict`)."""

    name: str
    inputs: tuple[str, ...]
    stages: tuple[Stage, ...]
    outputs: Mapping[str, str]
    _levels: tuple[tuple[Stage, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "outputs", MappingProxyType(dict(self.outputs)))
        object.__setattr__(self, "_levels", self._check())

    def __hash__(self) -> int:
        return hash(self.name)

    @staticmethod
    def from_dict(d: Any) -> Pipeline:
        """A pipeline from a parsed spec; every error names its path in the spec."""
        if not isinstance(d, Mapping):
            raise InvalidArgument(f"pipeline spec: expected a mapping, got {_kind(d)}")
        if "name" not in d:
            raise InvalidArgument("pipeline spec: name: missing")
        name = _name(d["name"], "pipeline spec: name")
        at = f"pipeline {name!r}: "
        _keys(d, PIPELINE_KEYS, ("name", "inputs", "stages", "outputs"), f"pipeline {name!r}", ": ")

        raw_inputs = d["inputs"]
        if not isinstance(raw_inputs, list) or not raw_inputs:
            raise InvalidArgument(
                f"{at}inputs: expected a non-empty list of input names, got {_kind(raw_inputs)}"
            )
        inputs = tuple(_name(v, f"{at}inputs[{i}]") for i, v in enumerate(raw_inputs))

        raw_stages = d["stages"]
        if not isinstance(raw_stages, list) or not raw_stages:
            raise InvalidArgument(
                f"{at}stages: expected a non-empty list of stages, got {_kind(raw_stages)}"
            )
        stages = tuple(_stage(s, f"{at}stages[{i}]") for i, s in enumerate(raw_stages))
        outputs = _str_map(d["outputs"], f"{at}outputs", "pipeline output name", "a stage output")
        return Pipeline(name=name, inputs=inputs, stages=stages, outputs=outputs)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise NotFound(
            f"pipeline {self.name!r}: stage {name!r}: no such stage "
            f"(stages: {', '.join(s.name for s in self.stages)})"
        )

    def levels(self) -> list[list[Stage]]:
        """Stages grouped so each group takes only from earlier groups (and the task inputs).

        A stage sits in the first group after all of its dependencies; within a group, stages
        keep their order in the spec. The stages of one group can run at the same time.
        """
        return [list(level) for level in self._levels]

    def _check(self) -> tuple[tuple[Stage, ...], ...]:
        """Checks names and references, then orders the graph: its levels, or the cycle."""
        at = f"pipeline {self.name!r}: "
        seen_inputs: set[str] = set()
        for i, name in enumerate(self.inputs):
            if name in seen_inputs:
                raise InvalidArgument(f"{at}inputs[{i}]: duplicate task input {name!r}")
            seen_inputs.add(name)
        if not self.stages:
            raise InvalidArgument(f"{at}stages: empty; expected at least one stage")
        index: dict[str, int] = {}
        for i, s in enumerate(self.stages):
            if s.name in index:
                raise InvalidArgument(
                    f"{at}stages[{i}].name: duplicate stage {s.name!r} "
                    f"(also stages[{index[s.name]}])"
                )
            index[s.name] = i
        used: set[str] = set()
        for i, s in enumerate(self.stages):
            if not s.inputs:
                raise InvalidArgument(f"{at}stages[{i}].inputs: empty; expected at least one")
            for key, src in s.sources().items():
                path = f"{at}stages[{i}].inputs.{key}"
                self._check_source(src, path, index)
                if src.stage is None:
                    used.add(src.name)
        unused = [n for n in self.inputs if n not in used]
        if unused:
            raise InvalidArgument(
                f"{at}inputs: {unused} taken by no stage; remove them or use them in a stage"
            )
        if not self.outputs:
            raise InvalidArgument(f"{at}outputs: empty; expected at least one pipeline output")
        for key, text in self.outputs.items():
            src = Source.parse(text)
            if src.stage is None:
                raise InvalidArgument(
                    f"{at}outputs.{key}: expected '<stage>.<output>', got {text!r}"
                )
            self._check_source(src, f"{at}outputs.{key}", index)
        return self._order(index)

    def _check_source(self, src: Source, path: str, index: Mapping[str, int]) -> None:
        if src.stage is None:
            if src.name not in self.inputs:
                raise InvalidArgument(
                    f"{path}: unknown task input {src.name!r} "
                    f"(declared inputs: {list(self.inputs)}; a stage output is '<stage>.<output>')"
                )
            return
        if src.stage not in index:
            raise InvalidArgument(
                f"{path}: unknown stage {src.stage!r} (stages: {', '.join(index)})"
            )
        if not src.name:
            raise InvalidArgument(
                f"{path}: expected '<stage>.<output>', got {str(src)!r} with no output name"
            )

    def _order(self, index: Mapping[str, int]) -> tuple[tuple[Stage, ...], ...]:
        """Kahn's algorithm, level by level; what is left unplaced holds a cycle."""
        deps = {s.name: s.depends_on for s in self.stages}
        placed: set[str] = set()
        levels: list[tuple[Stage, ...]] = []
        while len(placed) < len(self.stages):
            level = tuple(s for s in self.stages if s.name not in placed and deps[s.name] <= placed)
            if not level:
                cycle = _find_cycle({n: d for n, d in deps.items() if n not in placed}, index)
                raise InvalidArgument(
                    f"pipeline {self.name!r}: stages: cycle {' -> '.join(cycle)}; "
                    "a stage cannot take its own output, even through other stages"
                )
            levels.append(level)
            placed.update(s.name for s in level)
        return tuple(levels)


@dataclass(frozen=True)
class PipelineResult:
    """What a pipeline run produced.

    `outputs`: the pipeline outputs by name. `stages`: each stage's outputs by stage name.
    `timings_ms`: each stage's wall time. `order`: the stages in the order they were started
    (level by level, spec order within a level).
    """

    outputs: Mapping[str, np.ndarray]
    stages: Mapping[str, Mapping[str, np.ndarray]]
    timings_ms: Mapping[str, float]
    order: tuple[str, ...]


async def run_pipeline(
    pipeline: Pipeline, inputs: Mapping[str, np.ndarray], run_stage: RunStage
) -> PipelineResult:
    """Runs the stages level by level, a level's stages concurrently, feeding outputs on.

    A failing stage ends the run: its siblings still running are cancelled, and its error
    propagates naming the stage (a ChorusError as the same class, message prefixed with the
    stage, the original as `__cause__`; any other exception with a note).
    """
    missing = [n for n in pipeline.inputs if n not in inputs]
    if missing:
        raise InvalidArgument(
            f"inputs: pipeline {pipeline.name!r} takes {list(pipeline.inputs)}, missing {missing}"
        )
    extra = sorted(set(inputs) - set(pipeline.inputs))
    if extra:
        raise InvalidArgument(
            f"inputs: {extra} taken by no stage of pipeline {pipeline.name!r} "
            f"(it takes {list(pipeline.inputs)})"
        )
    index = {s.name: i for i, s in enumerate(pipeline.stages)}
    results: dict[str, dict[str, np.ndarray]] = {}
    timings: dict[str, float] = {}
    order: list[str] = []

    async def one(stage: Stage) -> None:
        path = f"pipeline {pipeline.name!r}: stages[{index[stage.name]}].inputs"
        args = {
            k: _resolve(src, inputs, results, f"{path}.{k}") for k, src in stage.sources().items()
        }
        start = time.perf_counter()
        try:
            out = await run_stage(stage, args)
        except ChorusError as err:
            wrapped = _in_stage(err, stage.name)
            if wrapped is None:
                raise
            raise wrapped from err
        except Exception as err:
            err.add_note(f"in stage {stage.name!r} of pipeline {pipeline.name!r}")
            raise
        timings[stage.name] = (time.perf_counter() - start) * 1000
        results[stage.name] = dict(out)

    for level in pipeline.levels():
        order.extend(s.name for s in level)
        await _gather_or_cancel([one(s) for s in level])

    outputs = {
        key: _resolve(
            Source.parse(text), inputs, results, f"pipeline {pipeline.name!r}: outputs.{key}"
        )
        for key, text in pipeline.outputs.items()
    }
    return PipelineResult(
        outputs=MappingProxyType(outputs),
        stages=MappingProxyType({n: MappingProxyType(results[n]) for n in order}),
        timings_ms=MappingProxyType({n: timings[n] for n in order}),
        order=tuple(order),
    )


def load_pipeline(text_or_path: str | Path) -> Pipeline:
    """A pipeline from YAML text, or from a file given as a Path or a one-line `*.yaml` string."""
    if isinstance(text_or_path, Path) or (
        "\n" not in text_or_path and text_or_path.endswith((".yaml", ".yml"))
    ):
        path = Path(text_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise NotFound(f"pipeline file {str(path)!r}: not found") from None
        try:
            return _parse(text)
        except InvalidArgument as err:
            raise InvalidArgument(f"{path}: {err.message}") from err
    return _parse(text_or_path)


def load_pipelines(directory: Path) -> dict[str, Pipeline]:
    """Every `*.yaml` pipeline in `directory`, by name; two files may not share a name."""
    if not directory.is_dir():
        raise NotFound(f"pipeline directory {str(directory)!r}: not found or not a directory")
    found: dict[str, Pipeline] = {}
    where: dict[str, Path] = {}
    for path in sorted(directory.glob("*.yaml")):
        p = load_pipeline(path)
        if p.name in found:
            raise InvalidArgument(
                f"{path}: pipeline {p.name!r}: name: also the name of the pipeline in "
                f"{where[p.name]}"
            )
        found[p.name] = p
        where[p.name] = path
    return found


def _parse(text: str) -> Pipeline:
    try:
        d = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InvalidArgument(f"pipeline spec: not valid YAML: {_yaml_problem(err)}") from err
    return Pipeline.from_dict(d)


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def _stage(d: Any, at: str) -> Stage:
    if not isinstance(d, Mapping):
        raise InvalidArgument(
            f"{at}: expected a mapping with {list(REQUIRED_STAGE_KEYS)}, got {_kind(d)}"
        )
    _keys(d, STAGE_KEYS, REQUIRED_STAGE_KEYS, at, ".")
    name = _name(d["name"], f"{at}.name")
    capability = d["capability"]
    if not isinstance(capability, str) or not capability:
        raise InvalidArgument(
            f"{at}.capability: expected a capability such as 'classify/digits', "
            f"got {_kind(capability)}"
        )
    fusion_policy = d.get("fusion_policy")
    if fusion_policy is not None and (not isinstance(fusion_policy, str) or not fusion_policy):
        raise InvalidArgument(
            f"{at}.fusion_policy: expected a strategy name such as 'soft_vote', "
            f"got {_kind(fusion_policy)}"
        )
    conflict = d.get("conflict")
    if conflict is not None:
        conflict = _conflict(conflict, f"{at}.conflict")
    inputs = _str_map(d["inputs"], f"{at}.inputs", "stage input name", "a source")
    return Stage(
        name=name,
        capability=capability,
        inputs=inputs,
        fusion_policy=fusion_policy,
        conflict=conflict,
    )


def _conflict(d: Any, at: str) -> dict[str, Any]:
    """A ConflictPolicy as a dict: known fields only, each of its field's type."""
    fields = sorted(_CONFLICT_FIELDS)
    if not isinstance(d, Mapping):
        raise InvalidArgument(f"{at}: expected a mapping with keys from {fields}, got {_kind(d)}")
    if "name" not in d:
        raise InvalidArgument(f"{at}.name: missing; expected a conflict policy such as 'quorum'")
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key not in _CONFLICT_FIELDS:
            raise InvalidArgument(f"{at}: unknown key {key!r} (expected keys from {fields})")
        fd = _CONFLICT_FIELDS[key]
        if fd.cpp_type == fd.CPPTYPE_STRING:
            ok = isinstance(value, str) and bool(value)
            expected = "a non-empty string"
        elif fd.cpp_type in (fd.CPPTYPE_UINT32, fd.CPPTYPE_UINT64):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            expected = "a non-negative integer"
        else:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            expected = "a number"
        if not ok:
            raise InvalidArgument(f"{at}.{key}: expected {expected}, got {_kind(value)}")
        out[key] = value
    return out


def _keys(
    d: Mapping[Any, Any], allowed: frozenset[str], required: Iterable[str], at: str, sep: str
) -> None:
    """Unknown keys are reported at `at`, missing ones at `at`, `sep`, the key."""
    for key in d:
        if key not in allowed:
            raise InvalidArgument(
                f"{at}: unknown key {key!r} (expected keys from {sorted(allowed)})"
            )
    for key in required:
        if key not in d:
            raise InvalidArgument(f"{at}{sep}{key}: missing")


def _name(value: Any, at: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidArgument(
            f"{at}: expected a name of letters, digits, '_' and '-', got {_kind(value)}"
        )
    return value


def _str_map(value: Any, at: str, key_kind: str, value_kind: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise InvalidArgument(
            f"{at}: expected a non-empty mapping of {key_kind} to {value_kind}, got {_kind(value)}"
        )
    out: dict[str, str] = {}
    for key, v in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"{at}: expected {key_kind}s as strings, got {_kind(key)}")
        if not isinstance(v, str) or not v:
            raise InvalidArgument(f"{at}.{key}: expected {value_kind} as a string, got {_kind(v)}")
        out[key] = v
    return out


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _find_cycle(deps: Mapping[str, frozenset[str]], index: Mapping[str, int]) -> list[str]:
    """One cycle among stages none of which can be placed, closed: ['a', 'b', 'a'].

    Each such stage depends on another unplaced one, so following the first (in spec order)
    from any of them must come back round; the walk starts at the first in spec order.
    """
    node = min(deps, key=index.__getitem__)
    path: list[str] = []
    seen: dict[str, int] = {}
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min((d for d in deps[node] if d in deps), key=index.__getitem__)
    return [*path[seen[node] :], node]


def _resolve(
    src: Source,
    inputs: Mapping[str, np.ndarray],
    results: Mapping[str, Mapping[str, np.ndarray]],
    path: str,
) -> np.ndarray:
    if src.stage is None:
        return inputs[src.name]
    out = results[src.stage]
    if src.name not in out:
        raise InvalidArgument(
            f"{path}: stage {src.stage!r} has no output {src.name!r} (it gave {sorted(out)})"
        )
    return out[src.name]


def _in_stage(err: ChorusError, stage: str) -> ChorusError | None:
    """The same error class, its message prefixed with the stage; None (and a note on `err`)
    for a subclass whose constructor takes more than a message."""
    try:
        return type(err)(f"stage {stage!r}: {err.message}")
    except TypeError:
        err.add_note(f"in stage {stage!r}")
        return None


async def _gather_or_cancel(coros: list[Awaitable[None]]) -> None:
    """asyncio.gather, but the first failure cancels the rest before propagating."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
