"""Pipelines from YAML text, a file, or a directory of files."""

from __future__ import annotations

from pathlib import Path

import yaml

from chorus.core.errors import InvalidArgument, NotFound
from chorus.router.pipeline.graph import Pipeline


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
