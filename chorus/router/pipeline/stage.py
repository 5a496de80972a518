"""A pipeline's stage and where each of its inputs comes from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


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
