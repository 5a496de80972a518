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

TENSORRT = "TensorrtExecutionProvider"
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


@cache
def tensorrt_usable() -> bool:
    """TensorRT's provider is listed by every onnxruntime-gpu wheel; its library is not."""
    if TENSORRT not in ort.get_available_providers() or not cuda_usable():
        return False
    for name in ("libnvinfer.so.10", "libnvinfer.so.8"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def choose(device: str, *, tensorrt: bool = False) -> list[str]:
    """Providers in order of preference for `device` ('auto', 'cpu' or 'cuda'); TensorRT
    first when the model asks for it and it really loads."""
    if device == "cpu":
        return [CPU]
    if device == "cuda" and not cuda_usable():
        raise RuntimeError("device=cuda was asked for, but CUDA is not usable on this host")
    if device == "cuda" or cuda_usable():
        return ([TENSORRT] if tensorrt and tensorrt_usable() else []) + [CUDA, CPU]
    return [CPU]
