"""Fixtures shared by the tests of profond.data (imported explicitly by those tests)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from profond.data import vision
from profond.data.idx import write_idx

FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


def make_fake_idx_dataset(folder: Path, n_train: int, n_test: int = 3, seed: int = 0) -> dict:
    """Write a tiny MNIST-like dataset (4 gzip IDX files) into ``folder``; return its arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        write_idx(folder / name, a)
    return arrays


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """Isolate dataset lookup: fake HOME/XDG cache, no $PROFOND_DATA, a tmp system folder.

    Returns a dict of the places: ``cache`` and ``system`` roots (created empty).
    """
    home, cache, system = tmp_path / "home", tmp_path / "xdg-cache", tmp_path / "system"
    for d in (home, cache, system):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("PROFOND_DATA", raising=False)
    for name in vision.BASE_URLS:
        monkeypatch.delenv("PROFOND_DATA_URL_" + name.upper().replace("-", "_"), raising=False)
    monkeypatch.setattr(vision, "SYSTEM_DIRS", [system])
    vision._load_cached.cache_clear()
    yield {"cache": cache / "profond", "system": system, "tmp": tmp_path}
    vision._load_cached.cache_clear()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture
def http_dir(tmp_path):
    """Serve a fresh folder on 127.0.0.1 from a thread; yields ``(folder, base_url)``."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
