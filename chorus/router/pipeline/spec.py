"""Checking a parsed pipeline spec field by field; every error names its path in the spec."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from chorus.core.errors import InvalidArgument
from chorus.pb import task_pb2
from chorus.router.pipeline.stage import Stage

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
"""Task input and stage names: no `.`, which separates a stage from its output in a source."""

PIPELINE_KEYS = frozenset({"name", "inputs", "stages", "outputs"})
STAGE_KEYS = frozenset({"name", "capability", "fusion_policy", "conflict", "inputs"})
REQUIRED_STAGE_KEYS = ("name", "capability", "inputs")

CONFLICT_FIELDS = task_pb2.ConflictPolicy.DESCRIPTOR.fields_by_name
"""The settings a stage's `conflict` may carry: the fields of the ConflictPolicy it becomes."""


def parse_stage(d: Any, at: str) -> Stage:
    if not isinstance(d, Mapping):
        raise InvalidArgument(
            f"{at}: expected a mapping with {list(REQUIRED_STAGE_KEYS)}, got {kind_of(d)}"
        )
    check_keys(d, STAGE_KEYS, REQUIRED_STAGE_KEYS, at, ".")
    name = check_name(d["name"], f"{at}.name")
    capability = d["capability"]
    if not isinstance(capability, str) or not capability:
        raise InvalidArgument(
            f"{at}.capability: expected a capability such as 'classify/digits', "
            f"got {kind_of(capability)}"
        )
    fusion_policy = d.get("fusion_policy")
    if fusion_policy is not None and (not isinstance(fusion_policy, str) or not fusion_policy):
        raise InvalidArgument(
            f"{at}.fusion_policy: expected a strategy name such as 'soft_vote', "
            f"got {kind_of(fusion_policy)}"
        )
    conflict = d.get("conflict")
    if conflict is not None:
        conflict = parse_conflict(conflict, f"{at}.conflict")
    inputs = str_map(d["inputs"], f"{at}.inputs", "stage input name", "a source")
    return Stage(
        name=name,
        capability=capability,
        inputs=inputs,
        fusion_policy=fusion_policy,
        conflict=conflict,
    )


def parse_conflict(d: Any, at: str) -> dict[str, Any]:
    """A ConflictPolicy as a dict: known fields only, each of its field's type."""
    fields = sorted(CONFLICT_FIELDS)
    if not isinstance(d, Mapping):
        raise InvalidArgument(f"{at}: expected a mapping with keys from {fields}, got {kind_of(d)}")
    if "name" not in d:
        raise InvalidArgument(f"{at}.name: missing; expected a conflict policy such as 'quorum'")
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key not in CONFLICT_FIELDS:
            raise InvalidArgument(f"{at}: unknown key {key!r} (expected keys from {fields})")
        fd = CONFLICT_FIELDS[key]
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
            raise InvalidArgument(f"{at}.{key}: expected {expected}, got {kind_of(value)}")
        out[key] = value
    return out


def check_keys(
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


def check_name(value: Any, at: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise InvalidArgument(
            f"{at}: expected a name of letters, digits, '_' and '-', got {kind_of(value)}"
        )
    return value


def str_map(value: Any, at: str, key_kind: str, value_kind: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise InvalidArgument(
            f"{at}: expected a non-empty mapping of {key_kind} to {value_kind}, "
            f"got {kind_of(value)}"
        )
    out: dict[str, str] = {}
    for key, v in value.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"{at}: expected {key_kind}s as strings, got {kind_of(key)}")
        if not isinstance(v, str) or not v:
            raise InvalidArgument(
                f"{at}.{key}: expected {value_kind} as a string, got {kind_of(v)}"
            )
        out[key] = v
    return out


def kind_of(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"
