"""The multi-task model (one trunk, three heads), its manifest heads and how they are served."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from chorus.core.codec import from_tensor, to_tensor
from chorus.core.config import ModelServiceConfig
from chorus.core.context import CAPABILITY, INPUT_SHA256, PRIORITY, Priority
from chorus.core.errors import FailedPrecondition, InvalidArgument
from chorus.core.heartbeat import Heartbeat
from chorus.core.scheduler import PriorityScheduler
from chorus.core.spec import TensorSpec
from chorus.demo.build_multitask import (
    CAPABILITIES,
    DIGITS,
    GREATER_THAN_FOUR,
    NAME,
    PARITY,
    build_multitask_model,
    fit_multitask,
    head_targets,
    multitask_target,
)
from chorus.demo.datasets import LABELS, digits_split
from chorus.pb import wire_pb2
from chorus.services import repository
from chorus.services.augment import infer_augmented
from chorus.services.heads import (
    ALL,
    all_heads,
    apply_head,
    check_capability,
    heartbeat_heads,
    primary_labels,
    reply_outputs,
)
from chorus.services.inference import InferenceCore
from chorus.services.lifecycle import ModelHost
from chorus.services.metrics import ModelMetrics
from chorus.services.repository import Head, Manifest
from chorus.services.runtime import OnnxModel
from chorus.services.worker import NatsWorker
from tests.support.onnx_graphs import declaring

# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def multitask_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multitask")
    assert build_multitask_model(root) is not None
    return root


@pytest.fixture(scope="module")
def built(multitask_repo: Path) -> repository.ModelVersion:
    return repository.load(multitask_repo, NAME)


@pytest.fixture(scope="module")
def onnx_scores(built: repository.ModelVersion) -> dict[str, np.ndarray]:
    """ONNX Runtime's outputs on the held-out digits."""
    session = ort.InferenceSession(str(built.onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {"input": digits_split().x_test})
    return dict(zip(names, values, strict=True))


def _manifest(heads: dict[str, Head] | None = None, **kw: Any) -> Manifest:
    return Manifest(
        name="m",
        version="1",
        capabilities=tuple(heads or ("classify/digits",)),
        inputs=(TensorSpec("input", "FP32", (-1, 64)),),
        outputs=(TensorSpec("probabilities", "FP32", (-1, 5)),),
        labels=("a", "b", "c"),
        scores_output="probabilities",
        heads=heads or {},
        **kw,
    )


HEADS = {
    "abc": Head(columns=(0, 1, 2), labels=("a", "b", "c"), kind="probabilities"),
    "flag": Head(columns=(3,), labels=("no", "yes"), kind="binary"),
    "odd-pair": Head(columns=(4, 0), labels=("x", "y")),
}
SCORES = np.array(
    [
        [0.2, 0.6, 0.2, 0.9, 0.1],
        [0.1, 0.1, 0.8, 0.0, 0.5],
        [0.0, 0.0, 0.0, 1.0, 0.0],  # no mass on "abc": uniform
        [3.0, 1.0, 0.0, 0.25, 1.0],
    ],
    dtype=np.float32,
)


# ---------------------------------------------------------------- the built model


def test_onnx_matches_sklearn_predict_proba(
    built: repository.ModelVersion, onnx_scores: dict[str, np.ndarray]
) -> None:
    split = digits_split()
    est = fit_multitask(split)
    expected = est.predict_proba(split.x_test)  # type: ignore[attr-defined]
    assert expected.shape == (len(split.y_test), 12)
    np.testing.assert_allclose(onnx_scores["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(onnx_scores["label"], est.predict(split.x_test))  # type: ignore[attr-defined]
    assert onnx_scores["label"].dtype == np.int64
    assert onnx_scores["probabilities"].dtype == np.float32
    # The declared outputs match what the session really returns.
    session = ort.InferenceSession(str(built.onnx_path), providers=["CPUExecutionProvider"])
    declared = {o.name: o.shape for o in session.get_outputs()}
    assert declared["label"][1] == 12 and declared["probabilities"][1] == 12
    for spec in built.manifest.outputs:
        assert onnx_scores[spec.name].shape[1:] == tuple(spec.shape[1:])


def test_target_columns() -> None:
    y = np.array([0, 3, 4, 5, 8, 9])
    t = multitask_target(y)
    assert t.shape == (6, 12) and t.dtype == np.int64
    np.testing.assert_array_equal(t[:, :10].argmax(axis=1), y)
    np.testing.assert_array_equal(t[:, 10], [0, 1, 0, 1, 0, 1])
    np.testing.assert_array_equal(t[:, 11], [0, 0, 0, 1, 1, 1])


def test_every_head_is_accurate_on_held_out_digits(
    built: repository.ModelVersion, onnx_scores: dict[str, np.ndarray]
) -> None:
    truth = head_targets(digits_split().y_test)
    heads = all_heads(built.manifest, onnx_scores)
    assert list(heads) == list(CAPABILITIES)
    accuracy = {cap: float(np.mean(out["label"] == truth[cap])) for cap, out in heads.items()}
    assert accuracy[DIGITS] > 0.9
    assert accuracy[PARITY] > 0.9
    assert accuracy[GREATER_THAN_FOUR] > 0.9
    # The manifest records the same held-out accuracies.
    for cap, acc in accuracy.items():
        assert built.manifest.metrics[f"accuracy/{cap}"] == pytest.approx(acc, abs=1e-3)
    assert (
        built.manifest.metrics["holdout_accuracy"] == built.manifest.metrics[f"accuracy/{DIGITS}"]
    )


def test_built_manifest_advertises_three_heads(built: repository.ModelVersion) -> None:
    m = built.manifest
    assert m.capabilities == (DIGITS, PARITY, GREATER_THAN_FOUR)
    assert m.scores_output == "probabilities"
    assert m.heads[DIGITS] == Head(tuple(range(10)), LABELS, "probabilities")
    assert m.heads[PARITY] == Head((10,), ("even", "odd"), "binary")
    assert m.heads[GREATER_THAN_FOUR] == Head((11,), ("<=4", ">4"), "binary")
    assert primary_labels(m) == LABELS


def test_build_skips_an_existing_model_unless_forced(multitask_repo: Path) -> None:
    assert build_multitask_model(multitask_repo) is None


async def test_heads_survive_test_time_augmentation(built: repository.ModelVersion) -> None:
    model = OnnxModel(built, device="cpu")
    try:
        prediction = await infer_augmented(model, {"input": digits_split().x_test[:20]})
    finally:
        model.close()
    assert prediction.outputs["probabilities"].shape == (20, 12)
    out = apply_head(built.manifest, PARITY, prediction.outputs)
    assert out["probabilities"].shape == (20, 2)
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-6)


# ---------------------------------------------------------------- services/heads.py


def test_probabilities_head_selects_and_renormalises() -> None:
    out = apply_head(_manifest(HEADS), "abc", {"probabilities": SCORES})
    assert set(out) == {"label", "probabilities"}
    p = out["probabilities"]
    assert p.shape == (4, 3) and p.dtype == np.float32
    assert out["label"].shape == (4,) and out["label"].dtype == np.int64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(p[0], [0.2, 0.6, 0.2], atol=1e-6)
    np.testing.assert_allclose(p[1], [0.1, 0.1, 0.8], atol=1e-6)
    np.testing.assert_allclose(p[2], [1 / 3] * 3, atol=1e-6)
    np.testing.assert_allclose(p[3], [0.75, 0.25, 0.0], atol=1e-6)
    np.testing.assert_array_equal(out["label"], [1, 2, 0, 0])


def test_probabilities_head_keeps_column_order() -> None:
    out = apply_head(_manifest(HEADS), "odd-pair", {"probabilities": SCORES})
    np.testing.assert_allclose(out["probabilities"][0], [1 / 3, 2 / 3], atol=1e-6)
    np.testing.assert_allclose(out["probabilities"][1], [5 / 6, 1 / 6], atol=1e-6)
    np.testing.assert_array_equal(out["label"][:2], [1, 0])


def test_binary_head_expands_one_column() -> None:
    out = apply_head(_manifest(HEADS), "flag", {"probabilities": SCORES})
    p = out["probabilities"]
    assert p.shape == (4, 2) and p.dtype == np.float32
    np.testing.assert_allclose(p[:, 1], SCORES[:, 3], atol=1e-7)
    np.testing.assert_allclose(p[:, 0], 1.0 - SCORES[:, 3], atol=1e-7)
    np.testing.assert_array_equal(out["label"], [1, 0, 1, 0])


def test_binary_head_clips_out_of_range_scores() -> None:
    scores = np.array([[0, 0, 0, 1.5, 0], [0, 0, 0, -0.5, 0]], dtype=np.float32)
    p = apply_head(_manifest(HEADS), "flag", {"probabilities": scores})["probabilities"]
    np.testing.assert_allclose(p, [[0.0, 1.0], [1.0, 0.0]])


def test_head_of_float64_scores_is_float32() -> None:
    out = apply_head(_manifest(HEADS), "abc", {"probabilities": SCORES.astype(np.float64)})
    assert out["probabilities"].dtype == np.float32


def test_head_of_zero_rows() -> None:
    empty = np.zeros((0, 5), dtype=np.float32)
    for cap, width in (("abc", 3), ("flag", 2)):
        out = apply_head(_manifest(HEADS), cap, {"probabilities": empty})
        assert out["probabilities"].shape == (0, width)
        assert out["label"].shape == (0,)


def test_unknown_head_names_the_capability() -> None:
    with pytest.raises(InvalidArgument, match=r"classify/colour.*has no head.*abc, flag"):
        apply_head(_manifest(HEADS), "classify/colour", {"probabilities": SCORES})


def test_model_without_heads_passes_through() -> None:
    outputs = {"label": np.array([1, 0]), "probabilities": SCORES[:2]}
    out = apply_head(_manifest(), "anything", outputs)
    assert out == outputs and out is not outputs
    assert all_heads(_manifest(), outputs) == {}


def test_missing_or_malformed_scores_output() -> None:
    with pytest.raises(FailedPrecondition, match="no 'probabilities' output"):
        apply_head(_manifest(HEADS), "abc", {"label": np.zeros(2)})
    with pytest.raises(FailedPrecondition, match=r"must be \[rows, columns\]"):
        apply_head(_manifest(HEADS), "abc", {"probabilities": np.zeros(5, dtype=np.float32)})
    with pytest.raises(FailedPrecondition, match="reads columns"):
        apply_head(_manifest(HEADS), "flag", {"probabilities": SCORES[:, :3]})


def test_all_heads_gives_every_head() -> None:
    got = all_heads(_manifest(HEADS), {"probabilities": SCORES})
    assert list(got) == ["abc", "flag", "odd-pair"]
    for cap, out in got.items():
        single = apply_head(_manifest(HEADS), cap, {"probabilities": SCORES})
        np.testing.assert_array_equal(out["probabilities"], single["probabilities"])
        np.testing.assert_array_equal(out["label"], single["label"])


def test_reply_outputs_follows_the_capability_header() -> None:
    m = _manifest(HEADS)
    raw = {"label": np.array([1, 2, 0, 0]), "probabilities": SCORES}
    assert reply_outputs(m, None, raw) is raw  # no header: the model's own outputs
    flag = reply_outputs(m, "flag", raw)
    assert set(flag) == {"label", "probabilities"} and flag["probabilities"].shape == (4, 2)
    every = reply_outputs(m, ALL, raw)
    assert sorted(every) == sorted(f"{c}/{n}" for c in HEADS for n in ("label", "probabilities"))
    np.testing.assert_array_equal(every["flag/probabilities"], flag["probabilities"])
    # A model without heads ignores the header, "*" included.
    assert reply_outputs(_manifest(), "flag", raw) is raw
    assert reply_outputs(_manifest(), ALL, raw) is raw


def test_check_capability() -> None:
    m = _manifest(HEADS)
    for ok in (None, ALL, "abc", "flag"):
        check_capability(m, ok)
    check_capability(_manifest(), "whatever")
    with pytest.raises(InvalidArgument, match="'nope'"):
        check_capability(m, "nope")


def test_primary_labels_and_heartbeat_heads() -> None:
    assert primary_labels(_manifest()) == ("a", "b", "c")
    m = replace(_manifest(HEADS), capabilities=("flag", "abc"))
    assert primary_labels(m) == ("no", "yes")
    assert heartbeat_heads(_manifest()) == {}
    assert heartbeat_heads(_manifest(HEADS))["flag"] == {"labels": ["no", "yes"]}


# ---------------------------------------------------------------- manifest and heartbeat


@pytest.mark.parametrize(
    ("columns", "labels", "kind", "match"),
    [
        ((0,), ("a", "b"), "sigmoid", "head kind"),
        ((0, 1), ("a", "b"), "softmax", "old name"),
        ((), (), "probabilities", "head columns"),
        ((-1,), ("a",), "logits", "head columns"),
        ((0, 1), ("a", "b"), "binary", "binary head"),
        ((0,), ("a",), "binary", "binary head"),
        ((0,), ("a", "b", "c"), "binary_logit", "binary_logit head"),
        ((0, 1), ("a",), "probabilities", "one label per column"),
        ((0, 1), ("a",), "logits", "one label per column"),
    ],
)
def test_head_rejects_inconsistent_definitions(
    columns: tuple[int, ...], labels: tuple[str, ...], kind: Any, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        Head(columns, labels, kind)


def test_manifest_with_heads_round_trips(tmp_path: Path) -> None:
    m = _manifest(HEADS, metrics={"accuracy/flag": 0.9})
    assert Manifest.from_dict(json.loads(m.to_json())) == m
    repository.write(tmp_path, m, declaring(m.inputs, m.outputs))
    assert repository.load(tmp_path, "m").manifest == m


def test_manifest_without_heads_is_unchanged() -> None:
    m = _manifest()
    d = json.loads(m.to_json())
    assert "heads" not in d
    assert Manifest.from_dict(d) == m and Manifest.from_dict(d).heads == {}


def test_old_manifest_on_disk_still_loads(tmp_path: Path) -> None:
    old = {
        "name": "old",
        "version": "3",
        "capabilities": ["classify/digits"],
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
        "labels": list(LABELS),
        "scores_output": "probabilities",
    }
    (tmp_path / "old" / "3").mkdir(parents=True)
    (tmp_path / "old" / "3" / "manifest.json").write_text(json.dumps(old))
    specs = tuple(TensorSpec.from_dict(t) for t in (*old["inputs"], *old["outputs"]))  # type: ignore[attr-defined]
    (tmp_path / "old" / "3" / "model.onnx").write_bytes(declaring(specs[:1], specs[1:]))
    m = repository.load(tmp_path, "old").manifest
    assert m.heads == {} and m.labels == LABELS
    assert apply_head(m, "classify/digits", {"probabilities": SCORES}) == {"probabilities": SCORES}


def _heartbeat(**kw: Any) -> Heartbeat:
    return Heartbeat(
        model="multitask",
        version="1",
        replica="multitask-1",
        capabilities=CAPABILITIES,
        inputs=(TensorSpec("input", "FP32", (-1, 64)),),
        outputs=(TensorSpec("probabilities", "FP32", (-1, 12)),),
        labels=LABELS,
        scores_output="probabilities",
        device="cpu",
        **kw,
    )


def test_heartbeat_round_trips_with_and_without_heads() -> None:
    plain = _heartbeat()
    assert Heartbeat.from_json(plain.to_json()) == plain
    assert json.loads(plain.to_json())["heads"] == {}
    heads = {PARITY: {"labels": ["even", "odd"]}, DIGITS: {"labels": list(LABELS)}}
    with_heads = _heartbeat(heads=heads)
    back = Heartbeat.from_json(with_heads.to_json())
    assert back == with_heads and back.heads[PARITY]["labels"] == ["even", "odd"]


def test_old_heartbeat_without_heads_still_parses() -> None:
    d = json.loads(_heartbeat().to_json())
    del d["heads"]
    assert Heartbeat.from_json(json.dumps(d).encode()).heads == {}


# ---------------------------------------------------------------- the NATS worker, no NATS


class FakeRequest:
    """What NatsWorker reads from and answers through a nats.micro Request."""

    def __init__(self, data: bytes, headers: dict[str, str]) -> None:
        self.data = data
        self.headers = headers
        self.reply: bytes | None = None
        self.error: tuple[str, str] | None = None

    async def respond(self, data: bytes) -> None:
        self.reply = data

    async def respond_error(self, code: str, description: str) -> None:
        self.error = (code, description)


@pytest.fixture
async def worker(built: repository.ModelVersion) -> AsyncIterator[NatsWorker]:
    config = ModelServiceConfig(model=NAME, repository=built.path.parents[1], device="cpu")
    host = ModelHost(config)
    await host.load()
    metrics = ModelMetrics(NAME)
    w = NatsWorker(
        None,  # type: ignore[arg-type]
        host,
        metrics,
        replica="multitask-1",
        heartbeat_s=1.0,
        default_budget_s=10.0,
        core=InferenceCore(NAME, metrics, PriorityScheduler(NAME, 1, {p: 8 for p in Priority})),
    )
    yield w
    await host.close()


async def _ask(worker: NatsWorker, x: np.ndarray, capability: str | None) -> FakeRequest:
    body = wire_pb2.InferCall(inputs=[to_tensor("input", x)]).SerializeToString()
    headers = {PRIORITY: "NORMAL"}
    if capability is not None:
        headers[CAPABILITY] = capability
    request = FakeRequest(body, headers)
    await worker._serve_traced(request)  # type: ignore[arg-type]
    return request


def _outputs(request: FakeRequest) -> dict[str, np.ndarray]:
    assert request.error is None, request.error
    assert request.reply is not None
    reply = wire_pb2.InferReply()
    reply.ParseFromString(request.reply)
    return {t.name: from_tensor(t) for t in reply.outputs}


async def test_worker_serves_the_head_named_in_the_header(worker: NatsWorker) -> None:
    split = digits_split()
    x = split.x_test[:32]
    raw = _outputs(await _ask(worker, x, None))
    assert raw["probabilities"].shape == (32, 12)  # no header: the model's own outputs

    parity = _outputs(await _ask(worker, x, PARITY))
    assert set(parity) == {"label", "probabilities"}
    assert parity["probabilities"].shape == (32, 2)
    np.testing.assert_allclose(parity["probabilities"][:, 1], raw["probabilities"][:, 10])
    assert np.mean(parity["label"] == split.y_test[:32] % 2) > 0.9

    digits = _outputs(await _ask(worker, x, DIGITS))
    assert digits["probabilities"].shape == (32, 10)
    np.testing.assert_allclose(digits["probabilities"].sum(axis=1), 1.0, atol=1e-5)

    every = _outputs(await _ask(worker, x, ALL))
    assert sorted(every) == sorted(
        f"{c}/{n}" for c in CAPABILITIES for n in ("label", "probabilities")
    )
    np.testing.assert_array_equal(every[f"{DIGITS}/label"], digits["label"])
    np.testing.assert_allclose(
        every[f"{GREATER_THAN_FOUR}/probabilities"][:, 1], raw["probabilities"][:, 11]
    )


async def test_worker_rejects_an_unknown_head_before_inference(worker: NatsWorker) -> None:
    request = await _ask(worker, digits_split().x_test[:2], "classify/colour")
    assert request.reply is None and request.error is not None
    code, message = request.error
    assert code == "INVALID_ARGUMENT" and "classify/colour" in message
    assert worker.core.ewma_ms == 0.0  # nothing ran


async def test_worker_heartbeat_carries_heads(worker: NatsWorker) -> None:
    hb = worker.heartbeat()
    assert hb.labels == LABELS
    assert hb.heads == {
        DIGITS: {"labels": list(LABELS)},
        PARITY: {"labels": ["even", "odd"]},
        GREATER_THAN_FOUR: {"labels": ["<=4", ">4"]},
    }
    assert Heartbeat.from_json(hb.to_json()) == hb


async def test_input_sha256_header_is_still_checked(worker: NatsWorker) -> None:
    body = wire_pb2.InferCall(inputs=[to_tensor("input", digits_split().x_test[:1])])
    request = FakeRequest(body.SerializeToString(), {INPUT_SHA256: "0" * 64, CAPABILITY: PARITY})
    await worker._serve_traced(request)  # type: ignore[arg-type]
    assert request.error is not None and request.error[0] == "DATA_LOSS"
