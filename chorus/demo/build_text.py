"""The caption model: the demo digits described in noisy words, classified from text.

A char n-gram TF-IDF + logistic regression on `chorus.datasets.digit_captions`, exported to
ONNX with a BYTES input. Its errors come from caption noise, not from pixels, so fusing it
late with the image models ("classify/digits+caption") has something to gain.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from chorus.core.spec import TensorSpec
from chorus.demo.datasets import LABELS, digit_captions, digits_split
from chorus.services import repository
from chorus.services.repository import Manifest

NAME = "caption"
CAPABILITIES = ("classify/digits-text", "classify/digits+caption")
INPUT = "caption"
TRAIN_SEED = 1
TEST_SEED = 2


def caption_pipeline() -> object:
    """Untrained pipeline; lowercase=False keeps ONNX free of StringNormalizer, which needs an
    en_US.UTF-8 locale many hosts lack (the captions are lowercase already)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer="char", ngram_range=(1, 3), lowercase=False),
        LogisticRegression(max_iter=1000),
    )


def build_caption_model(root: Path, *, force: bool = False) -> Path | None:
    """Train and export the caption model unless it is there already (always when `force`)."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import StringTensorType

    if not force and NAME in repository.list_models(root):
        return None
    split = digits_split()
    train = digit_captions(split.y_train, TRAIN_SEED)
    test = digit_captions(split.y_test, TEST_SEED)
    est = caption_pipeline()
    est.fit(train[:, 0], split.y_train)  # type: ignore[attr-defined]
    accuracy = float(np.mean(est.predict(test[:, 0]) == split.y_test))  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        # skl2onnx warns that analyzer="char" "may not work"; tests check it matches sklearn.
        warnings.filterwarnings(
            "ignore", message="The conversion of CountVectorizer", category=UserWarning
        )
        onx = convert_sklearn(
            est,
            initial_types=[(INPUT, StringTensorType([None, 1]))],
            options={id(est.steps[-1][1]): {"zipmap": False}},  # type: ignore[attr-defined]
        )
    manifest = Manifest(
        name=NAME,
        version="1",
        capabilities=CAPABILITIES,
        inputs=(TensorSpec(INPUT, "BYTES", (-1, 1)),),
        outputs=(
            TensorSpec("label", "INT64", (-1,)),
            TensorSpec("probabilities", "FP32", (-1, len(LABELS))),
        ),
        labels=LABELS,
        scores_output="probabilities",
        description="char 1-3-gram TF-IDF + logistic regression on noisy digit captions",
        metrics={"holdout_accuracy": round(accuracy, 4)},
    )
    return repository.write(root, manifest, onx.SerializeToString()).path
