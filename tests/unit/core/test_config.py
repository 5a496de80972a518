from pathlib import Path

import pytest

from chorus.config import ModelServiceConfig, RouterConfig, from_env


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
