"""Attention-map figures (profond.viz.attention): a valid PNG of the expected grid, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from profond.errors import ConfigError
from profond.viz import attention as va

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def softmax_maps(h: int, nq: int, nk: int, seed: int = 0) -> np.ndarray:
    z = np.random.default_rng(seed).normal(size=(h, nq, nk))
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def captured(monkeypatch):
    """Record the figure's heatmap axes before it is saved (and still save it)."""
    seen: dict = {}
    real = va.save_figure

    def spy(fig, path):
        seen["panels"] = [ax for ax in fig.axes if ax.images and ax.get_title()]
        seen["titles"] = [ax.get_title() for ax in seen["panels"]]
        seen["ticks"] = [len(ax.get_xticks()) for ax in seen["panels"]]
        seen["colorbars"] = [ax for ax in fig.axes if ax.get_ylabel() == "attention weight α"]
        return real(fig, path)

    monkeypatch.setattr(va, "save_figure", spy)
    return seen


def test_grid_png(tmp_path, captured):
    toks = list("abcdef")
    maps = {"layer 0": softmax_maps(3, 6, 6), "layer 1": torch.from_numpy(softmax_maps(3, 6, 6, 1))}
    out = va.draw_attention_maps(maps, toks, toks, tmp_path / "sub" / "maps.png", title="two layers")
    assert out == tmp_path / "sub" / "maps.png"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000
    assert len(captured["panels"]) == 6  # 2 layers x 3 heads
    assert captured["titles"][0] == "layer 0 · head 0" and captured["titles"][-1] == "layer 1 · head 2"
    assert len(captured["colorbars"]) == 1
    assert not list(tmp_path.glob("sub/.*.tmp"))  # atomic write leaves no temporary file


def test_max_heads_and_2d_and_cross(tmp_path, captured):
    q, k = list("xyz"), ["k0", "k1", "k2", "k3", "k4"]
    maps = {"enc-dec": softmax_maps(4, 3, 5), "single": softmax_maps(1, 3, 5)[0]}  # (Nq, Nk) = one head
    va.draw_attention_maps(maps, q, k, tmp_path / "m.png", max_heads=2)
    assert len(captured["panels"]) == 3  # 2 heads of the first layer + 1 of the second
    img = __import__("matplotlib.image", fromlist=["imread"]).imread(tmp_path / "m.png")
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > img.shape[0]  # wider than tall: 2 columns


def test_many_tokens_are_thinned(tmp_path, captured):
    toks = [f"t{i}" for i in range(200)]
    va.draw_attention_maps({"L": softmax_maps(1, 200, 200)}, toks, toks, tmp_path / "big.png")
    assert 1 < captured["ticks"][0] <= va.MAX_TICKS


@pytest.mark.parametrize("maps, match", [
    ({"L": np.zeros((2, 3, 4, 4))}, "expected \\(H, Nq, Nk\\)"),
    ({"L": np.zeros((2, 3, 5))}, "3 query tokens and 4 key tokens"),
    ({"L": np.zeros((0, 3, 4))}, "no head"),
    ({"L": np.full((1, 3, 4), np.nan)}, "NaN"),
    ({}, "no maps"),
])
def test_bad_shapes(tmp_path, maps, match):
    with pytest.raises(ConfigError, match=match):
        va.draw_attention_maps(maps, list("abc"), list("abcd"), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_bad_max_heads(tmp_path):
    with pytest.raises(ConfigError, match="max_heads"):
        va.draw_attention_maps({"L": softmax_maps(2, 3, 3)}, list("abc"), list("abc"), tmp_path / "x.png",
                               max_heads=0)
