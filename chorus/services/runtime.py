"""ONNX Runtime sessions for one model version and the checks that keep bad input away.

Each instance is a session with a thread of its own, so the event loop never blocks and
several requests (or batches) compute at once where cores or a GPU allow; ONNX Runtime
releases the GIL while it computes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from chorus.core.codec import numpy_dtype
from chorus.core.config import ModelServiceConfig
from chorus.core.errors import InvalidArgument
from chorus.core.spec import check_tensor
from chorus.services import providers
from chorus.services.repository import ModelVersion, RuntimeOptions

log = logging.getLogger(__name__)

_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_EXECUTION = {
    "sequential": ort.ExecutionMode.ORT_SEQUENTIAL,
    "parallel": ort.ExecutionMode.ORT_PARALLEL,
}


@dataclass(frozen=True)
class Prediction:
    outputs: dict[str, np.ndarray]
    compute_ms: float


@dataclass(frozen=True)
class RunSettings:
    """What one loaded version runs with: the service's explicit settings over the
    manifest's `runtime` options over defaults that suit a small CPU host."""

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    instances: int = 1
    max_batch: int = 1
    max_batch_delay_ms: float = 2.0
    graph_optimization: str = "all"
    execution_mode: str = "sequential"
    warmup: bool = True
    tensorrt: bool = False
    io_binding: bool = True
    inline_below_ms: float = ModelServiceConfig.inline_below_ms
    """ONNX Runtime calls measured shorter than this run on the event loop (0: never)."""

    @classmethod
    def resolve(cls, manifest: RuntimeOptions, config: ModelServiceConfig) -> RunSettings:
        def pick(service: float, model: float, default: float) -> float:
            return service or model or default

        d = cls()
        return cls(
            intra_op_threads=int(
                pick(config.intra_op_threads, manifest.intra_op_threads, d.intra_op_threads)
            ),
            inter_op_threads=manifest.inter_op_threads or d.inter_op_threads,
            instances=int(pick(config.instances, manifest.instances, d.instances)),
            max_batch=int(pick(config.max_batch, manifest.max_batch, d.max_batch)),
            max_batch_delay_ms=pick(
                config.max_batch_delay_ms, manifest.max_batch_delay_ms, d.max_batch_delay_ms
            ),
            graph_optimization=manifest.graph_optimization,
            execution_mode=manifest.execution_mode,
            warmup=manifest.warmup,
            tensorrt=manifest.tensorrt,
            io_binding=manifest.io_binding,
            inline_below_ms=config.inline_below_ms,
        )


RUN_EWMA_WEIGHT = 0.1
"""The newest call's share of `run_ms`: a few dozen calls count, so one slow call does not move
a fast model off the event loop, nor a fast one a slow model onto it."""


class OnnxModel:
    def __init__(
        self,
        model: ModelVersion,
        *,
        device: str = "auto",
        settings: RunSettings | None = None,
        delay_s: float = 0.0,
        noise: float = 0.0,
    ) -> None:
        self.model = model
        self.settings = settings or RunSettings()
        self.delay_s = delay_s
        self.noise = noise
        self._rng = np.random.default_rng(0)
        self.manifest = model.manifest
        chosen = providers.choose(device, tensorrt=self.settings.tensorrt)
        self.sessions = [self._session(chosen) for _ in range(self.settings.instances)]
        self.provider = self.sessions[0].get_providers()[0]
        self._bind = self.settings.io_binding and self.provider != providers.CPU
        self._output_names = [o.name for o in self.manifest.outputs]
        self._pools = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{self.manifest.name}-{i}")
            for i in range(len(self.sessions))
        ]
        self._busy = [0] * len(self.sessions)
        self._closed = False
        s = self.settings
        self._computes_here = (
            self.provider == providers.CPU
            and s.intra_op_threads == 1
            and s.execution_mode == "sequential"
        )
        """Whether a call computes on the thread that makes it (no ONNX Runtime pool)."""
        self.run_ms: float | None = None
        """Smoothed time one ONNX Runtime call holds its thread (None until one is measured)."""
        if self.settings.warmup:
            self.warm_up()
        log.info(
            "model %s v%s loaded on %s: %d instance(s), optimisation %s",
            self.manifest.name,
            self.manifest.version,
            self.provider,
            len(self.sessions),
            self.settings.graph_optimization,
        )

    def _session(self, chosen: list[str]) -> ort.InferenceSession:
        s = self.settings
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = s.intra_op_threads
        opts.inter_op_num_threads = s.inter_op_threads
        opts.graph_optimization_level = _OPTIMIZATION[s.graph_optimization]
        opts.execution_mode = _EXECUTION[s.execution_mode]
        return ort.InferenceSession(str(self.model.onnx_path), sess_options=opts, providers=chosen)

    @property
    def device(self) -> str:
        return "cpu" if self.provider == providers.CPU else "cuda"

    def warm_up(self) -> None:
        """One call per instance at one row and at the largest batch, before any traffic."""
        if any(spec.datatype == "BYTES" for spec in self.manifest.inputs):
            return  # text models take strings: zeros are no valid input for them
        for rows in sorted({1, max(1, self.settings.max_batch)}):
            inputs = {
                spec.name: np.zeros(
                    [rows if d < 0 else d for d in spec.shape],
                    dtype=numpy_dtype(spec.datatype, field=f"inputs[{spec.name!r}]"),
                )
                for spec in self.manifest.inputs
            }
            for session in self.sessions:
                self._run_on(session, inputs)

    def validate(self, inputs: dict[str, np.ndarray]) -> None:
        """Raise InvalidArgument naming the field, the expected and the received value."""
        expected = {s.name: s for s in self.manifest.inputs}
        missing = sorted(set(expected) - set(inputs))
        extra = sorted(set(inputs) - set(expected))
        if missing or extra:
            raise InvalidArgument(
                f"inputs: model {self.manifest.name!r} takes {sorted(expected)}, "
                f"got {sorted(inputs)}"
                + (f" (missing {missing})" if missing else "")
                + (f" (unexpected {extra})" if extra else "")
            )
        for name, array in inputs.items():
            check_tensor(expected[name], array, field=f"inputs[{name!r}]")

    def run(self, inputs: dict[str, np.ndarray], instance: int = 0) -> Prediction:
        return self._measured(inputs, instance)[0]

    def _measured(
        self, inputs: dict[str, np.ndarray], instance: int = 0
    ) -> tuple[Prediction, float]:
        """The prediction, and how long the call held the thread that made it. On a worker
        thread the wall time includes waiting for the GIL back from the event loop (up to the
        5 ms switch interval), which once kept the demo's members measured at 0.4 ms and off
        the loop for good though each call computes in 0.05. A CPU session with one intra-op
        thread, run sequentially, computes on the calling thread, so that thread's CPU time is
        the cost."""
        if self.noise:
            inputs = {k: self._degrade(v) for k, v in inputs.items()}
        start, cpu = time.perf_counter(), time.thread_time()
        outputs = self._run_on(self.sessions[instance], inputs)
        wall_ms = (time.perf_counter() - start) * 1000
        held_ms = (time.thread_time() - cpu) * 1000 if self._computes_here else wall_ms
        return Prediction(outputs, wall_ms), held_ms

    def _run_on(
        self, session: ort.InferenceSession, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        if not self._bind:
            values = session.run(self._output_names, inputs)
            return dict(zip(self._output_names, values, strict=True))
        binding = session.io_binding()
        for name, array in inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in self._output_names:
            binding.bind_output(name, "cuda")
        session.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    async def infer(self, inputs: dict[str, np.ndarray], *, checked: bool = False) -> Prediction:
        """`checked`: the caller validated these inputs already (a batch of checked requests)."""
        if not checked:
            self.validate(inputs)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self._inline():
            prediction, ms = self._measured(inputs)
        else:
            instance = self._busy.index(min(self._busy))
            self._busy[instance] += 1
            try:
                loop = asyncio.get_running_loop()
                prediction, ms = await loop.run_in_executor(
                    self._pools[instance], self._measured, inputs, instance
                )
            finally:
                self._busy[instance] -= 1
        old = self.run_ms
        self.run_ms = ms if old is None else (1 - RUN_EWMA_WEIGHT) * old + RUN_EWMA_WEIGHT * ms
        return prediction

    def _inline(self) -> bool:
        """Whether this call runs on the event loop: a call measured to take less than handing
        it to a worker thread and back costs, while none is running on a worker. A model not
        yet measured, or slow, keeps to its threads."""
        below = self.settings.inline_below_ms
        return below > 0 and self.run_ms is not None and self.run_ms < below and not any(self._busy)

    def _degrade(self, x: np.ndarray) -> np.ndarray:
        if x.dtype.kind != "f":
            return x
        return (x + self._rng.normal(0.0, self.noise, x.shape)).astype(x.dtype)

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)
