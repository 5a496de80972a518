"""Dynamic batching: batched results equal one-by-one results for mixed priorities and sizes,
concurrent requests share ONNX Runtime calls, and higher priorities are served first."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from chorus.demo.datasets import digits_split
from chorus.services import repository
from chorus.services.batcher import DynamicBatcher
from chorus.services.runtime import OnnxModel


@pytest.fixture
def model(model_repo: Path):  # type: ignore[no-untyped-def]
    m = OnnxModel(repository.load(model_repo, "mlp"), device="cpu")
    yield m
    m.close()


async def test_batched_equals_one_by_one_for_mixed_sizes_and_priorities(model: OnnxModel) -> None:
    x = digits_split().x_test
    sizes = [1, 3, 2, 5, 1, 4, 1, 1, 2, 7] * 4
    calls: list[int] = []
    batcher = DynamicBatcher(model, max_batch=16, max_delay_s=0.01, on_batch=calls.append)
    try:
        starts = np.cumsum([0, *sizes[:-1]])
        parts = [x[s : s + n] for s, n in zip(starts, sizes, strict=True)]
        results = await asyncio.gather(
            *(batcher.infer({"input": p}, priority=1 + i % 3) for i, p in enumerate(parts))
        )
    finally:
        await batcher.close()
    for part, got in zip(parts, results, strict=True):
        want = model.run({"input": part}).outputs
        np.testing.assert_array_equal(got.outputs["label"], want["label"])
        np.testing.assert_allclose(
            got.outputs["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6
        )
    assert sum(calls) == sum(sizes)
    assert len(calls) < len(sizes) / 2, f"{len(sizes)} requests took {len(calls)} calls"
    assert max(calls) <= 16 or max(sizes) > 16


async def test_the_first_batches_go_to_the_highest_priority(model: OnnxModel) -> None:
    x = digits_split().x_test[:1]
    order: list[int] = []
    batcher = DynamicBatcher(model, max_batch=2, max_delay_s=0.05)

    async def one(priority: int) -> None:
        await batcher.infer({"input": x}, priority=priority)
        order.append(priority)

    try:
        await asyncio.gather(*(one(p) for p in [3, 3, 2, 2, 1, 1]))
    finally:
        await batcher.close()
    assert order[:2] == [1, 1]
    assert order[-2:] == [3, 3]


async def test_batch_of_one_is_a_pass_through(model: OnnxModel) -> None:
    calls: list[int] = []
    batcher = DynamicBatcher(model, max_batch=1, on_batch=calls.append)
    got = await batcher.infer({"input": digits_split().x_test[:3]})
    assert got.outputs["label"].shape == (3,) and calls == [3]


async def test_a_request_alone_runs_at_once_and_one_that_is_not_waits_for_company(
    model: OnnxModel,
) -> None:
    """`alone` skips the batch's wait only when nothing is queued or running: a long delay
    shows which way each request went."""
    x = digits_split().x_test[:3]
    calls: list[int] = []
    batcher = DynamicBatcher(model, max_batch=8, max_delay_s=0.2, on_batch=calls.append)
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        got = await batcher.infer({"input": x[:1]}, alone=True)
        assert loop.time() - start < 0.1
        assert calls == [1]
        np.testing.assert_array_equal(
            got.outputs["label"], model.run({"input": x[:1]}).outputs["label"]
        )
        # Queued behind one that waits, an `alone` request joins its batch.
        waiting = asyncio.ensure_future(batcher.infer({"input": x[1:2]}))
        await asyncio.sleep(0)
        joined = await batcher.infer({"input": x[2:3]}, alone=True)
        await waiting
        assert loop.time() - start >= 0.2
        assert calls == [1, 2]
        assert joined.outputs["label"].shape == (1,)
    finally:
        await batcher.close()
