"""ModelHost in-process: which version serves, rollbacks, side-by-side versions, and that a
retired version closes only after its last request."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from chorus.core.config import ModelServiceConfig
from chorus.core.errors import NotFound, Unavailable
from chorus.services import repository
from chorus.services.lifecycle import READY, UNAVAILABLE, ModelHost


@pytest.fixture
def two_versions(model_repo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(model_repo / "logreg" / "1", root / "logreg" / "1")
    v1 = repository.load(root, "logreg").manifest
    onnx = (model_repo / "mlp" / "1" / "model.onnx").read_bytes()
    repository.write(root, dataclasses.replace(v1, version="2"), onnx)
    return root


def _host(root: Path, keep: int = 1) -> ModelHost:
    config = ModelServiceConfig(
        model="logreg", repository=root, device="cpu", reload_poll_s=0, keep_versions=keep
    )
    return ModelHost(config)


async def test_the_highest_version_serves_and_a_rollback_sticks(two_versions: Path) -> None:
    host = _host(two_versions)
    try:
        assert await host.load() == "2"
        with host.use() as loaded:
            assert loaded.version == "2"
        await host.load("1")
        with host.use() as loaded:
            assert loaded.version == "1"
        states = {s.version: s.state for s in host.index()}
        assert states == {"1": READY, "2": UNAVAILABLE}
        with pytest.raises(Unavailable, match="version 2 is not loaded"), host.use("2"):
            pass
        with pytest.raises(NotFound, match="no version '9'"), host.use("9"):
            pass
    finally:
        await host.close()


async def test_versions_side_by_side_answer_by_name(two_versions: Path) -> None:
    host = _host(two_versions, keep=2)
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32) * 16
    try:
        await host.load("1")
        await host.load("2")
        assert [v.version for v in host.loaded()] == ["1", "2"]
        answers = {}
        for v in ("1", "2"):
            with host.use(v) as loaded:
                answers[v] = (await loaded.model.infer({"input": x})).outputs["probabilities"]
        assert not np.allclose(answers["1"], answers["2"])  # logreg's and the MLP's weights
    finally:
        await host.close()


async def test_a_retired_version_closes_after_its_last_request(two_versions: Path) -> None:
    host = _host(two_versions)
    try:
        await host.load("1")
        with host.use() as held:
            await host.load("2")
            assert held.retiring
            await asyncio.sleep(0.05)
            assert not held.model.closed
            # Still open: a request on it can finish.
            x = np.zeros((1, 64), dtype=np.float32)
            assert (await held.model.infer({"input": x})).outputs["label"].shape == (1,)
        await asyncio.sleep(0.2)
        assert held.model.closed
    finally:
        await host.close()
