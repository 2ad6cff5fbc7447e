"""Datasets: lookup order, strict validation, downloads, CIFAR-10 binary, digits, synthetic."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from profond.data import fetch, load_dataset, train_val_split, vision
from profond.data.download import DownloadError
from profond.data.vision import CIFAR_RECORD, ImageData, channel_stats
from profond.errors import ConfigError, DatasetError, RegistryError
from profond.registry import DATASETS

try:
    from conftest_data import (  # noqa: F401 (fixtures)
        FMNIST_SYSTEM,
        data_env,
        http_dir,
        make_fake_idx_dataset,
        needs_fmnist,
        sha256_of,
    )
except ImportError:  # tests/ imported as a package
    from tests.conftest_data import (  # noqa: F401 (fixtures)
        FMNIST_SYSTEM,
        data_env,
        http_dir,
        make_fake_idx_dataset,
        needs_fmnist,
        sha256_of,
    )


def test_registered_names():
    assert {"fashion-mnist", "mnist", "cifar10", "digits", "synthetic"} <= set(DATASETS.names())
    with pytest.raises(RegistryError, match="Did you mean 'mnist'"):
        load_dataset("mnsit")


# -- the real Fashion-MNIST --------------------------------------------------------------


@needs_fmnist
def test_fashion_mnist_from_system(data_env, monkeypatch):
    monkeypatch.setattr(vision, "SYSTEM_DIRS", [FMNIST_SYSTEM.parent])
    d = load_dataset("fashion-mnist", download=False)
    assert d.train_x.shape == (60000, 1, 28, 28) and d.test_x.shape == (10000, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_y.bincount().tolist() == [6000] * 10
    assert d.test_y.bincount().tolist() == [1000] * 10
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    assert d.num_classes == 10 and d.shape == (1, 28, 28)
    assert d.source == str(FMNIST_SYSTEM)
    # The hard-coded statistics are those of the training set.
    mean, std = channel_stats(d.train_x)
    assert mean == pytest.approx(d.mean, abs=1e-4) and std == pytest.approx(d.std, abs=1e-4)
    assert d.mean[0] == pytest.approx(0.2860, abs=1e-4) and d.std[0] == pytest.approx(
        0.3530, abs=1e-4
    )
    # Repeated loads are free: the same tensors come back.
    assert load_dataset("fashion-mnist", download=False).train_x.data_ptr() == d.train_x.data_ptr()


@needs_fmnist
def test_fashion_mnist_system_files_match_known_hashes():
    vision.verify_files("fashion-mnist", FMNIST_SYSTEM)


# -- lookup order ------------------------------------------------------------------------


def test_lookup_order(data_env, monkeypatch, tmp_path):
    arg_root, env_root = tmp_path / "arg", tmp_path / "env"
    make_fake_idx_dataset(arg_root / "fashion-mnist", n_train=3)
    make_fake_idx_dataset(env_root / "fashion-mnist", n_train=4)
    make_fake_idx_dataset(data_env["cache"] / "fashion-mnist", n_train=5)
    make_fake_idx_dataset(data_env["system"] / "fashion-mnist", n_train=6)
    monkeypatch.setenv("PROFOND_DATA", str(env_root))

    def n_train(**kw):
        return len(load_dataset("fashion-mnist", download=False, **kw).train_x)

    assert n_train(data_dir=str(arg_root)) == 3
    assert n_train() == 4
    monkeypatch.delenv("PROFOND_DATA")
    assert n_train() == 5
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    assert n_train() == 6
    # The folder of the dataset itself is accepted as --data-dir.
    assert n_train(data_dir=str(arg_root / "fashion-mnist")) == 3


def test_cache_defaults_to_home(data_env, monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME")
    make_fake_idx_dataset(tmp_path / "home" / ".cache" / "profond" / "mnist", n_train=7)
    d = load_dataset("mnist", download=False)
    assert len(d.train_x) == 7 and d.classes == [str(i) for i in range(10)]
    assert d.source == str(tmp_path / "home" / ".cache" / "profond" / "mnist")


def test_fake_dataset_content_round_trips(data_env, tmp_path):
    arrays = make_fake_idx_dataset(tmp_path / "r" / "fashion-mnist", n_train=5, n_test=4)
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path / "r"), download=False)
    assert d.train_x.shape == (5, 1, 28, 28) and d.test_x.shape == (4, 1, 28, 28)
    assert np.array_equal(d.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    assert d.test_y.tolist() == arrays["t10k-labels-idx1-ubyte.gz"].tolist()


def test_uncompressed_files_are_accepted(data_env, tmp_path):
    folder = tmp_path / "r" / "mnist"
    make_fake_idx_dataset(folder, n_train=5)
    for p in folder.glob("*.gz"):
        p.with_suffix("").write_bytes(gzip.decompress(p.read_bytes()))
        p.unlink()
    assert len(load_dataset("mnist", data_dir=str(tmp_path / "r"), download=False).train_x) == 5


def test_corrupt_file_in_earlier_place_raises(data_env, tmp_path):
    root = tmp_path / "arg"
    make_fake_idx_dataset(root / "fashion-mnist", n_train=3)
    make_fake_idx_dataset(data_env["system"] / "fashion-mnist", n_train=6)
    bad = root / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=f"^{bad}: truncated gzip"):
        load_dataset("fashion-mnist", data_dir=str(root), download=False)


def test_missing_sibling_raises(data_env):
    folder = data_env["cache"] / "fashion-mnist"
    make_fake_idx_dataset(folder, n_train=3)
    make_fake_idx_dataset(data_env["system"] / "fashion-mnist", n_train=6)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: missing"):
        load_dataset("fashion-mnist", download=False)


def test_inconsistent_files_raise(data_env, tmp_path):
    folder = tmp_path / "r" / "fashion-mnist"
    make_fake_idx_dataset(folder, n_train=3)
    from profond.data.idx import write_idx

    write_idx(folder / "train-labels-idx1-ubyte.gz", np.array([1, 2], dtype=np.uint8))
    with pytest.raises(DatasetError, match="2 labels for 3 images"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "r"), download=False)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.array([1, 2, 12], dtype=np.uint8))
    with pytest.raises(DatasetError, match="label 12 is out of range"):
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "r"), download=False)


def test_not_found_lists_places_and_hint(data_env, tmp_path):
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=str(tmp_path / "nowhere"), download=False)
    msg = str(e.value)
    for place in (
        tmp_path / "nowhere" / "fashion-mnist",
        data_env["cache"] / "fashion-mnist",
        data_env["system"] / "fashion-mnist",
    ):
        assert str(place) in msg
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "--data-dir" in msg and "PROFOND_DATA" in msg and "download" in msg.lower()


# -- downloads ---------------------------------------------------------------------------


def serve_fake(monkeypatch, served: Path, base: str, name="fashion-mnist", n_train=4):
    make_fake_idx_dataset(served, n_train=n_train)
    hashes = {f: sha256_of(served / f) for f in vision.IDX_FILES}
    monkeypatch.setitem(vision.SHA256, name, hashes)
    monkeypatch.setenv("PROFOND_DATA_URL_" + name.upper().replace("-", "_"), base)
    return hashes


def test_download_into_cache(data_env, http_dir, monkeypatch):
    served, base = http_dir
    serve_fake(monkeypatch, served, base)
    d = load_dataset("fashion-mnist", download=True, progress=False)
    cache = data_env["cache"] / "fashion-mnist"
    assert len(d.train_x) == 4 and d.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(vision.IDX_FILES)
    for f in vision.IDX_FILES:
        (served / f).unlink()  # the next load must come from the cache
    vision._load_cached.cache_clear()
    assert len(load_dataset("fashion-mnist", download=True).train_x) == 4


def test_download_with_wrong_hash_leaves_nothing(data_env, http_dir, monkeypatch):
    served, base = http_dir
    hashes = serve_fake(monkeypatch, served, base)
    bad = dict(hashes, **{"t10k-images-idx3-ubyte.gz": "0" * 64})
    monkeypatch.setitem(vision.SHA256, "fashion-mnist", bad)
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", download=True, progress=False)
    msg = str(e.value)
    assert base + "t10k-images-idx3-ubyte.gz" in msg and "0" * 64 in msg
    assert hashes["t10k-images-idx3-ubyte.gz"] in msg
    cache = data_env["cache"] / "fashion-mnist"
    assert list(cache.iterdir()) == []  # no bad file, no temp file, no partial dataset


def test_download_failure_reports_places(data_env, http_dir, monkeypatch):
    served, base = http_dir
    serve_fake(monkeypatch, served, base, name="mnist")
    (served / "t10k-images-idx3-ubyte.gz").unlink()  # a 404 after two good files
    with pytest.raises(DatasetError, match="Downloading failed") as e:
        load_dataset("mnist", download=True, progress=False)
    assert str(data_env["system"] / "mnist") in str(e.value)
    assert f"{base}t10k-images-idx3-ubyte.gz: HTTP 404" in str(e.value)
    assert list((data_env["cache"] / "mnist").iterdir()) == []  # no partial dataset left


def test_fetch_file_url_and_mismatch(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello" * 1000)
    dest = tmp_path / "out" / "dest.bin"
    fetch(src.as_uri(), dest, sha256_of(src), progress=True)  # stderr is no TTY here
    assert dest.read_bytes() == src.read_bytes()
    assert dest.stat().st_mode & 0o044 == 0o044  # readable by others, unlike mkstemp's 0600
    dest2 = tmp_path / "out" / "other.bin"
    with pytest.raises(DatasetError, match="SHA-256 mismatch") as e:
        fetch(src.as_uri(), dest2, "ab" * 32, progress=False)
    assert src.as_uri() in str(e.value) and "ab" * 32 in str(e.value)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dest.bin"]
    with pytest.raises(DownloadError, match="cannot download"):
        fetch((tmp_path / "missing").as_uri(), dest2, "ab" * 32, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dest.bin"]


def test_fetch_http(tmp_path, http_dir):
    served, base = http_dir
    (served / "f.bin").write_bytes(bytes(range(256)) * 50)
    dest = fetch(base + "f.bin", tmp_path / "f.bin", sha256_of(served / "f.bin"), progress=False)
    assert dest.read_bytes() == (served / "f.bin").read_bytes()


# -- CIFAR-10 ----------------------------------------------------------------------------


def cifar_batch(n: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.concatenate([labels[:, None], pixels], 1).tobytes(), labels, pixels


def write_cifar(folder: Path, n: int = 4) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, name in enumerate(vision.CIFAR_TRAIN + vision.CIFAR_TEST):
        blob, labels, pixels = cifar_batch(n, i)
        (folder / name).write_bytes(blob)
        out[name] = (labels, pixels)
    return out


def check_cifar(d: ImageData, batches: dict, n: int = 4):
    assert d.train_x.shape == (5 * n, 3, 32, 32) and d.test_x.shape == (n, 3, 32, 32)
    labels, pixels = batches["data_batch_2.bin"]
    assert d.train_y[n : 2 * n].tolist() == labels.tolist()
    assert np.array_equal(d.train_x[n : 2 * n].reshape(n, -1).numpy(), pixels)
    assert d.num_classes == 10 and d.classes[0] == "airplane" and len(d.mean) == 3


@pytest.mark.parametrize("layout", ["cifar-10-batches-bin", "."])
def test_cifar10_extracted(data_env, tmp_path, layout):
    batches = write_cifar(tmp_path / "r" / "cifar10" / layout)
    check_cifar(load_dataset("cifar10", data_dir=str(tmp_path / "r"), download=False), batches)


def test_cifar10_from_tar_gz(data_env, tmp_path):
    batches = write_cifar(tmp_path / "src" / "cifar-10-batches-bin")
    archive = data_env["system"] / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(tmp_path / "src" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    check_cifar(load_dataset("cifar10", download=False), batches)


def test_cifar10_bad_files(data_env, tmp_path):
    folder = tmp_path / "r" / "cifar10"
    write_cifar(folder)
    (folder / "data_batch_3.bin").write_bytes(b"\x00" * (CIFAR_RECORD * 2 + 5))
    with pytest.raises(
        DatasetError, match="data_batch_3.bin: .*not a whole number of CIFAR-10 records"
    ):
        load_dataset("cifar10", data_dir=str(tmp_path / "r"), download=False)
    blob = bytearray(cifar_batch(3, 0)[0])
    blob[CIFAR_RECORD] = 10  # label of record 1
    (folder / "data_batch_3.bin").write_bytes(bytes(blob))
    with pytest.raises(DatasetError, match="record 1 has label 10"):
        load_dataset("cifar10", data_dir=str(tmp_path / "r"), download=False)
    (folder / "data_batch_3.bin").unlink()
    with pytest.raises(DatasetError, match="data_batch_3.bin: missing"):
        load_dataset("cifar10", data_dir=str(tmp_path / "r"), download=False)


def test_cifar10_bad_archives(data_env):
    archive = data_env["system"] / "cifar10" / "cifar-10-binary.tar.gz"
    archive.parent.mkdir()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
        blob = cifar_batch(2, 0)[0]
        info.size = len(blob)
        tf.addfile(info, io.BytesIO(blob))
    archive.write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match="lacks data_batch_1.bin"):
        load_dataset("cifar10", download=False)
    archive.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated archive"):
        load_dataset("cifar10", download=False)


# -- offline datasets and the split ------------------------------------------------------


def test_digits():
    d = load_dataset("digits")
    assert d.shape == (1, 8, 8) and d.num_classes == 10
    assert len(d.train_x) == 1438 and len(d.test_x) == 359
    assert d.train_x.dtype == torch.uint8 and int(d.train_x.max()) == 255
    assert d.test_y.bincount().tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]  # stratified
    assert channel_stats(d.train_x) == (d.mean, d.std)


def test_digits_is_sklearn_load_digits():
    from sklearn.datasets import load_digits

    b = load_digits()
    images, target = vision._digits_arrays()
    assert np.array_equal(images, b.images) and np.array_equal(target, b.target)
    d = load_dataset("digits")
    both = torch.cat([d.train_x, d.test_x])[:, 0].to(torch.int64)
    assert sorted(both.flatten().unique().tolist()) == sorted({v * 255 // 16 for v in range(17)})


def test_synthetic_is_deterministic_and_learnable():
    d = load_dataset("synthetic")
    assert d.train_x.shape == (2000, 1, 28, 28) and d.test_x.shape == (500, 1, 28, 28)
    assert d.train_y.bincount().tolist() == [200] * 10
    fresh = vision._synthetic.__wrapped__()
    assert fresh.train_x.equal(d.train_x) and fresh.test_y.equal(d.test_y)
    # A linear classifier learns it in a few full-batch steps (a cheap MLP stand-in).
    torch.manual_seed(0)
    m, s = torch.tensor(d.mean).view(1, 1, 1, 1), torch.tensor(d.std).view(1, 1, 1, 1)
    x = ((d.train_x.float() / 255 - m) / s).flatten(1)
    xt = ((d.test_x.float() / 255 - m) / s).flatten(1)
    model = torch.nn.Linear(784, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def accuracy():
        return (model(xt).argmax(1) == d.test_y).float().mean().item()

    assert accuracy() < 0.5
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), d.train_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accuracy() > 0.9


def test_train_val_split():
    x, y = torch.arange(100).view(100, 1), torch.arange(100) % 10
    tx, ty, vx, vy = train_val_split(x, y, 20, seed=1)
    assert len(tx) == 80 and len(vx) == 20
    assert sorted(torch.cat([tx, vx]).flatten().tolist()) == list(range(100))
    assert ty.equal(tx.flatten() % 10) and vy.equal(vx.flatten() % 10)
    again = train_val_split(x, y, 20, seed=1)
    other = train_val_split(x, y, 20, seed=2)
    assert again[2].equal(vx) and not other[2].equal(vx)
    assert train_val_split(x, y, 0, seed=0)[2].shape == (0, 1)
    with pytest.raises(ConfigError, match="val_size=100"):
        train_val_split(x, y, 100, seed=0)
