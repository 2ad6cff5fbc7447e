"""Fashion-MNIST in every distribution (issue 13, case 10).

The canonical files (the dataset's repository and S3 bucket) and the Debian package's
re-compressed ones hold the same IDX data in different gzip bytes. A copy is identified by its
decompressed payload, so any gzip encoding of the real data loads and verifies, and a copy
whose data differs fails with a DatasetError; downloads stay strict on the archive bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from profond.data import fetch, load_dataset, vision
from profond.errors import DatasetError

try:
    from conftest_data import (  # noqa: F401 (fixtures)
        FMNIST_SYSTEM,
        data_env,
        make_fake_idx_dataset,
        needs_fmnist,
        sha256_of,
    )
except ImportError:  # tests/ imported as a package
    from tests.conftest_data import (  # noqa: F401 (fixtures)
        FMNIST_SYSTEM,
        data_env,
        make_fake_idx_dataset,
        needs_fmnist,
        sha256_of,
    )

#: published SHA-256 of the canonical .gz files (the values the issue and many projects quote)
CANONICAL = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
#: published MD5 of the canonical files once decompressed (the "raw" files)
CANONICAL_RAW_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}


def test_download_table_is_the_canonical_one_and_debian_is_a_known_distribution():
    assert vision.SHA256["fashion-mnist"] == CANONICAL
    for f, h in CANONICAL.items():
        known = vision.known_sha256("fashion-mnist", f)
        assert known[0] == h and len(known) == 2  # canonical first, then the Debian package's


@needs_fmnist
def test_debian_payload_is_the_canonical_payload():
    """The payload table, computed from the Debian files, is the canonical data: the Debian
    files decompress to the published MD5s of the canonical raw files."""
    for f, (shape, sha) in vision.PAYLOAD_SHA256["fashion-mnist"].items():
        raw = gzip.decompress((FMNIST_SYSTEM / f).read_bytes())
        assert hashlib.md5(raw).hexdigest() == CANONICAL_RAW_MD5[f]
        assert hashlib.sha256(raw).hexdigest() == sha
        assert sha256_of(FMNIST_SYSTEM / f) in vision.OTHER_SHA256["fashion-mnist"][f]
        assert sha256_of(FMNIST_SYSTEM / f) != CANONICAL[f]  # the Debian gzip bytes differ
        header = np.frombuffer(raw[4:4 + 4 * len(shape)], dtype=">u4")
        assert tuple(int(d) for d in header) == shape


@pytest.fixture(scope="module")
def regzipped(tmp_path_factory) -> Path:
    """The Debian files decompressed and gzipped again (another level, another mtime): a third
    distribution, with gzip bytes matching no known hash."""
    if not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    root = tmp_path_factory.mktemp("regz")
    folder = root / "fashion-mnist"
    folder.mkdir()
    for f in vision.IDX_FILES:
        raw = gzip.decompress((FMNIST_SYSTEM / f).read_bytes())
        (folder / f).write_bytes(gzip.compress(raw, compresslevel=1, mtime=123456789))
    return root


def test_a_regzipped_copy_loads_and_verifies(regzipped, data_env):
    folder = regzipped / "fashion-mnist"
    for f in vision.IDX_FILES:
        assert sha256_of(folder / f) not in vision.known_sha256("fashion-mnist", f)
    d = load_dataset("fashion-mnist", data_dir=str(regzipped), download=False)
    assert d.source == str(folder) and d.train_x.shape == (60000, 1, 28, 28)
    system = vision._load_idx_folder(FMNIST_SYSTEM, name="fashion-mnist")
    assert np.array_equal(d.train_x.numpy(), system[0]) and np.array_equal(d.test_y.numpy(), system[3])
    vision.verify_files("fashion-mnist", folder)  # was: SHA-256 mismatch
    vision.verify_files("fashion-mnist", FMNIST_SYSTEM)


def _copy_with(regzipped: Path, dest: Path, fname: str, data: bytes, *, gz: bool = True) -> Path:
    """A copy of the re-gzipped set with ``fname`` replaced by ``data`` (its uncompressed twin
    ``...-ubyte`` when not ``gz``)."""
    folder = dest / "fashion-mnist"
    shutil.copytree(regzipped / "fashion-mnist", folder)
    (folder / fname).unlink()
    (folder / (fname if gz else fname.removesuffix(".gz"))).write_bytes(data)
    return folder


def test_a_corrupt_payload_in_valid_gzip_fails(regzipped, data_env, tmp_path):
    f = "t10k-images-idx3-ubyte.gz"
    raw = bytearray(gzip.decompress((regzipped / "fashion-mnist" / f).read_bytes()))
    raw[16 + 1234] ^= 0x40  # one pixel of one test image: the header, sizes and CRC all stay valid
    folder = _copy_with(regzipped, tmp_path, f, gzip.compress(bytes(raw), compresslevel=1))
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=str(tmp_path), download=False)
    msg = str(e.value)
    assert str(folder / f) in msg and "decompressed IDX data is not that of fashion-mnist" in msg
    assert vision.PAYLOAD_SHA256["fashion-mnist"][f][1] in msg and "fetch it again" in msg
    with pytest.raises(DatasetError, match="decompressed IDX data"):
        vision.verify_files("fashion-mnist", folder)


def test_a_damaged_uncompressed_twin_fails(regzipped, data_env, tmp_path):
    """An uncompressed file has no CRC: before the payload check a flipped label loaded silently."""
    f = "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress((regzipped / "fashion-mnist" / f).read_bytes()))
    raw[8 + 17] = (raw[8 + 17] + 1) % 10  # still a valid label
    folder = _copy_with(regzipped, tmp_path, f, bytes(raw), gz=False)
    assert (folder / "train-labels-idx1-ubyte").is_file() and not (folder / f).exists()
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte: the decompressed IDX data"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path), download=False)


def test_small_idx_sets_are_not_held_to_the_full_dataset_payload(data_env, tmp_path):
    make_fake_idx_dataset(tmp_path / "fashion-mnist", n_train=5)
    assert len(load_dataset("fashion-mnist", data_dir=str(tmp_path), download=False).train_x) == 5


@needs_fmnist
def test_downloads_stay_strict_on_the_archive_bytes(regzipped, tmp_path):
    f = "train-labels-idx1-ubyte.gz"
    known = vision.known_sha256("fashion-mnist", f)
    # a known distribution (the Debian file, standing in for a mirror) is accepted as it is
    got = fetch((FMNIST_SYSTEM / f).as_uri(), tmp_path / "a" / f, known, progress=False)
    assert got.read_bytes() == (FMNIST_SYSTEM / f).read_bytes()
    # the same payload in other gzip bytes is not: a download must be a known file, byte for byte
    with pytest.raises(DatasetError) as e:
        fetch((regzipped / "fashion-mnist" / f).as_uri(), tmp_path / "b" / f, known, progress=False)
    assert "SHA-256 mismatch" in str(e.value) and " or ".join(known) in str(e.value)
    assert not (tmp_path / "b" / f).exists() and list((tmp_path / "b").iterdir()) == []
