"""Image classification datasets, held entirely in memory as uint8 tensors.

Every dataset is an :class:`ImageData`: train and test images as ``uint8 (N, C, H, W)``
tensors, int64 labels, class names and the per-channel mean/std of the training set
(on the [0, 1] scale) used to normalise inputs to zero mean and unit variance. Batching, normalisation and augmentation (§3.7) are done on the
device by :mod:`profond.data.loader` and :mod:`profond.data.augment`.

Datasets are registered in :data:`profond.registry.DATASETS`; ``profond list datasets``
shows them and :func:`load_dataset` builds one by name.

Where file datasets are looked for
----------------------------------
In this order, the first *place* holding any of the dataset's files wins:

1. ``data_dir`` (``--data-dir``, ``data.data_dir``): a root holding one folder per dataset,
   ``ROOT/fashion-mnist/...`` (a folder named after the dataset is accepted itself too);
2. ``$PROFOND_DATA``: a root laid out the same way;
3. the user cache, ``$XDG_CACHE_HOME/profond/NAME`` (default ``~/.cache/profond/NAME``);
4. the system folders, ``/usr/share/datasets/NAME`` (Debian: ``apt-get install
   dataset-fashion-mnist``);
5. with ``download=True``, a download into the user cache from the canonical URL, each
   file checked against the SHA-256 of a known distribution of it
   (:func:`profond.data.download.fetch`). The base URL
   can be overridden with ``$PROFOND_DATA_URL_<NAME>`` (``NAME`` upper-cased, ``-`` -> ``_``,
   e.g. ``PROFOND_DATA_URL_FASHION_MNIST``) or the :data:`BASE_URLS` dict.

Once a place is found, every file must be there and valid: a missing sibling or a
corrupt file is a :class:`~profond.errors.DatasetError` naming the file, never a reason
to look further (a half-copied dataset must not be silently shadowed by another one).

Files found on disk are not hashed as archives on every load: a load validates the
structure instead (IDX header, exact byte counts, gzip CRC-32, label range), which catches
truncation and corruption in transit. A dataset is distributed in several gzip encodings of
the same data (the canonical files and the Debian package's re-compressed ones differ byte
for byte), so what identifies it is the decompressed IDX *payload*: a copy with the full
dataset's shapes must have the known payload (:data:`PAYLOAD_SHA256`), whatever its gzip
bytes or an uncompressed twin. That hash costs a fraction of the decompression a load does
anyway, and it catches what the CRC cannot (a damaged uncompressed file, a corrupt file
re-packed). Downloads are always hashed as archives. :func:`verify_files` checks a folder on
demand.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tarfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..registry import DATASETS
from .download import DownloadError, fetch, sha256_file
from .idx import read_idx

# ----------------------------------------------------------------------------------------
# The dataset type
# ----------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """An image classification dataset in memory (uint8 images, int64 labels).

    The tensors may be shared with other loads of the same dataset in this process
    (see :func:`load_dataset`): do not modify them in place.
    """

    name: str
    classes: list[str]
    train_x: torch.Tensor  # uint8 (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale, of the training set
    std: tuple[float, ...]
    source: str  # where the files were found

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_dataset(
    name: str, data_dir: str | None = None, download: bool = True, progress: bool = True
) -> ImageData:
    """Build the registered dataset ``name`` (see the module docstring for the lookup).

    Repeated loads of the same files in one process are free (the result is cached).
    """
    return DATASETS.get(name)(data_dir=data_dir, download=download, progress=progress)


#: ``data.val_size: null`` holds out a tenth of the training set, at most this many examples
#: (5000 of the 60,000 Fashion-MNIST or MNIST images, as before the default became relative;
#: 5000 of CIFAR-10's 50,000; 143 of the 1438 training digits)
DEFAULT_VAL_MAX = 5000


def default_val_size(val_size: int | None, n: int) -> int:
    """``val_size``, or for ``None`` the default split of a training set of ``n`` examples:
    ``min(5000, n // 10)``, so that small datasets keep most of their examples for training."""
    if val_size is not None:
        return int(val_size)
    return min(DEFAULT_VAL_MAX, n // 10)


def train_val_split(
    x: torch.Tensor, y: torch.Tensor, val_size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hold out ``val_size`` random examples for validation (course §3.8, early stopping).

    The split is a seeded permutation (``torch.Generator().manual_seed(seed)``), so it
    is the same on every machine and every run with this seed. Both parts keep the
    original order of their examples. Returns ``(train_x, train_y, val_x, val_y)``.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}")
    if not 0 <= val_size < n:
        raise ConfigError(
            f"data.val_size={val_size} is out of range: the training set has {n} examples, "
            f"so val_size must be between 0 and {n - 1} (or null: a tenth of them, at most "
            f"{DEFAULT_VAL_MAX})."
        )
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    val_idx = perm[:val_size].sort().values
    train_idx = perm[val_size:].sort().values
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


# ----------------------------------------------------------------------------------------
# Known files: URLs, hashes, statistics
# ----------------------------------------------------------------------------------------

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
CIFAR_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = ("test_batch.bin",)
CIFAR_RECORD = 1 + 3 * 32 * 32

#: SHA-256 of the files at the canonical URL (:data:`BASE_URLS`), one table for all datasets.
#: fashion-mnist: the files of the dataset's own repository and S3 bucket (official MD5
#: 8d4fb7e6..., bef4ecab..., 25c81989..., bb300cfd...), the hashes many projects publish.
#: mnist, cifar10: the published values; a mismatch raises a DatasetError naming both
#: hashes, so a wrong entry fails loudly, never silently.
SHA256: dict[str, dict[str, str]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "cifar10": {
        CIFAR_ARCHIVE: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
    },
}

#: SHA-256 of other known distributions of the same files (same payload, other gzip bytes):
#: fashion-mnist: the Debian package dataset-fashion-mnist (/usr/share/datasets), which
#: re-compressed the canonical files. A mirror (``$PROFOND_DATA_URL_<NAME>``) may serve either.
OTHER_SHA256: dict[str, dict[str, tuple[str, ...]]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": ("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",),
        "train-labels-idx1-ubyte.gz": ("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",),
        "t10k-images-idx3-ubyte.gz": ("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",),
        "t10k-labels-idx1-ubyte.gz": ("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",),
    },
}

#: The decompressed IDX files: ``file -> (shape, SHA-256 of the IDX bytes)``, the same for
#: every distribution (recompression changes the gzip bytes, never these). fashion-mnist:
#: computed from the Debian files; their MD5s are the published MD5s of the uncompressed
#: canonical files (f4a8712d..., 9018921c..., 8181f547..., 15d48437...).
PAYLOAD_SHA256: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            (60000, 28, 28), "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte.gz": (
            (60000,), "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte.gz": (
            (10000, 28, 28), "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte.gz": (
            (10000,), "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    },
}


def known_sha256(name: str, fname: str) -> tuple[str, ...]:
    """Every known SHA-256 of the archive ``fname`` of ``name``: canonical first."""
    return (SHA256[name][fname], *OTHER_SHA256.get(name, {}).get(fname, ()))

#: Canonical download locations (file URL = base + file name). Tests and mirrors may
#: edit this dict or set ``$PROFOND_DATA_URL_<NAME>``.
BASE_URLS: dict[str, str] = {
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "cifar10": "https://www.cs.toronto.edu/~kriz/",
}

#: Per-channel mean and std of the training images on the [0, 1] scale (population std
#: over all training pixels). fashion-mnist measured here (and checked by a test);
#: mnist and cifar10 are the well-known values of the full training sets.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
DIGIT_CLASSES = [str(i) for i in range(10)]
CIFAR_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip

#: How to get each file dataset, appended to "not found" errors.
HINTS: dict[str, str] = {
    "fashion-mnist": "`sudo apt-get install dataset-fashion-mnist` (installs "
    "/usr/share/datasets/fashion-mnist)",
}

#: System-wide roots (one folder per dataset). A list so tests can replace it.
SYSTEM_DIRS: list[Path] = [Path("/usr/share/datasets")]


# ----------------------------------------------------------------------------------------
# Lookup
# ----------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/profond`` or ``~/.cache/profond``, read at call time."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "profond"


def search_places(name: str, data_dir: str | None = None) -> list[tuple[str, Path]]:
    """The ``(label, folder)`` places searched for dataset ``name``, in order."""
    places: list[tuple[str, Path]] = []
    if data_dir:
        root = Path(data_dir).expanduser()
        places.append(("--data-dir", root / name))
        if root.name == name:  # the dataset folder itself was passed: accept it too
            places.append(("--data-dir", root))
    env = os.environ.get("PROFOND_DATA")
    if env:
        places.append(("$PROFOND_DATA", Path(env).expanduser() / name))
    places.append(("user cache", cache_root() / name))
    places += [("system", Path(d) / name) for d in SYSTEM_DIRS]
    return places


def base_url(name: str) -> str:
    env = os.environ.get("PROFOND_DATA_URL_" + name.upper().replace("-", "_"))
    url = env or BASE_URLS[name]
    return url if url.endswith("/") else url + "/"


@dataclass(frozen=True)
class _FileSet:
    """How one file dataset sits in a folder: detection, loading, downloading."""

    name: str
    files: tuple[str, ...]  # what a download fetches
    present: Callable[[Path], bool]  # does this folder hold any of the dataset's files?
    load: Callable[[Path], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _not_found(fs: _FileSet, places: list[tuple[str, Path]], why: str) -> DatasetError:
    searched = "; ".join(f"{p} ({label})" for label, p in places)
    if not os.environ.get("PROFOND_DATA"):
        searched += "; $PROFOND_DATA is not set"
    ways = [HINTS[fs.name]] if fs.name in HINTS else []
    ways += [
        f"pass --data-dir ROOT (ROOT/{fs.name}/ holding {', '.join(fs.files)})",
        "set PROFOND_DATA=ROOT",
    ]
    return DatasetError(
        f"dataset {fs.name!r} not found. Searched: {searched}. {why} "
        f"To get it: {', or '.join(ways)}."
    )


def _resolve(
    fs: _FileSet, data_dir: str | None, download: bool, progress: bool
) -> tuple[Path, str]:
    """The folder to load ``fs`` from and its label, downloading if allowed."""
    places = search_places(fs.name, data_dir)
    for label, folder in places:
        if folder.is_dir() and fs.present(folder):
            return folder, label
    if not download:
        raise _not_found(fs, places, "Downloading is off (data.download=false).")
    target = cache_root() / fs.name
    base = base_url(fs.name)
    fetched: list[Path] = []
    try:
        for fname in fs.files:
            fetched.append(
                fetch(base + fname, target / fname, known_sha256(fs.name, fname), progress=progress)
            )
    except DatasetError as e:
        # Leave no partial dataset behind: it would be "found" next time, with files missing.
        for p in fetched:
            p.unlink(missing_ok=True)
        if isinstance(e, DownloadError):
            raise _not_found(fs, places, f"Downloading failed: {e}.") from None
        raise
    return target, "downloaded"


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, folder: str) -> tuple[np.ndarray, ...]:
    return FILESETS[name].load(Path(folder))


def _load_files(name: str, data_dir: str | None, download: bool, progress: bool) -> ImageData:
    fs = FILESETS[name]
    folder, _label = _resolve(fs, data_dir, download, progress)
    tx, ty, vx, vy = _load_cached(name, str(folder.resolve()))
    mean, std = STATS[name]
    classes = (
        CIFAR_CLASSES
        if name == "cifar10"
        else (FASHION_CLASSES if name == "fashion-mnist" else DIGIT_CLASSES)
    )
    return ImageData(
        name=name,
        classes=list(classes),
        train_x=torch.from_numpy(tx),
        train_y=torch.from_numpy(ty),
        test_x=torch.from_numpy(vx),
        test_y=torch.from_numpy(vy),
        mean=mean,
        std=std,
        source=str(folder),
    )


def verify_files(name: str, folder: str | os.PathLike) -> None:
    """Check every known file of ``name`` present in ``folder``; raise on a mismatch.

    Where the payload is known (:data:`PAYLOAD_SHA256`), a file (gzip, any encoding, or its
    uncompressed twin) is checked by the SHA-256 of its decompressed IDX bytes, so every
    distribution of the data passes; otherwise the archive must be one of
    :func:`known_sha256`.
    """
    payloads = PAYLOAD_SHA256.get(name, {})
    for fname in SHA256[name]:
        if fname in payloads:
            p = _idx_path(Path(folder), fname)
            if p is not None:
                _check_payload(p, read_idx_payload(p), payloads[fname][1], name)
            continue
        p = Path(folder) / fname
        if p.is_file() and (got := sha256_file(p)) not in (known := known_sha256(name, fname)):
            raise DatasetError(f"{p}: SHA-256 mismatch: expected {' or '.join(known)}, got {got}.")


def idx_payload_sha256(array: np.ndarray) -> str:
    """SHA-256 of the uncompressed IDX file of a uint8 ``array`` (header then data), without a copy."""
    a = np.ascontiguousarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"idx_payload_sha256 takes uint8 arrays, got {a.dtype}")
    h = hashlib.sha256(bytes([0, 0, 0x08, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape))
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def read_idx_payload(path: Path) -> str:
    """SHA-256 of the decompressed IDX bytes of ``path`` (gzip or raw); a DatasetError if unreadable."""
    return idx_payload_sha256(read_idx(path))


def _check_payload(path: Path, got: str, expected: str, name: str) -> None:
    if got != expected:
        raise DatasetError(
            f"{path}: the decompressed IDX data is not that of {name} (SHA-256 {got}, expected "
            f"{expected}): the file is corrupt or altered; delete it and fetch it again."
        )


# ----------------------------------------------------------------------------------------
# IDX datasets (MNIST, Fashion-MNIST)
# ----------------------------------------------------------------------------------------


def _idx_path(folder: Path, fname: str) -> Path | None:
    """``fname`` in ``folder``, or its decompressed twin (``...-ubyte`` without ``.gz``)."""
    for candidate in (folder / fname, folder / fname.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _idx_present(folder: Path) -> bool:
    return any(_idx_path(folder, f) is not None for f in IDX_FILES)


def _load_idx_folder(folder: Path, num_classes: int = 10, name: str | None = None):
    paths = []
    for fname in IDX_FILES:
        p = _idx_path(folder, fname)
        if p is None:
            raise DatasetError(
                f"{folder / fname}: missing (the folder holds the other files of the "
                "dataset; the copy is incomplete, add the file or delete the folder)."
            )
        paths.append(p)
    # zlib releases the GIL: decompressing the four files in threads shortens the load.
    with ThreadPoolExecutor(max_workers=4) as pool:
        tx, ty, vx, vy = pool.map(read_idx, paths)
    for images, labels, ip, lp in ((tx, ty, paths[0], paths[1]), (vx, vy, paths[2], paths[3])):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(
                f"{ip}: expected uint8 images of shape N x H x W, got {images.dtype} "
                f"{'x'.join(map(str, images.shape))}."
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DatasetError(f"{lp}: expected a 1-D uint8 label array, got shape {labels.shape}.")
        if len(labels) != len(images):
            raise DatasetError(f"{lp}: {len(labels)} labels for {len(images)} images in {ip.name}.")
        if labels.max() >= num_classes:
            raise DatasetError(
                f"{lp}: label {int(labels.max())} is out of range 0..{num_classes - 1}."
            )
    # A copy with the published shapes is the published data: its payload must match.
    known = PAYLOAD_SHA256.get(name or "", {})
    for fname, arr, p in zip(IDX_FILES, (tx, ty, vx, vy), paths, strict=True):
        if fname in known and arr.shape == known[fname][0]:
            _check_payload(p, idx_payload_sha256(arr), known[fname][1], str(name))
    return (
        tx[:, None],
        ty.astype(np.int64),
        vx[:, None],
        vy.astype(np.int64),
    )


# ----------------------------------------------------------------------------------------
# CIFAR-10 (binary version: records of 1 label byte + 3072 pixel bytes, no pickle)
# ----------------------------------------------------------------------------------------


def read_cifar_bin(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse one CIFAR-10 binary batch into ``uint8 (N, 3, 32, 32)`` images and labels."""
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise DatasetError(
            f"{name}: {len(data)} bytes is not a whole number of CIFAR-10 records "
            f"({CIFAR_RECORD} bytes each); the file is truncated or not a CIFAR-10 batch."
        )
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() >= 10:
        bad = int(np.argmax(labels >= 10))
        raise DatasetError(
            f"{name}: record {bad} has label {int(labels[bad])}, CIFAR-10 labels are 0..9."
        )
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _cifar_layout(folder: Path) -> tuple[str, Path] | None:
    """``("dir", path)`` of the extracted batches, ``("tar", archive)``, or None."""
    names = CIFAR_TRAIN + CIFAR_TEST
    for sub in (folder / CIFAR_DIR, folder):
        if any((sub / n).is_file() for n in names):
            return "dir", sub
    if (folder / CIFAR_ARCHIVE).is_file():
        return "tar", folder / CIFAR_ARCHIVE
    return None


def _read_cifar_tar(archive: Path) -> dict[str, bytes]:
    wanted = set(CIFAR_TRAIN + CIFAR_TEST)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tf:
            for member in tf:
                base = member.name.rsplit("/", 1)[-1]
                if base in wanted and member.isfile():
                    f = tf.extractfile(member)  # read in memory; nothing is written to disk
                    out[base] = f.read() if f is not None else b""
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DatasetError(
            f"{archive}: corrupt or truncated archive ({e}); delete it and fetch it again."
        ) from None
    missing = sorted(wanted - out.keys())
    if missing:
        raise DatasetError(f"{archive}: the archive lacks {', '.join(missing)}.")
    return out


def _load_cifar_folder(folder: Path):
    layout = _cifar_layout(folder)
    if layout is None:  # pragma: no cover - _resolve only calls us on a present folder
        raise DatasetError(f"{folder}: no CIFAR-10 files")
    kind, where = layout
    if kind == "tar":
        blobs = _read_cifar_tar(where)
        parts = {n: read_cifar_bin(b, f"{where}:{n}") for n, b in blobs.items()}
    else:
        parts = {}
        for n in CIFAR_TRAIN + CIFAR_TEST:
            p = where / n
            if not p.is_file():
                raise DatasetError(
                    f"{p}: missing (the folder holds other CIFAR-10 batches; the copy is "
                    "incomplete, add the file or delete the folder)."
                )
            parts[n] = read_cifar_bin(p.read_bytes(), str(p))
    tx = np.concatenate([parts[n][0] for n in CIFAR_TRAIN])
    ty = np.concatenate([parts[n][1] for n in CIFAR_TRAIN])
    vx, vy = parts[CIFAR_TEST[0]]
    return tx, ty, vx, vy


FILESETS: dict[str, _FileSet] = {
    "fashion-mnist": _FileSet("fashion-mnist", IDX_FILES, _idx_present,
                              functools.partial(_load_idx_folder, name="fashion-mnist")),
    "mnist": _FileSet("mnist", IDX_FILES, _idx_present, functools.partial(_load_idx_folder, name="mnist")),
    "cifar10": _FileSet(
        "cifar10", (CIFAR_ARCHIVE,), lambda f: _cifar_layout(f) is not None, _load_cifar_folder
    ),
}


@DATASETS.register(
    "fashion-mnist", help="Zalando Fashion-MNIST: 70k 28x28 grey clothes, 10 classes (default)"
)
def fashion_mnist(
    data_dir: str | None = None, download: bool = True, progress: bool = True
) -> ImageData:
    """Fashion-MNIST (Xiao et al. 2017): 60000 train / 10000 test, 1x28x28, 10 classes."""
    return _load_files("fashion-mnist", data_dir, download, progress)


#: pooled datasets already built in this process, by the folder of their source files
_POOLED: dict[str, ImageData] = {}


def _pooled_8x8(source: ImageData) -> ImageData:
    if source.source in _POOLED:
        return _POOLED[source.source]

    def pool(x: torch.Tensor) -> torch.Tensor:
        xf = torch.nn.functional.pad(x.float(), (2, 2, 2, 2))             # 28x28 -> 32x32, black border
        return torch.nn.functional.avg_pool2d(xf, 4).round().to(torch.uint8)  # 4x4 means -> 8x8

    train_x, test_x = pool(source.train_x), pool(source.test_x)
    mean, std = channel_stats(train_x)
    out = ImageData(f"{source.name}-8x8", list(source.classes), train_x, source.train_y, test_x, source.test_y,
                    mean, std, f"{source.source} (pooled to 8x8)")
    _POOLED[source.source] = out
    return out


@DATASETS.register(
    "fashion-mnist-8x8", help="Fashion-MNIST pooled to 8x8 (the digits' size): quick likelihood experiments"
)
def fashion_mnist_8x8(
    data_dir: str | None = None, download: bool = True, progress: bool = True
) -> ImageData:
    """Fashion-MNIST at the 8x8 size of scikit-learn's digits: each image padded with 2 black
    pixels to 32x32, then 4x4 means rounded to 8-bit levels (60000 train / 10000 test). The
    quick mode of ``likelihood-ood`` trains on it and scores the digits as the out-of-
    distribution set, the small-scale version of Fashion-MNIST vs MNIST."""
    return _pooled_8x8(fashion_mnist(data_dir=data_dir, download=download, progress=progress))


@DATASETS.register("mnist", help="MNIST handwritten digits: 70k 28x28 grey images, 10 classes")
def mnist(data_dir: str | None = None, download: bool = True, progress: bool = True) -> ImageData:
    """MNIST (LeCun et al. 1998): 60000 train / 10000 test, 1x28x28, 10 classes."""
    return _load_files("mnist", data_dir, download, progress)


@DATASETS.register("cifar10", help="CIFAR-10: 60k 32x32 colour images, 10 classes (binary version)")
def cifar10(data_dir: str | None = None, download: bool = True, progress: bool = True) -> ImageData:
    """CIFAR-10 (Krizhevsky 2009), binary version: 50000 train / 10000 test, 3x32x32."""
    return _load_files("cifar10", data_dir, download, progress)


# ----------------------------------------------------------------------------------------
# Offline datasets: digits (bundled with scikit-learn) and synthetic
# ----------------------------------------------------------------------------------------


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images ``(N, C, H, W)`` on [0, 1]."""
    xf = x.to(torch.float64).div_(255).transpose(0, 1).reshape(x.shape[1], -1)
    mean = tuple(round(float(m), 4) for m in xf.mean(1))
    std = tuple(round(float(s), 4) for s in xf.std(1, unbiased=False))
    return mean, std


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits ``(N, 8, 8)`` with values 0..16 and their labels.

    This is the data of ``sklearn.datasets.load_digits``, read straight from the CSV
    bundled with scikit-learn (``sklearn/datasets/data/digits.csv.gz``): importing
    ``sklearn.datasets`` is slow, reading the file is not. Falls back
    to ``load_digits`` if the file is not where expected.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        csv = Path(list(spec.submodule_search_locations)[0]) / "datasets/data/digits.csv.gz"
        if csv.is_file():
            table = np.loadtxt(csv, delimiter=",", dtype=np.float64)
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


@functools.lru_cache(maxsize=1)
def _digits() -> ImageData:
    images, target = _digits_arrays()
    # Pixel values are integers 0..16; x * 255 // 16 maps them onto 0..255 exactly at the ends.
    x = torch.from_numpy((images.astype(np.int64) * 255 // 16).astype(np.uint8))[:, None]
    y = torch.from_numpy(target.astype(np.int64))
    # Fixed stratified 80/20 split, seed 0: 20% of each class goes to the test set.
    g = torch.Generator().manual_seed(0)
    test_idx = []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_idx.append(idx[: round(0.2 * len(idx))])
    is_test = torch.zeros(len(y), dtype=torch.bool)
    is_test[torch.cat(test_idx)] = True
    train_x, train_y = x[~is_test], y[~is_test]
    mean, std = channel_stats(train_x)
    return ImageData(
        "digits", list(DIGIT_CLASSES), train_x, train_y, x[is_test], y[is_test],
        mean, std, "sklearn.datasets.load_digits (bundled with scikit-learn)",
    )  # fmt: skip


@DATASETS.register("digits", help="scikit-learn's 8x8 handwritten digits (1797 images, offline)")
def digits(data_dir: str | None = None, download: bool = True, progress: bool = True) -> ImageData:
    """UCI/scikit-learn digits: 8x8 grey images, 10 classes, fixed stratified 80/20 split.

    The original values 0..16 are mapped to uint8 by ``x * 255 // 16`` (0 -> 0, 16 -> 255).
    No files or network needed; ``data_dir``/``download`` are ignored.
    """
    return _digits()


SYNTHETIC_SEED = 0


@functools.lru_cache(maxsize=1)
def _synthetic(n_train: int = 2000, n_test: int = 500) -> ImageData:
    g = torch.Generator().manual_seed(SYNTHETIC_SEED)
    k, size = 10, 28
    # One smooth template per class: random 7x7 patterns upsampled to 28x28.
    coarse = torch.rand(k, 1, 7, 7, generator=g)
    templates = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear")

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % k
        y = y[torch.randperm(n, generator=g)]
        contrast = 0.6 + 0.4 * torch.rand(n, 1, 1, 1, generator=g)
        noise = torch.rand(n, 1, size, size, generator=g)
        x = 0.65 * contrast * templates[y] + 0.35 * noise
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    train_x, train_y = make(n_train)
    test_x, test_y = make(n_test)
    mean, std = channel_stats(train_x)
    return ImageData(
        "synthetic", [f"pattern-{i}" for i in range(k)], train_x, train_y, test_x, test_y,
        mean, std, f"generated (seed {SYNTHETIC_SEED})",
    )  # fmt: skip


@DATASETS.register("synthetic", help="tiny generated 1x28x28 dataset for tests (2000/500, offline)")
def synthetic(
    data_dir: str | None = None, download: bool = True, progress: bool = True
) -> ImageData:
    """Ten smooth random class templates plus noise, 1x28x28, 2000 train / 500 test.

    Deterministic (fixed seed), needs no files, and a small MLP learns it quickly: the
    dataset of the test suite and of smoke runs.
    """
    return _synthetic()
