"""BYTES tensors: KServe v2 raw layout (uint32 little-endian length, then the bytes)."""

import struct

import numpy as np
import pytest

from chorus.core.codec import datatype_of, from_bytes, from_tensor, numpy_dtype, to_bytes, to_tensor
from chorus.core.errors import InvalidArgument
from chorus.core.spec import TensorSpec, check_tensor


def _wire(*elements: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def test_numpy_dtype_of_bytes_is_object() -> None:
    assert numpy_dtype("BYTES") == np.dtype(object)


def test_wire_layout_is_length_prefixed_utf8_in_c_order() -> None:
    array = np.array([["ab", "é"], ["", "seven"]], dtype=object)
    assert to_bytes(array) == _wire(b"ab", "é".encode(), b"", b"seven")
    # A Fortran-ordered copy travels in C order all the same.
    assert to_bytes(np.asfortranarray(array)) == to_bytes(array)
    assert to_bytes(array.T) == _wire(b"ab", b"", "é".encode(), b"seven")


@pytest.mark.parametrize(
    "array",
    [
        np.array([["a handwritten seven"], ["looks like 7"]], dtype=object),
        np.array(["zéro", "ein€", "数字", ""], dtype=object),
        np.array([["the number seven, i think"], ["nine"]]),  # numpy '<U'
        np.array(["seven", "eight"], dtype="S"),
        np.array([b"raw", "text"], dtype=object),
        np.array("scalar", dtype=object),
        np.empty((0, 1), dtype=object),
    ],
    ids=["object-str", "utf8", "unicode", "numpy-bytes", "mixed", "0-d", "empty"],
)
def test_round_trip(array: np.ndarray) -> None:
    tensor = to_tensor("caption", array)
    assert tensor.datatype == "BYTES"
    assert list(tensor.shape) == list(array.shape)
    back = from_tensor(tensor)
    assert back.dtype == np.dtype(object)
    assert back.shape == array.shape
    assert all(type(v) is str for v in back.flat)
    want = [v.decode() if isinstance(v, bytes) else str(v) for v in array.flat]
    assert list(back.flat) == want


def test_datatype_of_string_arrays() -> None:
    assert datatype_of(np.array(["a"], dtype=object)) == "BYTES"
    assert datatype_of(np.array(["a"])) == "BYTES"
    assert datatype_of(np.array(["a"]).astype(">U1")) == "BYTES"
    assert datatype_of(np.array([b"a"])) == "BYTES"


def test_decoded_bytes_are_read_only() -> None:
    back = from_bytes(_wire(b"x", b"y"), "BYTES", [2, 1])
    assert not back.flags.writeable
    assert back.tolist() == [["x"], ["y"]]


@pytest.mark.parametrize("bad", [np.array([1, "a"], dtype=object), np.array([None], dtype=object)])
def test_object_arrays_of_other_things_have_no_datatype(bad: np.ndarray) -> None:
    with pytest.raises(InvalidArgument, match=r"no KServe v2 datatype.*element 0"):
        to_tensor("x", bad)
    with pytest.raises(InvalidArgument, match="must be str or bytes"):
        to_bytes(bad)


def test_unknown_datatype_lists_bytes() -> None:
    with pytest.raises(InvalidArgument, match=r"unknown datatype 'STRING'.*BYTES"):
        numpy_dtype("STRING")


@pytest.mark.parametrize(
    ("raw", "shape", "message"),
    [
        (b"\x02\x00", [1], r"needs 1 elements of at least 4 bytes \(the length prefix\), got 2"),
        (_wire(b"abcd") + b"\x01", [2], r"length prefix of element 1 is truncated at byte 8 of 9"),
        (_wire(b"ab"), [2, 1], r"shape \[2, 1\] of BYTES needs 2 elements.*got 6 bytes"),
        (b"", [1], r"needs 1 elements of at least 4 bytes"),
        (b"", [10**12], r"needs 1000000000000 elements"),
        (struct.pack("<I", 5) + b"abc", [1], r"element 0 declares 5 bytes at byte 4, only 3"),
        (_wire(b"ab", b"cd"), [1], r"holds 1 elements in 6 bytes, got 6 trailing bytes"),
        (_wire(b"ab") + b"\x00", [1], r"got 1 trailing bytes"),
        (b"\x00", [0], r"shape \[0\] of BYTES holds 0 elements in 0 bytes, got 1 trailing"),
        (_wire(b"ok", b"\xff\xfe"), [2], r"element 1 is not valid UTF-8 .*at byte 10"),
    ],
    ids=[
        "short-prefix",
        "prefix-cut",
        "too-few",
        "empty",
        "huge-shape",
        "short-data",
        "too-many",
        "trailing",
        "trailing-empty",
        "utf8",
    ],
)
def test_bad_layout_names_the_field(raw: bytes, shape: list[int], message: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^inputs\['caption'\]: .*" + message):
        from_bytes(raw, "BYTES", shape, field="inputs['caption']")


def test_bad_tensor_names_the_input() -> None:
    tensor = to_tensor("caption", np.array([["seven"]], dtype=object))
    tensor.raw = tensor.raw[:-1]
    with pytest.raises(InvalidArgument, match=r"^inputs\['caption'\]: BYTES element 0"):
        from_tensor(tensor)


def test_negative_dimension_rejected_for_bytes() -> None:
    with pytest.raises(InvalidArgument, match="dimensions must be >= 0"):
        from_bytes(b"", "BYTES", [-1, 1])


def test_bytes_spec_accepts_decoded_strings_only() -> None:
    spec = TensorSpec("caption", "BYTES", (-1, 1))
    check_tensor(spec, from_bytes(_wire(b"seven"), "BYTES", [1, 1]), field="c")
    with pytest.raises(InvalidArgument, match=r"c: expected datatype BYTES \(object\)"):
        check_tensor(spec, np.array([["seven"]]), field="c")
    with pytest.raises(InvalidArgument, match="c: BYTES elements must be str, element 1 is int"):
        check_tensor(spec, np.array([["seven"], [7]], dtype=object), field="c")
    with pytest.raises(InvalidArgument, match=r"c: expected shape \[-1, 1\]"):
        check_tensor(spec, np.array(["seven"], dtype=object), field="c")
    with pytest.raises(InvalidArgument, match=r"c: expected datatype FP32"):
        check_tensor(TensorSpec("x", "FP32", (-1,)), np.array(["1"], dtype=object), field="c")
