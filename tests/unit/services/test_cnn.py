"""The bench CNN: a valid ONNX graph, batch-invariant, and batched by the model service's
batcher with the same answers as one image at a time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from chorus.demo.build_cnn import CLASSES, NAME, SHAPE, build_cnn
from chorus.services import repository
from chorus.services.batcher import DynamicBatcher
from chorus.services.runtime import OnnxModel


async def test_cnn_builds_runs_and_batches(tmp_path: Path) -> None:
    assert build_cnn(tmp_path) is not None
    assert build_cnn(tmp_path) is None  # already there
    model = OnnxModel(repository.load(tmp_path, NAME), device="cpu")
    try:
        x = np.random.default_rng(0).random((6, *SHAPE), dtype=np.float32)
        whole = model.run({"input": x}).outputs
        assert whole["probabilities"].shape == (6, CLASSES)
        np.testing.assert_allclose(whole["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
        assert np.array_equal(whole["label"], whole["probabilities"].argmax(axis=1))
        sizes: list[int] = []
        batcher = DynamicBatcher(model, max_batch=8, max_delay_s=0.02, on_batch=sizes.append)
        try:
            parts = await asyncio.gather(
                *(batcher.infer({"input": x[i : i + 1]}, priority=1 + i % 3) for i in range(6))
            )
        finally:
            await batcher.close()
        got = np.concatenate([p.outputs["probabilities"] for p in parts])
        np.testing.assert_allclose(got, whole["probabilities"], rtol=1e-4, atol=1e-6)
        assert sum(sizes) == 6 and len(sizes) < 6
    finally:
        model.close()
