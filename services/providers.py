"""Which ONNX Runtime execution provider this host can really use.

onnxruntime-gpu lists CUDAExecutionProvider even where no GPU or CUDA libraries exist, and a
session asked for it there logs a loud error before falling back. So the choice comes from a
probe: the CUDA driver must load, and the provider's libraries must preload.
"""

from __future__ import annotations

import ctypes
import logging
from functools import cache

import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@cache
def cuda_usable() -> bool:
    if CUDA not in ort.get_available_providers():
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        try:
            preload()
        except Exception as exc:
            log.info("CUDA driver found but its libraries did not load: %s", exc)
            return False
    return True


def choose(device: str) -> list[str]:
    """Providers in order of preference for `device` ('auto', 'cpu' or 'cuda')."""
    if device == "cpu":
        return [CPU]
    if device == "cuda" and not cuda_usable():
        raise RuntimeError("device=cuda was asked for, but CUDA is not usable on this host")
    if device == "cuda" or cuda_usable():
        return [CUDA, CPU]
    return [CPU]
