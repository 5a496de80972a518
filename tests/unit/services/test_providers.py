"""Execution provider choice: CUDA where it really works, CPU otherwise, same code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from chorus.services import providers, repository
from chorus.services.runtime import OnnxModel

gpu = pytest.mark.skipif(not providers.cuda_usable(), reason="no usable CUDA GPU on this machine")


def test_cpu_is_always_available(model_repo: Path) -> None:
    model = OnnxModel(repository.load(model_repo, "logreg"), device="cpu")
    try:
        assert model.provider == providers.CPU
        assert model.device == "cpu"
    finally:
        model.close()


def test_auto_picks_cuda_only_when_usable() -> None:
    chosen = providers.choose("auto")
    assert chosen[-1] == providers.CPU
    assert (providers.CUDA in chosen) == providers.cuda_usable()


@pytest.mark.skipif(providers.cuda_usable(), reason="this machine has a usable GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="device=cuda was asked for, but CUDA is not usable"):
        providers.choose("cuda")


@pytest.mark.gpu
@gpu
def test_cuda_session_matches_cpu(model_repo: Path) -> None:
    version = repository.load(model_repo, "mlp")
    x = np.random.default_rng(0).random((32, 64), dtype=np.float32) * 16
    cuda, cpu = OnnxModel(version, device="cuda"), OnnxModel(version, device="cpu")
    try:
        assert cuda.provider == providers.CUDA
        got = cuda.run({"input": x}).outputs["probabilities"]
        want = cpu.run({"input": x}).outputs["probabilities"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    finally:
        cuda.close()
        cpu.close()


def test_gpu_metrics_only_where_nvml_answers() -> None:
    from chorus.services.gpu_metrics import nvml_collector

    collector = nvml_collector("mlp")
    if not providers.cuda_usable():
        assert collector is None
        return
    assert collector is not None
    names = {m.name for m in collector.collect()}
    assert "chorus_model_gpu_memory_used_bytes" in names
