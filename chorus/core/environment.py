"""Settings from the environment: each field of a config section (chorus.core.config) can be set
as CHORUS_<SECTION>_<FIELD> (for example CHORUS_ROUTER_GRPC_PORT=50051) or, for every section
at once, CHORUS_<FIELD> (for example CHORUS_NATS_URL); command-line flags override the
environment.

Every value is checked where it is read: a number out of its range, a name outside its
choices or a boolean that is not one (say "ture") is a ConfigError naming the variable, and
`check_environment` names, at a service's start, every CHORUS_ variable nothing reads.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from chorus.core.config import SECTIONS, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")

OTHER_VARIABLES: dict[str, str] = {
    "CHORUS_MODELS": "the ensemble's members, listed in chorus-config by `chorus k8s render` "
    "for the reader; no service reads it",
    "CHORUS_IMAGE_REGISTRY": "scripts/build-images.sh and the image test: the registry",
    "CHORUS_IMAGE_TARGETS": "scripts/build-images.sh: the images to build",
    "CHORUS_TEST_BASE_IMAGE": "tests: the image test's base image",
    "CHORUS_SOAK_S": "tests: the soak's length",
    "CHORUS_FUZZ_EXAMPLES": "tests: the fuzzer's examples per target",
    "CHORUS_ROUTER": "the client and every CLI command: the router's address (flags win)",
    "CHORUS_TEST_TRITON": "tests: build the Triton baseline's virtualenv (1) instead of skipping",
}
"""CHORUS_ variables that set no field but are no mistake: tools and tests read them, and a
service started beside them (a test's child, a pod with the shared ConfigMap) sees them."""

SECTION_PREFIXES = tuple(f"CHORUS_{section.upper()}_" for section in SECTIONS)


def from_env(cls: type[T], section: str, env: dict[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from defaults, then CHORUS_<SECTION>_<FIELD> variables, then `overrides`.

    `overrides` whose value is None are ignored, so unset CLI flags fall through.
    """
    source = os.environ if env is None else env
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        for key in (f"CHORUS_{section}_{f.name}".upper(), f"CHORUS_{f.name}".upper()):
            if key in source:
                values[f.name] = _parse(hints[f.name], source[key], key)
                keys[f.name] = f"{key}={source[key]!r}"
                break
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    keys.update({k: f"{k}={v!r}" for k, v in given.items()})
    try:
        return cls(**values)
    except ConfigError as err:
        where = keys.get(err.field)
        raise ConfigError(f"{where}: {err}" if where else str(err), err.field) from None


TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")


def _parse(kind: Any, raw: str, key: str) -> Any:
    if kind is bool:
        word = raw.strip().lower()
        if word in TRUE or word in FALSE:
            return word in TRUE
        raise ConfigError(
            f"{key}: expected a boolean ({'/'.join(TRUE)} or {'/'.join(FALSE)}), got {raw!r}"
        )
    try:
        if kind in (int, float, str, Path):
            return kind(raw)
    except ValueError:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {raw!r}") from None
    raise TypeError(f"{key}: unsupported type {kind}")


def known_variables() -> frozenset[str]:
    """Every CHORUS_ variable something reads: each section's fields in both forms, and
    OTHER_VARIABLES."""
    names = set(OTHER_VARIABLES)
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            names.add(f"CHORUS_{section}_{f.name}".upper())
            names.add(f"CHORUS_{f.name}".upper())
    return frozenset(names)


def unknown_variables(env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The CHORUS_ variables in `env` that nothing reads, each with the closest known name
    (None when none is close), sorted."""
    known = known_variables()
    return [
        (name, next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None))
        for name in sorted(env)
        if name.startswith("CHORUS_") and name not in known
    ]


def check_environment(env: Mapping[str, str] | None = None) -> None:
    """Name every CHORUS_ variable nothing reads, once, at a service's start.

    One under a section's prefix (CHORUS_ROUTER_MAX_ATEMPTS) is plainly meant for Chorus:
    ignored, the service would run without a setting its operator believes is on, so it is a
    ConfigError naming it and the closest known name. Any other (CHORUS_FOO) may belong to
    someone else sharing the prefix, a script, a newer ConfigMap: a warning naming the same.
    """
    errors: list[str] = []
    for name, closest in unknown_variables(os.environ if env is None else env):
        hint = f" (did you mean {closest}?)" if closest else ""
        if name.startswith(SECTION_PREFIXES):
            errors.append(f"{name}: no such setting{hint}")
        else:
            log.warning("%s: not a Chorus setting, ignored%s", name, hint)
    if errors:
        raise ConfigError("; ".join(errors))
