"""Tensor codec: numpy arrays <-> (KServe v2 datatype, shape, little-endian bytes).

Decoding returns a read-only view over the received bytes; nothing is copied unless the
array must be made contiguous or little-endian for the wire.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chorus.errors import InvalidArgument
from chorus.pb import tensor_pb2

_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_FROM_NUMPY: dict[np.dtype, str] = {dt.newbyteorder("<"): name for name, dt in _TO_NUMPY.items()}

DATATYPES: tuple[str, ...] = tuple(_TO_NUMPY)


def numpy_dtype(datatype: str, *, field: str = "datatype") -> np.dtype:
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise InvalidArgument(
            f"{field}: unknown datatype {datatype!r}; expected one of {', '.join(DATATYPES)}"
        ) from None


def datatype_of(array: np.ndarray) -> str:
    dt = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        raise InvalidArgument(f"dtype {array.dtype} has no KServe v2 datatype") from None


def to_bytes(array: np.ndarray) -> bytes:
    """Little-endian C-order bytes of `array`."""
    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr.tobytes()


def from_bytes(
    raw: bytes, datatype: str, shape: Sequence[int], *, field: str = "tensor"
) -> np.ndarray:
    """Read-only array over `raw`; raises InvalidArgument naming `field` when they disagree."""
    dtype = numpy_dtype(datatype, field=f"{field}.datatype")
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"{field}.shape: dimensions must be >= 0, got {list(dims)}")
    count = int(np.prod(dims, dtype=np.int64)) if dims else 1
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"{field}: shape {list(dims)} of {datatype} needs {expected} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def to_tensor(name: str, array: np.ndarray) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(
        name=name, datatype=datatype_of(array), shape=array.shape, raw=to_bytes(array)
    )


def from_tensor(tensor: tensor_pb2.Tensor, *, field: str | None = None) -> np.ndarray:
    return from_bytes(
        tensor.raw,
        tensor.datatype,
        tensor.shape,
        field=field or f"inputs[{tensor.name!r}]",
    )
