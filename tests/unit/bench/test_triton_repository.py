"""The Triton model repository the bench writes: every config.pbtxt parses as Triton's own
ModelConfig (tritonclient's copy of model_config.proto) and says what bench/README.md says.
The server itself runs in tests/integration/test_triton_bench.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from chorus.bench.triton import MODEL_FILE, Batching, Tensor, ensemble_models, whole_model

X = Tensor("input", "TYPE_FP32", (64,))
PROBS = Tensor("probabilities", "TYPE_FP32", (10,))
MEMBERS = {"logreg": Path("/m/logreg.onnx"), "forest": Path("/m/forest.onnx")}


def _config(root: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse((root / name / "config.pbtxt").read_text(), mc.ModelConfig())


def _python_model_as_the_docs_advise(root: Path, name: str) -> mc.ModelConfig:
    config = _config(root, name)
    assert config.backend == "python"
    assert config.max_batch_size == 64
    assert config.HasField("dynamic_batching")
    # Triton's defaults: no added delay, no preferred sizes.
    assert config.dynamic_batching == mc.ModelDynamicBatching()
    (group,) = config.instance_group
    assert (group.count, group.kind) == (1, mc.ModelInstanceGroup.KIND_CPU)
    assert (root / name / "1" / "model.py").read_text() == MODEL_FILE.read_text()
    return config


def test_the_ensemble_wires_each_member_into_the_vote(tmp_path: Path) -> None:
    ensemble_models(tmp_path, "digits", MEMBERS, X, PROBS)
    for member, onnx in MEMBERS.items():
        config = _python_model_as_the_docs_advise(tmp_path, member)
        assert config.parameters["role"].string_value == "member"
        assert config.parameters["models"].string_value == f'["{onnx}"]'
        assert [o.name for o in config.output] == ["probabilities"]
    vote = _python_model_as_the_docs_advise(tmp_path, "soft_vote")
    assert [i.name for i in vote.input] == ["p_logreg", "p_forest"]
    assert [o.name for o in vote.output] == ["probabilities", "label"]

    ensemble = _config(tmp_path, "digits")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 64
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["logreg", "forest", "soft_vote"]
    for step in steps[:2]:
        assert dict(step.input_map) == {"input": "input"}
        assert dict(step.output_map) == {"probabilities": f"p_{step.model_name}"}
    assert dict(steps[2].input_map) == {"p_logreg": "p_logreg", "p_forest": "p_forest"}
    assert dict(steps[2].output_map) == {"probabilities": "probabilities", "label": "label"}
    assert [(o.name, list(o.dims)) for o in ensemble.output] == [
        ("probabilities", [10]),
        ("label", [1]),
    ]


def test_the_single_model_holds_every_session(tmp_path: Path) -> None:
    whole_model(tmp_path, "digits", list(MEMBERS.values()), X, PROBS)
    config = _python_model_as_the_docs_advise(tmp_path, "digits")
    assert config.parameters["role"].string_value == "whole"
    assert config.parameters["models"].string_value == '["/m/logreg.onnx", "/m/forest.onnx"]'
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input", mc.TYPE_FP32, [64])
    ]


def test_the_batching_knobs_reach_every_model(tmp_path: Path) -> None:
    batching = Batching(max_batch=32, queue_delay_us=200, instances=2)
    ensemble_models(tmp_path, "digits", MEMBERS, X, PROBS, batching)
    for name in (*MEMBERS, "soft_vote"):
        config = _config(tmp_path, name)
        assert config.max_batch_size == 32
        assert config.dynamic_batching.max_queue_delay_microseconds == 200
        assert [g.count for g in config.instance_group] == [2]
    assert _config(tmp_path, "digits").max_batch_size == 32
    assert "max_queue_delay_microseconds: 200" in batching.describe()


def test_batching_refuses_what_triton_would() -> None:
    with pytest.raises(ValueError, match="instances >= 1"):
        Batching(instances=0)
    with pytest.raises(ValueError, match="queue_delay_us >= 0"):
        Batching(queue_delay_us=-1)
