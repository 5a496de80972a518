"""The Ray Serve baselines as bench paths: Ray in its own interpreter (ray_serve.py), steered
over its stdin, its processes charged by their Ray names."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil

from chorus.launch.natsserver import free_port

if TYPE_CHECKING:
    pass

from chorus.bench.paths import TIMEOUT_S, Phase, Workload

RAY_SCRIPT = Path(__file__).with_name("ray_serve.py")


RAY_LAYOUTS = {"ray": "graph", "ray-single": "single"}
"""Bench path -> ray_serve.py layout: Ray's composition graph, and its one-deployment best case."""


class RayPath:
    """Ray Serve in its own interpreter (see ray_serve.py), steered over its stdin."""

    def __init__(
        self, python: Path, workload: Workload, scratch: Path, name: str, max_ongoing: int
    ) -> None:
        """`max_ongoing` is every deployment's max_ongoing_requests: set it above the
        callers' concurrency."""
        self.name = name
        self.max_ongoing = max_ongoing
        inputs = scratch / "rows.npy"
        np.save(inputs, np.concatenate(workload.rows))
        self.log = scratch / f"{name}.log"
        models = [str(workload.onnx_path(m)) for m in workload.members]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [str(python), str(RAY_SCRIPT), "--models", *models,
                 "--inputs", str(inputs), "--port", str(free_port()),
                 "--layout", RAY_LAYOUTS[name], "--max-ongoing", str(max_ongoing)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.info = json.loads(self._expect("READY", 300.0) or "{}")
        except BaseException:
            self.close()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _expect(self, word: str, timeout_s: float, phase: Phase | None = None) -> str:
        """The rest of the next line that starts with `word`; other lines are Ray's chatter."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"Ray Serve did not answer {word} in {timeout_s}s") from None
            if line is None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Ray Serve exited ({self.log}):\n{tail}")
            head, _, rest = line.partition(" ")
            if head == word:
                return rest
            if head == "TICK" and phase is not None:
                phase.reported = int(rest)

    def _send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def warm(self, n: int) -> None:
        self._send(f"WARM {n}")
        self._expect("OK", 120.0)

    def drive(self, concurrency: int, requests: int, phase: Phase) -> None:
        self._send(f"DRIVE {concurrency} {requests}")
        done = json.loads(self._expect("DONE", 60.0 + requests * TIMEOUT_S, phase))
        phase.latencies_s, phase.elapsed_s = done["latencies_s"], done["elapsed_s"]

    def clients(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid)]

    def services(self) -> list[tuple[str, psutil.Process]] | None:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [(_ray_name(p), p) for p in children]

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self._send("STOP")
            assert self.proc.stdin is not None
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _ray_name(proc: psutil.Process) -> str:
    """Ray retitles its workers `ray::Deployment...`; the title is the useful name."""
    try:
        title = " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "ray"
    if title.startswith("ray::"):
        return title.split()[0].split(".")[0].split(":")[-1] or "ray"
    return proc.name()
