"""A pipeline: a validated DAG of stages, grouped into levels that can run together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from chorus.core.errors import InvalidArgument, NotFound
from chorus.router.pipeline.spec import (
    PIPELINE_KEYS,
    check_keys,
    check_name,
    kind_of,
    parse_stage,
    str_map,
)
from chorus.router.pipeline.stage import Source, Stage


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
            raise InvalidArgument(f"pipeline spec: expected a mapping, got {kind_of(d)}")
        if "name" not in d:
            raise InvalidArgument("pipeline spec: name: missing")
        name = check_name(d["name"], "pipeline spec: name")
        at = f"pipeline {name!r}: "
        check_keys(
            d, PIPELINE_KEYS, ("name", "inputs", "stages", "outputs"), f"pipeline {name!r}", ": "
        )

        raw_inputs = d["inputs"]
        if not isinstance(raw_inputs, list) or not raw_inputs:
            raise InvalidArgument(
                f"{at}inputs: expected a non-empty list of input names, got {kind_of(raw_inputs)}"
            )
        inputs = tuple(check_name(v, f"{at}inputs[{i}]") for i, v in enumerate(raw_inputs))

        raw_stages = d["stages"]
        if not isinstance(raw_stages, list) or not raw_stages:
            raise InvalidArgument(
                f"{at}stages: expected a non-empty list of stages, got {kind_of(raw_stages)}"
            )
        stages = tuple(parse_stage(s, f"{at}stages[{i}]") for i, s in enumerate(raw_stages))
        outputs = str_map(d["outputs"], f"{at}outputs", "pipeline output name", "a stage output")
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
