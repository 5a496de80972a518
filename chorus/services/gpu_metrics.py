"""GPU memory and utilisation from NVML, scraped on demand, for services running on CUDA.

Read at scrape time rather than polled, so an idle service costs nothing and the numbers are
as fresh as Prometheus asks for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


class NvmlCollector(Collector):
    def __init__(self, model: str, device_index: int = 0) -> None:
        import pynvml

        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
        self.model = model
        self.device = str(device_index)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
        labels = ["model", "gpu"]
        used = GaugeMetricFamily(
            "chorus_model_gpu_memory_used_bytes", "GPU memory in use on the device", labels=labels
        )
        used.add_metric([self.model, self.device], float(mem.used))
        total = GaugeMetricFamily(
            "chorus_model_gpu_memory_total_bytes", "GPU memory on the device", labels=labels
        )
        total.add_metric([self.model, self.device], float(mem.total))
        busy = GaugeMetricFamily(
            "chorus_model_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy",
            labels=labels,
        )
        busy.add_metric([self.model, self.device], util.gpu / 100.0)
        yield from (used, total, busy)


def nvml_collector(model: str) -> NvmlCollector | None:
    """A collector when NVML answers (a GPU host), else None."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return NvmlCollector(model)
    except Exception as exc:
        log.debug("no NVML: %s", exc)
        return None
