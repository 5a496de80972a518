"""Tensor codec: numpy arrays <-> (KServe v2 datatype, shape, little-endian bytes).

Decoding a numeric tensor returns a read-only view over the received bytes; nothing is copied
unless the array must be made contiguous or little-endian for the wire.

BYTES tensors (strings) take a separate path: on the wire each element is a 4-byte
little-endian uint32 length followed by that many bytes, elements in C order (KServe v2 raw
BYTES). They encode from numpy object arrays of str or bytes (str as UTF-8) and from
numpy str ('<U') or bytes ('S') arrays, and decode to a read-only object array of str.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from chorus.core.errors import InvalidArgument
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

# Fixed-width numeric datatypes (each has a numpy dtype of its own).
DATATYPES: tuple[str, ...] = tuple(_TO_NUMPY)
# Variable-length strings; numpy holds them as dtype object.
BYTES = "BYTES"
BYTES_DTYPE = np.dtype(object)
_STRING_KINDS = "OUS"  # object, str ('<U'), bytes ('S')
_LENGTH = struct.Struct("<I")


def numpy_dtype(datatype: str, *, field: str = "datatype") -> np.dtype:
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        if datatype == BYTES:
            return BYTES_DTYPE
        raise InvalidArgument(
            f"{field}: unknown datatype {datatype!r}; "
            f"expected one of {', '.join(DATATYPES)}, {BYTES}"
        ) from None


def datatype_of(array: np.ndarray) -> str:
    dt = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
    try:
        return _FROM_NUMPY[dt]
    except KeyError:
        if array.dtype.kind in _STRING_KINDS:
            _check_strings(array)
            return BYTES
        raise InvalidArgument(f"dtype {array.dtype} has no KServe v2 datatype") from None


def _check_strings(array: np.ndarray) -> None:
    """Object arrays are BYTES only when every element is str or bytes."""
    if array.dtype.kind != "O":
        return
    for i, v in enumerate(array.flat):
        if not isinstance(v, str | bytes):
            raise InvalidArgument(
                f"dtype object has no KServe v2 datatype unless every element is str or "
                f"bytes; element {i} is {type(v).__name__}"
            )


def to_bytes(array: np.ndarray) -> bytes:
    """Little-endian C-order bytes of `array` (length-prefixed elements for strings)."""
    if array.dtype.kind in _STRING_KINDS:
        return _encode_strings(array)
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
    count = math.prod(dims)
    if dtype is BYTES_DTYPE:
        return _decode_strings(raw, dims, count, field)
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


def _encode_strings(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for i, v in enumerate(np.asarray(array).flat):  # .flat walks C order whatever the layout
        if isinstance(v, str):
            data = v.encode("utf-8")
        elif isinstance(v, bytes):
            data = v
        else:
            raise InvalidArgument(f"BYTES element {i} must be str or bytes, got {type(v).__name__}")
        if len(data) > 0xFFFFFFFF:
            raise InvalidArgument(f"BYTES element {i} is {len(data)} bytes; at most 2**32 - 1")
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def _decode_strings(raw: bytes, dims: tuple[int, ...], count: int, field: str) -> np.ndarray:
    view = memoryview(raw)
    total = len(view)
    if 4 * count > total:  # before allocating: a small message must not claim a huge shape
        raise InvalidArgument(
            f"{field}: shape {list(dims)} of BYTES needs {count} elements of at least 4 bytes "
            f"(the length prefix), got {total} bytes"
        )
    out = np.empty(count, dtype=BYTES_DTYPE)
    pos = 0
    for i in range(count):
        if pos + 4 > total:
            raise InvalidArgument(
                f"{field}: shape {list(dims)} of BYTES has {count} elements, but the "
                f"length prefix of element {i} is truncated at byte {pos} of {total}"
            )
        (size,) = _LENGTH.unpack_from(view, pos)
        pos += 4
        if pos + size > total:
            raise InvalidArgument(
                f"{field}: BYTES element {i} declares {size} bytes at byte {pos}, "
                f"only {total - pos} remain"
            )
        try:
            out[i] = str(view[pos : pos + size], "utf-8")
        except UnicodeDecodeError as err:
            raise InvalidArgument(
                f"{field}: BYTES element {i} is not valid UTF-8 ({err.reason} at byte "
                f"{pos + err.start})"
            ) from None
        pos += size
    if pos != total:
        raise InvalidArgument(
            f"{field}: shape {list(dims)} of BYTES holds {count} elements in {pos} bytes, "
            f"got {total - pos} trailing bytes"
        )
    out = out.reshape(dims)
    out.flags.writeable = False
    return out
