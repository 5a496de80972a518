"""Noisy digit captions and the caption (text) model built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from chorus.core.codec import from_tensor, to_tensor
from chorus.core.errors import InvalidArgument
from chorus.demo import datasets
from chorus.demo.build_text import TEST_SEED, TRAIN_SEED, build_caption_model, caption_pipeline
from chorus.demo.datasets import (
    CAPTION_TEMPLATES,
    DIGIT_WORDS,
    MISLEADING_RATE,
    UNINFORMATIVE_CAPTIONS,
    UNINFORMATIVE_RATE,
    Split,
    digit_captions,
    digits_split,
)
from chorus.services import repository
from chorus.services.runtime import OnnxModel


@pytest.fixture(scope="module")
def split() -> Split:
    return digits_split()


@pytest.fixture(scope="module")
def test_captions(split: Split) -> np.ndarray:
    return digit_captions(split.y_test, TEST_SEED)


@pytest.fixture(scope="module")
def caption_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("caption-models")
    assert build_caption_model(root) is not None
    return root


@pytest.fixture(scope="module")
def onnx_outputs(caption_repo: Path, test_captions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    path = repository.load(caption_repo, "caption").onnx_path
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"caption": test_captions})
    return label, probabilities


def test_captions_are_deterministic_lowercase_strings(split: Split) -> None:
    a = digit_captions(split.y_train, TRAIN_SEED)
    b = digit_captions(split.y_train, TRAIN_SEED)
    assert a.dtype == np.dtype(object)
    assert a.shape == (len(split.y_train), 1)
    np.testing.assert_array_equal(a, b)
    assert all(type(c) is str and c and c == c.lower() for c in a.flat)
    assert all(c == " ".join(c.split()) for c in a.flat)
    other = digit_captions(split.y_train, TEST_SEED)
    assert np.mean(a != other) > 0.5


def test_caption_noise_is_roughly_as_documented(
    split: Split, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = np.repeat(split.y_train, 4)
    clean = {t.format(w=w, d=d) for t in CAPTION_TEMPLATES for d, w in enumerate(DIGIT_WORDS)}
    clean |= set(UNINFORMATIVE_CAPTIONS)
    typos = np.array([c not in clean for c in digit_captions(labels, TRAIN_SEED).flat])
    assert 0.2 < typos.mean() < 0.6  # 1 - (1 - TYPO_RATE) ** (about 12 characters)

    monkeypatch.setattr(datasets, "TYPO_RATE", 0.0)
    captions = digit_captions(labels, TRAIN_SEED)[:, 0]
    assert set(captions) <= clean
    vague = np.isin(captions, UNINFORMATIVE_CAPTIONS)
    assert abs(vague.mean() - UNINFORMATIVE_RATE) < 0.03
    named = [{d for d, w in enumerate(DIGIT_WORDS) if w in c or str(d) in c} for c in captions]
    assert all(len(n) == 1 for n, v in zip(named, vague, strict=True) if not v)
    wrong = [not v and int(y) not in n for n, v, y in zip(named, vague, labels, strict=True)]
    assert abs(np.mean(wrong) - MISLEADING_RATE) < 0.03


def test_built_model_matches_sklearn(
    split: Split, test_captions: np.ndarray, onnx_outputs: tuple[np.ndarray, np.ndarray]
) -> None:
    est = caption_pipeline()
    est.fit(digit_captions(split.y_train, TRAIN_SEED)[:, 0], split.y_train)  # type: ignore[attr-defined]
    label, probabilities = onnx_outputs
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (len(split.y_test), 10)
    np.testing.assert_allclose(
        probabilities,
        est.predict_proba(test_captions[:, 0]),  # type: ignore[attr-defined]
        atol=1e-5,
    )
    np.testing.assert_array_equal(label, est.predict(test_captions[:, 0]))  # type: ignore[attr-defined]


def test_held_out_accuracy_and_manifest(
    caption_repo: Path, split: Split, onnx_outputs: tuple[np.ndarray, np.ndarray]
) -> None:
    accuracy = float(np.mean(onnx_outputs[0] == split.y_test))
    assert 0.6 < accuracy < 0.9
    manifest = repository.load(caption_repo, "caption").manifest
    assert manifest.metrics["holdout_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert manifest.capabilities == ("classify/digits-text", "classify/digits+caption")
    assert [(s.name, s.datatype, s.shape) for s in manifest.inputs] == [
        ("caption", "BYTES", (-1, 1))
    ]
    assert manifest.scores_output == "probabilities"


def test_build_skips_existing_unless_forced(caption_repo: Path) -> None:
    assert build_caption_model(caption_repo) is None


def test_text_errors_are_not_image_errors(
    split: Split, onnx_outputs: tuple[np.ndarray, np.ndarray]
) -> None:
    from sklearn.linear_model import LogisticRegression

    image = LogisticRegression(max_iter=2000).fit(split.x_train / 16, split.y_train)
    image_wrong = image.predict(split.x_test / 16) != split.y_test
    text_wrong = onnx_outputs[0] != split.y_test
    assert image_wrong.any() and text_wrong.any()
    both = np.sum(image_wrong & text_wrong)
    assert both < 0.5 * np.sum(text_wrong)


@pytest.fixture
def caption_model(caption_repo: Path) -> OnnxModel:
    return OnnxModel(repository.load(caption_repo, "caption"), device="cpu")


async def test_onnx_model_runs_decoded_bytes(
    caption_model: OnnxModel,
    split: Split,
    test_captions: np.ndarray,
    onnx_outputs: tuple[np.ndarray, np.ndarray],
) -> None:
    try:
        inputs = {"caption": from_tensor(to_tensor("caption", test_captions[:16]))}
        assert inputs["caption"].dtype == np.dtype(object)
        caption_model.validate(inputs)
        prediction = caption_model.run(inputs)
        np.testing.assert_array_equal(prediction.outputs["label"], onnx_outputs[0][:16])
        np.testing.assert_allclose(
            prediction.outputs["probabilities"], onnx_outputs[1][:16], atol=1e-6
        )
        inferred = await caption_model.infer(inputs)
        np.testing.assert_array_equal(inferred.outputs["label"], onnx_outputs[0][:16])
    finally:
        caption_model.close()


def test_onnx_model_rejects_non_string_captions(caption_model: OnnxModel) -> None:
    try:
        with pytest.raises(InvalidArgument, match=r"inputs\['caption'\]: BYTES elements"):
            caption_model.validate({"caption": np.array([[7]], dtype=object)})
        with pytest.raises(InvalidArgument, match=r"inputs\['caption'\]: expected datatype"):
            caption_model.validate({"caption": np.zeros((1, 1), np.float32)})
    finally:
        caption_model.close()
