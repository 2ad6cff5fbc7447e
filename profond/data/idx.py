"""Reader and writer for the IDX format of MNIST and Fashion-MNIST.

An IDX file is a tiny header followed by a dense big-endian array::

    byte 0-1   0x00 0x00          magic: always zero
    byte 2     dtype code          0x08 uint8, 0x09 int8, 0x0B int16,
                                   0x0C int32, 0x0D float32, 0x0E float64
    byte 3     ndim                number of dimensions (>= 1)
    4*ndim     sizes               one big-endian uint32 per dimension
    ...        data                prod(sizes) * itemsize bytes, row-major, big-endian

The distributed files are gzip-compressed (``*.gz``); :func:`read_idx` decompresses them
when the content starts with the gzip magic ``1f 8b``, whatever the file name says.

The reader is strict: a bad magic, an unknown dtype code, a zero dimension, a truncated
or over-long file and a corrupt gzip stream all raise :class:`~profond.errors.DatasetError`
naming the file and the problem. A corrupt data file must never reach training as a
silently wrong array.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError

#: IDX dtype code -> big-endian numpy dtype
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_DTYPE_NAMES = {
    0x08: "uint8",
    0x09: "int8",
    0x0B: "int16",
    0x0C: "int32",
    0x0D: "float32",
    0x0E: "float64",
}
_CODE_OF_KIND = {(np.dtype(v).kind, np.dtype(v).itemsize): k for k, v in IDX_DTYPES.items()}

_GZIP_MAGIC = b"\x1f\x8b"


def _gunzip(data: bytes, name: str) -> bytes:
    """Decompress every gzip member of ``data``; any damage is a DatasetError.

    ``zlib`` checks each member's CRC-32 and length, so a flipped bit in the compressed
    stream is always caught. Trailing bytes that are not another gzip member are an error.
    """
    out: list[bytes] = []
    rest = data
    try:
        while True:
            d = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
            out.append(d.decompress(rest))
            if not d.eof:
                raise DatasetError(
                    f"{name}: truncated gzip stream (the file ends before the end of the "
                    "compressed data); delete it and fetch it again."
                )
            rest = d.unused_data
            if not rest:
                break
            if not rest.startswith(_GZIP_MAGIC):
                raise DatasetError(
                    f"{name}: {len(rest)} unexpected trailing bytes after the gzip stream; "
                    "the file is corrupt, delete it and fetch it again."
                )
    except zlib.error as e:
        raise DatasetError(
            f"{name}: corrupt gzip data ({e}); delete the file and fetch it again."
        ) from None
    return b"".join(out) if len(out) > 1 else out[0]


def _describe(dims: tuple[int, ...], code: int) -> str:
    return "x".join(str(d) for d in dims) + " " + _DTYPE_NAMES[code]


def read_idx_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX ``data`` (raw or gzip) into a native-endian, writable numpy array.

    ``name`` is only used in error messages (usually the file path).
    """
    data = bytes(data)
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, name)
    elif name.endswith(".gz"):
        raise DatasetError(
            f"{name}: not a gzip file (it does not start with the gzip magic 1f 8b); "
            "the download was probably interrupted or replaced by an HTML page."
        )
    if len(data) < 4:
        raise DatasetError(
            f"{name}: truncated: {len(data)} bytes, too short for an IDX header (4 bytes)."
        )
    if data[0] != 0 or data[1] != 0:
        raise DatasetError(
            f"{name}: not an IDX file: bad magic number {data[:4].hex()} "
            "(the first two bytes must be zero)."
        )
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        valid = ", ".join(f"0x{k:02X} {v}" for k, v in _DTYPE_NAMES.items())
        raise DatasetError(f"{name}: unknown IDX dtype code 0x{code:02X} (valid: {valid}).")
    if ndim == 0:
        raise DatasetError(f"{name}: IDX header declares 0 dimensions (at least 1 needed).")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(
            f"{name}: truncated header: {ndim} dimensions need {header} header bytes, "
            f"file has {len(data)}."
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    for i, d in enumerate(dims):
        if d == 0:
            raise DatasetError(f"{name}: IDX dimension {i} has size 0 (sizes {dims}).")
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    have = len(data) - header
    if have != expected:
        what = "truncated" if have < expected else "trailing bytes"
        raise DatasetError(
            f"{name}: {what}: header says {_describe(dims, code)} = {expected} bytes of data, "
            f"file has {have}."
        )
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims), offset=header)
    # astype copies: the result is native-endian, writable and owns its memory.
    return arr.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw); every problem is a :class:`DatasetError`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise DatasetError(f"{p}: cannot read: {e.strerror or e}.") from None
    return read_idx_bytes(data, str(p))


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise ``array`` to uncompressed IDX bytes (the inverse of :func:`read_idx_bytes`)."""
    a = np.asarray(array)
    code = _CODE_OF_KIND.get((a.dtype.kind, a.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"IDX cannot store dtype {a.dtype}; use one of {', '.join(_DTYPE_NAMES.values())}."
        )
    if not 1 <= a.ndim <= 255 or 0 in a.shape or max(a.shape) >= 2**32:
        raise ValueError(f"IDX cannot store an array of shape {a.shape}.")
    header = bytes([0, 0, code, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    return header + np.ascontiguousarray(a, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed if ``path`` ends with ``.gz``.

    The gzip output is deterministic (``mtime=0``), handy for test fixtures.
    """
    p = Path(path)
    data = idx_bytes(array)
    if p.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p
