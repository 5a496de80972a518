"""The manifest's runtime options reach ONNX Runtime, and the service's settings win."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from chorus.core.config import ModelServiceConfig
from chorus.services import providers, repository
from chorus.services.repository import Manifest, RuntimeOptions
from chorus.services.runtime import OnnxModel, RunSettings

gpu = pytest.mark.skipif(not providers.cuda_usable(), reason="no usable CUDA GPU on this machine")


def test_runtime_options_round_trip_through_the_manifest(model_repo: Path) -> None:
    manifest = repository.load(model_repo, "mlp").manifest
    assert "runtime" not in json.loads(manifest.to_json())  # defaults stay out of the file
    tuned = dataclasses.replace(
        manifest, runtime=RuntimeOptions(graph_optimization="basic", instances=2, max_batch=32)
    )
    back = Manifest.from_dict(json.loads(tuned.to_json()))
    assert back.runtime == tuned.runtime


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"graph_optimization": "max"}, r"runtime.graph_optimization: expected one of"),
        ({"execution_mode": "eager"}, r"runtime.execution_mode: expected one of"),
        ({"instances": -1}, r"runtime.instances: expected >= 0, got -1"),
        ({"threads": 4}, r"runtime: unknown option\(s\) \['threads'\]"),
    ],
)
def test_bad_runtime_options_name_the_field(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RuntimeOptions.from_dict(options)


def test_service_settings_beat_the_manifest_which_beats_defaults() -> None:
    manifest = RuntimeOptions(instances=3, max_batch=16, max_batch_delay_ms=4.0)
    plain = RunSettings.resolve(manifest, ModelServiceConfig())
    assert (plain.instances, plain.max_batch, plain.max_batch_delay_ms) == (3, 16, 4.0)
    assert plain.intra_op_threads == 1
    given = RunSettings.resolve(manifest, ModelServiceConfig(instances=1, max_batch=64))
    assert (given.instances, given.max_batch, given.max_batch_delay_ms) == (1, 64, 4.0)
    assert RunSettings.resolve(RuntimeOptions(), ModelServiceConfig()) == RunSettings()


async def test_several_instances_answer_as_one(model_repo: Path) -> None:
    version = repository.load(model_repo, "mlp")
    x = np.random.default_rng(1).random((8, 64), dtype=np.float32) * 16
    one = OnnxModel(version, device="cpu")
    two = OnnxModel(
        version, device="cpu", settings=RunSettings(instances=2, graph_optimization="disable")
    )
    try:
        assert len(two.sessions) == 2
        want = one.run({"input": x}).outputs["probabilities"]
        got = await asyncio.gather(*(two.infer({"input": x[i : i + 1]}) for i in range(8)))
        rows = np.concatenate([p.outputs["probabilities"] for p in got])
        np.testing.assert_allclose(rows, want, rtol=1e-5, atol=1e-6)
    finally:
        one.close()
        two.close()


@pytest.mark.gpu
@gpu
def test_io_binding_on_cuda_matches_cpu(model_repo: Path) -> None:
    version = repository.load(model_repo, "mlp")
    x = np.random.default_rng(2).random((32, 64), dtype=np.float32) * 16
    bound = OnnxModel(version, device="cuda", settings=RunSettings(io_binding=True))
    cpu = OnnxModel(version, device="cpu")
    try:
        assert bound.provider == providers.CUDA
        np.testing.assert_allclose(
            bound.run({"input": x}).outputs["probabilities"],
            cpu.run({"input": x}).outputs["probabilities"],
            rtol=1e-4,
            atol=1e-5,
        )
    finally:
        bound.close()
        cpu.close()


def test_tensorrt_is_chosen_only_where_it_loads() -> None:
    chosen = providers.choose("auto", tensorrt=True)
    assert (providers.TENSORRT in chosen) == providers.tensorrt_usable()
    assert providers.choose("cpu", tensorrt=True) == [providers.CPU]


async def test_a_call_measured_short_runs_on_the_event_loop_and_a_slow_one_on_its_thread(
    model_repo: Path,
) -> None:
    import threading

    version = repository.load(model_repo, "logreg")
    x = np.random.default_rng(2).random((1, 64), dtype=np.float32) * 16
    where: list[str] = []
    fast = OnnxModel(version, device="cpu", settings=RunSettings(inline_below_ms=1000.0))
    never = OnnxModel(version, device="cpu", settings=RunSettings(inline_below_ms=0.0))
    try:
        for model in (fast, never):
            run = model._run_on

            def seen(session: object, inputs: dict[str, np.ndarray], run=run) -> object:  # type: ignore[no-untyped-def]
                where.append(threading.current_thread().name)
                return run(session, inputs)  # type: ignore[arg-type]

            model._run_on = seen  # type: ignore[method-assign]
        first = await fast.infer({"input": x})
        assert fast.run_ms is not None
        second = await fast.infer({"input": x})
        await never.infer({"input": x})
        await never.infer({"input": x})
        main = threading.current_thread().name
        # Not measured yet: a worker thread; measured under the bound: the loop's own thread.
        assert where[0] != main and where[1] == main
        assert where[2] != main and where[3] != main
        np.testing.assert_array_equal(
            first.outputs["probabilities"], second.outputs["probabilities"]
        )
    finally:
        fast.close()
        never.close()


async def test_a_call_on_a_worker_is_measured_by_its_own_cpu_not_its_wait_for_the_gil(
    model_repo: Path,
) -> None:
    """The event loop holding the GIL while a worker's call finishes stretches the call's wall
    time (it waits up to the 5 ms switch interval for the GIL back); were that the measure, a
    fast model would be measured slow and kept off the loop for good."""
    import threading
    import time

    version = repository.load(model_repo, "logreg")
    x = np.random.default_rng(3).random((1, 64), dtype=np.float32)
    model = OnnxModel(version, device="cpu", settings=RunSettings(inline_below_ms=1.0))
    go = threading.Event()
    run = model._run_on

    def after_go(session: object, inputs: dict[str, np.ndarray]) -> object:
        go.wait(5)  # so the call ends while the loop's thread holds the GIL
        return run(session, inputs)  # type: ignore[arg-type]

    try:
        await model.infer({"input": x})  # a worker thread's first call sets it up
        model._run_on = after_go  # type: ignore[method-assign]
        model.run_ms = None  # not measured: the next call goes to the worker too
        call = asyncio.ensure_future(model.infer({"input": x}))
        await asyncio.sleep(0.01)
        go.set()
        end = time.perf_counter() + 0.05
        while time.perf_counter() < end:
            pass
        prediction = await call
        assert prediction.compute_ms > 5.0, "the worker never waited"
        assert model.run_ms is not None and model.run_ms < 1.0
        assert model._inline()
    finally:
        model.close()
