"""`chorus submit --input NAME=FILE`: a user's own rows through the router, one task, the
fused answer and its explanation printed as a table or as JSON."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict

from chorus.client import TaskClient, TaskResult
from chorus.core.codec import numpy_dtype
from chorus.core.context import Priority
from chorus.core.errors import InvalidArgument
from chorus.pb import task_pb2


class InputError(ValueError):
    """A `--input` that cannot be read: the message names the argument and the file."""


@dataclass(frozen=True)
class Options:
    router: str
    capability: str
    inputs: list[str]
    policy: str = ""
    priority: Priority = Priority.NORMAL
    deadline_ms: int = 0
    limit: int = 0
    show: int = 10
    as_json: bool = False
    conflict: str = ""
    task_id: str = ""
    run_async: bool = False
    idempotency_key: str | None = None


def run_submit_inputs(opts: Options) -> int:
    try:
        given = [read_input(arg) for arg in opts.inputs]
    except InputError as err:
        print(f"chorus submit: {err}", file=sys.stderr)
        return 2
    task = {
        "priority": opts.priority,
        "deadline_ms": opts.deadline_ms,
        "policy": opts.policy,
        "conflict": opts.conflict or None,
        "task_id": opts.task_id,
    }
    try:
        with TaskClient(opts.router) as client:
            arrays = typed_inputs(client, opts.capability, given, opts.limit)
            if opts.run_async:
                accepted = client.submit_async(opts.capability, arrays,
                                               idempotency_key=opts.idempotency_key, **task)  # type: ignore[arg-type]  # fmt: skip
            else:
                result = client.submit(opts.capability, arrays, **task)  # type: ignore[arg-type]
    except InputError as err:
        print(f"chorus submit: {err}", file=sys.stderr)
        return 2
    except grpc.RpcError as err:
        print(f"chorus submit: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    if opts.run_async:
        if opts.as_json:
            print(json.dumps({"task_id": accepted.task_id, "duplicate": accepted.duplicate}))
        else:
            again = " (this key was seen before: the first submission's task)"
            print(accepted.task_id + (again if accepted.duplicate else ""))
        return 0
    if opts.as_json:
        print(json.dumps(as_json(result)))
    else:
        print(as_table(result, opts.show))
    return 0


def read_input(arg: str) -> tuple[str, Path, np.ndarray]:
    """NAME=FILE.npy or NAME=FILE.csv as (name, path, array); InputError saying what is wrong."""
    name, sep, file = arg.partition("=")
    if not sep or not name or not file:
        raise InputError(f"--input {arg!r}: expected NAME=FILE.npy or NAME=FILE.csv")
    path = Path(file)
    if not path.is_file():
        raise InputError(f"--input {name}: no file at {path}")
    if path.suffix == ".npy":
        try:
            return name, path, np.load(path, allow_pickle=False)
        except ValueError as err:
            raise InputError(f"--input {name}: {path} is not a plain .npy array ({err})") from None
    if path.suffix == ".csv":
        return name, path, _read_csv(name, path)
    raise InputError(f"--input {name}: {path} should end in .npy or .csv")


def _read_csv(name: str, path: Path) -> np.ndarray:
    """Rows of numbers, one per line; a first line that is not numbers is a header."""
    with path.open(newline="") as f:
        rows = [row for row in csv.reader(f) if row]
    if rows and not _numeric(rows[0]):
        rows = rows[1:]
    if not rows:
        raise InputError(f"--input {name}: {path} has no rows")
    widths = {len(r) for r in rows}
    if len(widths) > 1:
        raise InputError(f"--input {name}: {path} has rows of {sorted(widths)} columns")
    try:
        return np.asarray(rows, dtype=np.float64)
    except ValueError as err:
        raise InputError(f"--input {name}: {path}: {err}") from None


def typed_inputs(
    client: TaskClient,
    capability: str,
    given: list[tuple[str, Path, np.ndarray]],
    limit: int = 0,
) -> dict[str, np.ndarray]:
    """The inputs by name, each in the datatype the capability's members declare."""
    specs = _input_datatypes(client, capability)
    arrays = {}
    for name, path, array in given:
        arrays[name] = _as_datatype(name, path, array, specs.get(name))
        if limit:
            arrays[name] = arrays[name][:limit]
    return arrays


def _numeric(row: list[str]) -> bool:
    try:
        [float(cell) for cell in row]
    except ValueError:
        return False
    return True


def _input_datatypes(client: TaskClient, capability: str) -> dict[str, str]:
    """The capability's inputs as its members declare them, to send each in its datatype."""
    found: dict[str, str] = {}
    for model in client.list_models(capability).models:
        for spec in model.inputs:
            found.setdefault(spec.name, spec.datatype)
    return found


def _as_datatype(name: str, path: Path, array: np.ndarray, datatype: str | None) -> np.ndarray:
    """CSV numbers become the declared datatype; a .npy is cast only within its kind (a
    float64 array to FP32), anything else goes as it is and the router says what it expects."""
    if datatype is None:
        return array.astype(np.float32) if path.suffix == ".csv" else array
    try:
        target = numpy_dtype(datatype)
    except InvalidArgument:
        return array
    if array.dtype == target:
        return array
    if path.suffix == ".csv":
        if target.kind in "iub" and not np.array_equal(array, np.round(array)):
            raise InputError(f"--input {name}: {path} has fractions but {name} is {datatype}")
        return array.astype(target)
    if np.can_cast(array.dtype, target, casting="same_kind"):
        return array.astype(target)
    return array


def as_json(result: TaskResult) -> dict[str, Any]:
    response = result.response
    return {
        "task_id": response.task_id,
        "capability": response.capability,
        "labels": list(response.labels),
        "outputs": {name: value.tolist() for name, value in result.outputs.items()},
        "members": {
            model: {name: value.tolist() for name, value in outs.items()}
            for model, outs in result.members.items()
        },
        "explanation": MessageToDict(
            response.explanation, preserving_proto_field_name=True, use_integers_for_enums=False
        ),
    }


def as_table(result: TaskResult, show: int) -> str:
    explanation = result.response.explanation
    rows = explanation.rows
    regression = "value" in result.outputs
    names = list(result.response.labels)
    lines = [_header(regression)]
    for i, row in enumerate(rows[:show]):
        lines.append(_row(i, row, regression, names))
    if len(rows) > show:
        lines.append(f"... {len(rows) - show} more rows (--show N, or --json for all)")
    conflicted = sum(r.status == "conflicted" for r in rows)
    lines.append("")
    summary = f"{len(rows)} rows; {conflicted} conflicted; policy {explanation.policy}"
    if explanation.conflict_policy:
        summary += f", conflict policy {explanation.conflict_policy}"
    lines.append(summary)
    members = f"members: {', '.join(explanation.members)}"
    if explanation.weights:
        weights = ", ".join(f"{m} {w:.3g}" for m, w in sorted(explanation.weights.items()))
        members += f" (weights {weights})"
    lines.append(members)
    for model, why in sorted(explanation.missing.items()):
        lines.append(f"missing {model}: {why}")
    return "\n".join(lines)


def _header(regression: bool) -> str:
    if regression:
        return f"{'row':>4}  {'value':>12}  {'spread':>9}  {'status':<10}  members"
    return (
        f"{'row':>4}  {'label':<14}  {'confidence':>10}  {'agreement':>9}  {'status':<10}  members"
    )


def _row(i: int, row: task_pb2.RowDecision, regression: bool, names: list[str]) -> str:
    if regression:
        value = " ".join(f"{v:.4g}" for v in row.value)
        members = " ".join(f"{m}={v:.4g}" for m, v in sorted(row.member_values.items()))
        return f"{i:>4}  {value:>12}  {row.spread:>9.4g}  {row.status:<10}  {members}"
    members = " ".join(f"{m}={_label(v, names)}" for m, v in sorted(row.votes.items()))
    return (
        f"{i:>4}  {_label(row.label, names):<14}  {row.confidence:>10.3f}  "
        f"{row.agreement:>9.2f}  {row.status:<10}  {members}"
    )


def _label(index: int, names: list[str]) -> str:
    return names[index] if 0 <= index < len(names) else str(index)
