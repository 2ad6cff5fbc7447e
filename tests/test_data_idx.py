"""The IDX reader: round trips, precise error messages, and fuzzing (only DatasetError)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profond.data.idx import idx_bytes, read_idx, read_idx_bytes, write_idx
from profond.errors import DatasetError

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 7
VALID_RAW = idx_bytes(VALID)
VALID_GZ = gzip.compress(VALID_RAW, mtime=0)
HEADER = 4 + 4 * VALID.ndim


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_dtype(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((5, 3, 2)) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a-idx3-ubyte{suffix}", a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype).newbyteorder("=") and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    assert b.flags.writeable and b.dtype.isnative


def test_header_layout_is_big_endian():
    a = np.array([[1, 256], [65535, -1]], dtype=np.int32)
    data = idx_bytes(a)
    assert data[:4] == bytes([0, 0, 0x0C, 2])
    assert struct.unpack(">II", data[4:12]) == (2, 2)
    assert struct.unpack(">4i", data[12:]) == (1, 256, 65535, -1)


def test_truncated_message_names_file_and_sizes(tmp_path):
    a = np.zeros((60, 28, 28), dtype=np.uint8)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(a)[: 16 + 1000]))
    with pytest.raises(DatasetError) as e:
        read_idx(path)
    assert str(e.value) == (
        f"{path}: truncated: header says 60x28x28 uint8 = 47040 bytes of data, file has 1000."
    )


@pytest.mark.parametrize(
    "data, needle",
    [
        (
            VALID_RAW + b"\x00",
            "trailing bytes: header says 2x3x4 uint8 = 24 bytes of data, file has 25",
        ),
        (b"\x01" + VALID_RAW[1:], "bad magic number"),
        (VALID_RAW[:2] + b"\x0a" + VALID_RAW[3:], "unknown IDX dtype code 0x0A"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (VALID_RAW[:9], "truncated header"),
        (b"\x00\x00", "too short"),
        (b"", "too short"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 5]), "dimension 0 has size 0"),
        (VALID_GZ[:-4], "truncated gzip"),
        (VALID_GZ[:20], "truncated gzip"),
        (VALID_GZ + b"garbage", "trailing bytes after the gzip stream"),
        (VALID_GZ[:-8] + b"\x00\x00\x00\x00" + VALID_GZ[-4:], "corrupt gzip"),  # CRC
    ],
)
def test_errors_name_the_problem(data, needle):
    with pytest.raises(DatasetError, match="^some/file: ") as e:
        read_idx_bytes(data, "some/file")
    assert needle in str(e.value)


def test_gz_name_without_gzip_content():
    with pytest.raises(DatasetError, match="not a gzip file"):
        read_idx_bytes(b"<html>Not found</html>", "x/t10k-labels-idx1-ubyte.gz")


def test_multi_member_gzip_is_read():
    half = len(VALID_RAW) // 2
    data = gzip.compress(VALID_RAW[:half]) + gzip.compress(VALID_RAW[half:])
    np.testing.assert_array_equal(read_idx_bytes(data, "f"), VALID)


def test_missing_file_is_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="nope.gz: cannot read"):
        read_idx(tmp_path / "nope.gz")


def test_write_rejects_unstorable_arrays(tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        idx_bytes(np.zeros(3, dtype=np.uint16))
    with pytest.raises(ValueError, match="shape"):
        idx_bytes(np.zeros((0, 3), dtype=np.uint8))


# -- fuzzing ---------------------------------------------------------------------------


def parse(data: bytes, name: str = "fuzz"):
    """read_idx_bytes, with every non-DatasetError exception failing the test."""
    try:
        return read_idx_bytes(data, name)
    except DatasetError:
        return None


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data):
    arr = parse(data)
    if arr is not None:  # accepted only if it is exactly an IDX serialisation
        assert idx_bytes(arr) == data


@FUZZ
@given(st.binary(max_size=64).map(lambda b: bytes([0, 0]) + b))
def test_fuzz_random_bytes_with_valid_magic(data):
    arr = parse(data)
    if arr is not None:
        assert idx_bytes(arr) == data


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_gzip_payload(tail):
    data = b"\x1f\x8b\x08\x00" + tail
    assert parse(data, "f.gz") is None or idx_bytes(parse(data, "f.gz")) == gzip.decompress(data)


@FUZZ
@given(st.data())
def test_fuzz_truncation_is_always_detected(draw):
    blob = draw.draw(st.sampled_from([VALID_RAW, VALID_GZ]))
    cut = draw.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(DatasetError):
        read_idx_bytes(blob[:cut], "f")


@FUZZ
@given(st.integers(0, len(VALID_RAW) * 8 - 1))
def test_fuzz_bit_flip_raw(bit):
    data = bytearray(VALID_RAW)
    data[bit // 8] ^= 1 << (bit % 8)
    arr = parse(bytes(data))
    if bit // 8 < HEADER:
        # A flipped header either fails or describes exactly the bytes that are there.
        assert arr is None or idx_bytes(arr) == bytes(data)
    else:
        # Header intact: same shape and dtype, only the flipped element differs.
        assert arr is not None and arr.shape == VALID.shape and arr.dtype == VALID.dtype
        diff = np.flatnonzero(arr != VALID)
        assert diff.tolist() == [bit // 8 - HEADER]


@FUZZ
@given(st.lists(st.integers(0, len(VALID_GZ) * 8 - 1), min_size=1, max_size=3))
def test_fuzz_bit_flips_gzip_never_silently_wrong(bits):
    data = bytearray(VALID_GZ)
    for bit in bits:
        data[bit // 8] ^= 1 << (bit % 8)
    arr = parse(bytes(data), "f.gz")
    # CRC-32 and length checks: either an error or (flip in mtime/OS/flags) the original.
    assert arr is None or (arr.shape == VALID.shape and np.array_equal(arr, VALID))
