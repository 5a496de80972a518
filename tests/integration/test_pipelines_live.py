"""Pipelines and cascades through the running mesh."""

from __future__ import annotations

import numpy as np

from chorus.client import Cascade, NotFound, TaskClient
from chorus.demo.build_text import TEST_SEED
from chorus.demo.datasets import digit_captions, digits_split


def test_shipped_pipeline_runs_its_stages_in_parallel(client: TaskClient) -> None:
    split = digits_split()
    x, y = split.x_test[:40], split.y_test[:40]
    captions = digit_captions(y, TEST_SEED)
    result = client.submit("", {"image": x, "caption": captions}, pipeline="digits-describe")
    response, outputs = result.response, result.outputs
    assert set(outputs) == {"digit", "text_digit", "combined"}
    assert [s.name for s in response.stages] == ["digit", "caption_check", "combined"]
    assert np.mean(outputs["digit"] == y) > 0.9
    assert np.mean(outputs["combined"] == y) >= np.mean(outputs["text_digit"] == y)
    combined = next(s for s in response.stages if s.name == "combined")
    assert sorted(combined.explanation.members) == ["caption", "forest", "logreg", "mlp"]
    assert combined.explanation.conflict_policy == "quorum"


def test_unknown_pipeline_is_not_found(client: TaskClient) -> None:
    import grpc
    import pytest

    with pytest.raises(NotFound) as info:
        client.submit("", {}, pipeline="nope", timeout_s=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "digits-describe" in info.value.details()


def test_cascade_asks_more_members_only_where_unsure(client: TaskClient) -> None:
    split = digits_split()
    x, y = split.x_test[:200], split.y_test[:200]
    result = client.submit("classify/digits", {"input": x}, cascade=Cascade(threshold=0.6))
    depth = np.array(result.response.cascade_depth)
    policy = result.response.explanation.policy
    accuracy = np.mean(result.labels == y)
    print(f"\ncascade depth counts {np.bincount(depth).tolist()}; accuracy {accuracy:.3f}")
    print(policy)
    assert depth.shape == (200,)
    assert (depth == 1).any() and (depth > 1).any()
    assert depth.sum() < 3 * 200, "a cascade must ask fewer members than a full fan-out"
    assert accuracy > 0.95
    assert policy.startswith("cascade at 0.6: 200 rows to [")
