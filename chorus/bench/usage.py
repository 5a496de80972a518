"""CPU and GPU use over one measured phase."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any, Self

import psutil


class Gpus:
    """NVML handles, opened once per run so each phase costs only the readings."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml = nvml
        self._handles = handles

    @classmethod
    def open(cls) -> Gpus | None:
        """None where no NVIDIA driver answers: then GPU use is recorded as null, not 0."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError:
            return None
        try:
            count = pynvml.nvmlDeviceGetCount()
            if count:
                return cls(pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)])
        except pynvml.NVMLError:
            pass
        pynvml.nvmlShutdown()
        return None

    def names(self) -> list[str]:
        return [str(self._nvml.nvmlDeviceGetName(h)) for h in self._handles]

    def sample(self) -> list[tuple[int, float]]:
        """Per device: utilisation % over the driver's last sampling window, and MiB in use."""
        return [
            (
                int(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                self._nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20,
            )
            for h in self._handles
        ]

    def close(self) -> None:
        self._nvml.nvmlShutdown()


def gpu_names() -> list[str]:
    gpus = Gpus.open()
    if gpus is None:
        return []
    try:
        return gpus.names()
    finally:
        gpus.close()


def cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds `proc` has used so far."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def _cpu_s(proc: psutil.Process) -> float | None:
    try:
        return cpu_seconds(proc)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


class Sampler:
    """CPU and GPU use while a phase runs.

    The machine's CPU % and the processes' CPU seconds come from the kernel's running counters,
    read at both ends, so they are exact however short the phase. GPU utilisation is only ever
    a recent reading, so a thread polls it through the phase.
    """

    def __init__(
        self,
        clients: list[psutil.Process],
        services: list[tuple[str, psutil.Process]] | None,
        gpus: Gpus | None,
        every_s: float = 0.1,
    ) -> None:
        """`services` is None for a path without separate serving processes (bare ORT)."""
        self.clients = clients
        self.services = services
        self.gpus = gpus
        self.every_s = every_s
        self.result: dict[str, Any] = {}
        self._start: dict[int, float | None] = {}
        self._gpu_samples: list[list[tuple[int, float]]] = []
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def _all(self) -> list[psutil.Process]:
        return [*self.clients, *(p for _, p in self.services or [])]

    def _poll_gpus(self) -> None:
        assert self.gpus is not None
        while True:
            self._gpu_samples.append(self.gpus.sample())
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> Self:
        psutil.cpu_percent(interval=None)
        self._start = {p.pid: _cpu_s(p) for p in self._all()}
        if self.gpus is not None:
            self._poller = threading.Thread(target=self._poll_gpus, daemon=True)
            self._poller.start()
        return self

    def _spent(self, proc: psutil.Process) -> float | None:
        start, end = self._start.get(proc.pid), _cpu_s(proc)
        return None if start is None or end is None else end - start

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        machine = psutil.cpu_percent(interval=None)
        client = [s for s in map(self._spent, self.clients) if s is not None]
        cpu: dict[str, Any] = {
            "machine_percent": round(machine, 1),
            "client_s": round(sum(client), 3) if client else None,
            "services_s": None,
            "per_service_s": None,
        }
        if self.services is not None:
            per: dict[str, float] = {}
            for name, proc in self.services:
                spent = self._spent(proc)
                if spent is not None:
                    per[name] = per.get(name, 0.0) + spent
            if per:
                cpu["services_s"] = round(sum(per.values()), 3)
                cpu["per_service_s"] = {k: round(v, 3) for k, v in sorted(per.items())}
        self.result = {"cpu": cpu, "gpu": self._gpu_result()}

    def _gpu_result(self) -> dict[str, Any] | None:
        if self.gpus is None or self._poller is None:
            return None
        self._stop.set()
        self._poller.join()
        self._gpu_samples.append(self.gpus.sample())
        util = [u for sample in self._gpu_samples for u, _ in sample]
        memory = [m for sample in self._gpu_samples for _, m in sample]
        return {
            "devices": len(self._gpu_samples[0]),
            "samples": len(self._gpu_samples),
            "util_percent_mean": round(sum(util) / len(util), 1),
            "util_percent_max": max(util),
            "memory_used_mib_max": round(max(memory), 1),
        }
