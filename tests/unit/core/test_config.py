import dataclasses
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from chorus.core.config import (
    SECTIONS,
    ConfigError,
    FuserConfig,
    JetStreamConfig,
    ModelServiceConfig,
    RouterConfig,
)
from chorus.core.environment import (
    OTHER_VARIABLES,
    check_environment,
    from_env,
    known_variables,
    unknown_variables,
)
from tests.support import REPO


def test_defaults_run() -> None:
    cfg = from_env(RouterConfig, "router", env={})
    assert cfg.grpc_port == 50051
    assert cfg.default_policy == "soft_vote"


def test_section_env_beats_global_env_and_flags_beat_both() -> None:
    env = {
        "CHORUS_NATS_URL": "nats://global:1",
        "CHORUS_MODEL_NATS_URL": "nats://model:2",
        "CHORUS_MODEL_REPOSITORY": "/srv/models",
        "CHORUS_MODEL_INSTANCES": "2",
    }
    cfg = from_env(ModelServiceConfig, "model", env=env, model="mlp", instances=None)
    assert cfg.nats_url == "nats://model:2"
    assert cfg.repository == Path("/srv/models")
    assert cfg.instances == 2
    assert cfg.model == "mlp"
    assert from_env(RouterConfig, "router", env=env).nats_url == "nats://global:1"


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(ValueError, match="CHORUS_ROUTER_GRPC_PORT: expected int, got 'abc'"):
        from_env(RouterConfig, "router", env={"CHORUS_ROUTER_GRPC_PORT": "abc"})
    with pytest.raises(ValueError, match="device: expected auto, cpu or cuda"):
        from_env(ModelServiceConfig, "model", env={"CHORUS_MODEL_DEVICE": "tpu"})
    with pytest.raises(ValueError, match="grpc_engine: expected native or grpcio"):
        from_env(RouterConfig, "router", env={"CHORUS_ROUTER_GRPC_ENGINE": "grpc"})


@pytest.mark.parametrize(
    ("section", "variable", "value", "message"),
    [
        ("router", "CHORUS_ROUTER_HEDGE", "ture", "CHORUS_ROUTER_HEDGE: expected a boolean"),
        ("router", "CHORUS_ROUTER_ONE_WAY", "", "CHORUS_ROUTER_ONE_WAY: expected a boolean"),
        ("router", "CHORUS_ROUTER_MAX_ATTEMPTS", "0",
         "CHORUS_ROUTER_MAX_ATTEMPTS='0': max_attempts: expected >= 1, got 0"),
        ("router", "CHORUS_ROUTER_ATTEMPT_TIMEOUT_S", "nan", "attempt_timeout_s: expected > 0"),
        ("router", "CHORUS_ROUTER_GRPC_PORT", "70000", "grpc_port: expected a port"),
        ("router", "CHORUS_METRICS_PORT", "-1", "CHORUS_METRICS_PORT='-1': metrics_port"),
        ("fuser", "CHORUS_FUSER_CONFORMAL_COVERAGE", "1.5",
         "conformal_coverage: expected strictly between 0 and 1, got 1.5"),
        ("fuser", "CHORUS_FUSER_MIN_MARGIN", "-0.1", "min_margin: expected between 0 and 1"),
        ("fuser", "CHORUS_FUSER_MAX_SPREAD", "inf", "max_spread: expected a finite number >= 0"),
        ("fuser", "CHORUS_FUSER_DEFAULT_BUDGET_S", "0", "default_budget_s: expected > 0"),
        ("fuser", "CHORUS_FUSER_KEEP_TASKS", "maybe",
         "CHORUS_FUSER_KEEP_TASKS: expected a boolean"),
        ("model", "CHORUS_MODEL_KEEP_VERSIONS", "0", "keep_versions: expected >= 1, got 0"),
        ("model", "CHORUS_MODEL_AGING_S", "0", "aging_s: expected > 0, got 0.0"),
        ("jetstream", "CHORUS_JETSTREAM_REPLICAS", "7", "replicas: expected 0 (by the cluster's"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_naming_the_variable(
    section: str, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        from_env(SECTIONS[section], section, env={variable: value})


@pytest.mark.parametrize("word", ["1", "true", "Yes", " on ", "0", "false", "NO", "off"])
def test_booleans_take_the_usual_words(word: str) -> None:
    on = from_env(RouterConfig, "router", env={"CHORUS_ROUTER_HEDGE": word}).hedge
    assert on is (word.strip().lower() in ("1", "true", "yes", "on"))


def test_a_flag_out_of_range_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^grpc_port=-2: grpc_port: expected a port"):
        from_env(RouterConfig, "router", env={}, grpc_port=-2)


def _numbers(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    hints = {f.name: f.type for f in dataclasses.fields(cls)}
    return [f for f in dataclasses.fields(cls) if hints[f.name] in ("int", "float")]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_number_of_every_section_has_a_range(section: str) -> None:
    """No number goes unchecked: a negative count or a NaN duration is refused, for every
    field of every section."""
    cls = SECTIONS[section]
    for f in _numbers(cls):
        bad = -1 if f.type == "int" else float("nan")
        with pytest.raises(ConfigError, match=rf"^{f.name}: expected"):
            cls(**{f.name: bad})


def test_the_defaults_pass_their_own_checks() -> None:
    for cls in SECTIONS.values():
        cls()
    assert FuserConfig().conformal_coverage == 0.9
    assert JetStreamConfig().replicas == 0


def test_an_unknown_variable_under_a_section_is_an_error_naming_the_closest() -> None:
    env = {"CHORUS_ROUTER_MAX_ATEMPTS": "5", "CHORUS_ROUTER_HEDGE": "1"}
    assert unknown_variables(env) == [("CHORUS_ROUTER_MAX_ATEMPTS", "CHORUS_ROUTER_MAX_ATTEMPTS")]
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "CHORUS_ROUTER_MAX_ATEMPTS: no such setting (did you mean CHORUS_ROUTER_MAX_ATTEMPTS?)"
        ),
    ):
        check_environment(env)


def test_an_unknown_variable_outside_the_sections_is_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = {"CHORUS_NATS_ULR": "nats://x:1", "CHORUS_SOMETHING_ELSE": "1", "PATH": "/bin"}
    with caplog.at_level(logging.WARNING, logger="chorus.core.config"):
        check_environment(env)
    assert [r.getMessage() for r in caplog.records] == [
        "CHORUS_NATS_ULR: not a Chorus setting, ignored (did you mean CHORUS_NATS_URL?)",
        "CHORUS_SOMETHING_ELSE: not a Chorus setting, ignored",
    ]


def test_every_variable_the_project_sets_or_reads_is_known() -> None:
    """Each CHORUS_ name in the code, the tests, the manifests, the Dockerfile and the scripts
    is either a setting or listed in OTHER_VARIABLES, so no service started beside it (a
    test's child, a pod with the shared ConfigMap) refuses or warns about it."""
    not_variables = {
        "CHORUS_REVIEW",  # a JetStream stream
        "CHORUS_TASKS",  # the durable tasks' streams, CHORUS_TASKS_<PRIORITY>
        "CHORUS_TASKS_NORMAL",
        "CHORUS_NATS_PASSWORD",  # the nats-server pod's own, never a Chorus service's
        "CHORUS_PIP_EXTRA",  # a Dockerfile build argument, gone from the built image
        "CHORUS_SECURITY",  # CHORUS_SECURITY_* in prose
        "CHORUS_ROUTER_MAX_ATEMPTS",  # the README's and config.py's examples of a mistake
        "CHORUS_FOO",
    }
    files = [
        *(REPO / "chorus").rglob("*.py"),
        *(REPO / "chorus/deploy").rglob("*.yaml"),
        *(REPO / "tests").rglob("*.py"),
        *(REPO / "scripts").glob("*"),
        REPO / "Dockerfile",
        REPO / "README.md",
    ]
    seen = {
        name
        for path in files
        if path.is_file() and path != Path(__file__)
        for name in re.findall(r"\bCHORUS_[A-Z0-9_]*[A-Z0-9]\b", path.read_text())
    }
    assert "CHORUS_ROUTER_ONE_WAY" in seen and "CHORUS_LIVENESS_STALL_S" in seen
    assert sorted(seen - known_variables() - not_variables) == []
    assert set(OTHER_VARIABLES) <= seen  # no stale entries
