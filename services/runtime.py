"""One ONNX Runtime session and the checks that keep bad input away from it.

Inference runs on a small thread pool of its own so the event loop never blocks; ONNX
Runtime releases the GIL while it computes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from chorus.errors import InvalidArgument
from chorus.spec import check_tensor
from services import providers
from services.repository import ModelVersion

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    outputs: dict[str, np.ndarray]
    compute_ms: float


class OnnxModel:
    def __init__(
        self,
        model: ModelVersion,
        *,
        device: str = "auto",
        intra_op_threads: int = 1,
        workers: int = 1,
        delay_s: float = 0.0,
        noise: float = 0.0,
    ) -> None:
        self.model = model
        self.delay_s = delay_s
        self.noise = noise
        self._rng = np.random.default_rng(0)
        self.manifest = model.manifest
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(model.onnx_path), sess_options=opts, providers=providers.choose(device)
        )
        self.provider = self.session.get_providers()[0]
        self._output_names = [o.name for o in self.manifest.outputs]
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"ort-{self.manifest.name}"
        )
        log.info(
            "model %s v%s loaded on %s",
            self.manifest.name,
            self.manifest.version,
            self.provider,
        )

    @property
    def device(self) -> str:
        return "cuda" if self.provider == providers.CUDA else "cpu"

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

    def run(self, inputs: dict[str, np.ndarray]) -> Prediction:
        if self.noise:
            inputs = {k: self._degrade(v) for k, v in inputs.items()}
        start = time.perf_counter()
        values = self.session.run(self._output_names, inputs)
        outputs = dict(zip(self._output_names, values, strict=True))
        return Prediction(outputs, (time.perf_counter() - start) * 1000)

    async def infer(self, inputs: dict[str, np.ndarray]) -> Prediction:
        self.validate(inputs)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.run, inputs)

    def _degrade(self, x: np.ndarray) -> np.ndarray:
        if x.dtype.kind != "f":
            return x
        return (x + self._rng.normal(0.0, self.noise, x.shape)).astype(x.dtype)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
