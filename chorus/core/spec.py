"""Tensor specs (name, datatype, shape with -1 for any size) and the check against them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from chorus.core.codec import numpy_dtype
from chorus.core.errors import InvalidArgument


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), str(d["datatype"]), tuple(int(x) for x in d["shape"]))


def check_tensor(spec: TensorSpec, array: np.ndarray, *, field: str) -> None:
    want = numpy_dtype(spec.datatype)
    if array.dtype != want:
        got = array.dtype.name
        raise InvalidArgument(
            f"{field}: expected datatype {spec.datatype} ({want.name}), got {got}"
        )
    if len(array.shape) != len(spec.shape) or any(
        w != -1 and w != g for w, g in zip(spec.shape, array.shape, strict=True)
    ):
        raise InvalidArgument(
            f"{field}: expected shape {list(spec.shape)} (-1 = any), got {list(array.shape)}"
        )
    if array.size == 0:
        raise InvalidArgument(
            f"{field}: empty tensor (shape {list(array.shape)}); send at least one row"
        )
    if array.dtype.kind == "O":
        # BYTES: ONNX Runtime would silently turn anything else into its repr.
        for i, v in enumerate(array.flat):
            if not isinstance(v, str):
                raise InvalidArgument(
                    f"{field}: {spec.datatype} elements must be str, "
                    f"element {i} is {type(v).__name__}"
                )
