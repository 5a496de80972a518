import numpy as np
import pytest

from chorus.core.codec import DATATYPES, from_bytes, from_tensor, numpy_dtype, to_bytes, to_tensor
from chorus.core.errors import InvalidArgument


@pytest.mark.parametrize("datatype", DATATYPES)
def test_round_trip_every_datatype(datatype: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((3, 4)) * 100).astype(numpy_dtype(datatype))
    back = from_tensor(to_tensor("x", array))
    assert back.dtype == array.dtype
    assert back.shape == (3, 4)
    np.testing.assert_array_equal(back, array)


def test_big_endian_input_travels_little_endian() -> None:
    array = np.arange(6, dtype=">f4").reshape(2, 3)
    raw = to_bytes(array)
    assert raw == np.arange(6, dtype="<f4").tobytes()
    np.testing.assert_array_equal(from_bytes(raw, "FP32", [2, 3]), array)


def test_decoded_array_is_a_view_not_a_copy() -> None:
    raw = np.arange(4, dtype="<i8").tobytes()
    array = from_bytes(raw, "INT64", [4])
    assert not array.flags.writeable
    assert array.base is not None


def test_byte_count_mismatch_names_field_and_sizes() -> None:
    with pytest.raises(
        InvalidArgument, match=r"inputs\['x'\]: shape \[2, 3\] of FP32 needs 24 bytes, got 20"
    ):
        from_bytes(b"\0" * 20, "FP32", [2, 3], field="inputs['x']")


def test_unknown_datatype_lists_known_ones() -> None:
    with pytest.raises(InvalidArgument, match=r"unknown datatype 'FP8'.*FP32"):
        from_bytes(b"", "FP8", [0])


def test_negative_dimension_rejected() -> None:
    with pytest.raises(InvalidArgument, match="dimensions must be >= 0"):
        from_bytes(b"", "FP32", [-1, 64])


def test_non_string_object_arrays_have_no_datatype() -> None:
    with pytest.raises(InvalidArgument, match="no KServe v2 datatype"):
        to_tensor("x", np.array([1], dtype=object))
