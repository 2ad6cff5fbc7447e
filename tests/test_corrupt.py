"""Training-data corruptions (profond.data.corrupt) and their use by ``data.corrupt`` in
``split_loaders``: each corruption does what its name says (checked against the definition),
is seeded, and touches the training split only."""

from __future__ import annotations

import pytest
import torch

from profond.data import corrupt as C
from tests.conftest import tiny_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n=200, c=1, h=6, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def test_random_labels_fraction_and_uniformity():
    y = torch.zeros(20_000, dtype=torch.long)
    out = C.random_labels(y, 10, fraction=0.5, seed=3)
    assert torch.equal(y, torch.zeros_like(y))  # input untouched
    changed = (out != 0).float().mean().item()
    # half replaced, of which 9/10 land on another class: 0.45 changed
    assert changed == pytest.approx(0.45, abs=0.015)
    counts = torch.bincount(out, minlength=10)
    assert counts[0].item() == pytest.approx(10_000 + 1_000, abs=150)
    assert ((counts[1:] - 1_000).abs() < 150).all(), counts
    assert torch.equal(out, C.random_labels(y, 10, fraction=0.5, seed=3))
    assert not torch.equal(out, C.random_labels(y, 10, fraction=0.5, seed=4))
    assert torch.equal(C.random_labels(y, 10, fraction=0.0), y)


def test_shuffled_pixels_is_one_permutation_for_all():
    x = images(c=3)
    out = C.shuffled_pixels(x, seed=1)
    perm = C.pixel_permutation(30, seed=1)
    assert sorted(perm.tolist()) == list(range(30)) and not torch.equal(perm, torch.arange(30))
    assert torch.equal(out.reshape(200, 3, 30), x.reshape(200, 3, 30)[:, :, perm])
    half = C.shuffled_pixels(x, fraction=0.5, seed=1)
    same = (half == x).flatten(1).all(1)
    assert same.sum().item() == 100  # exactly the other half is left as it was


def test_random_pixels_keeps_each_histogram_but_not_one_permutation():
    x = images()
    out = C.random_pixels(x, seed=2)
    flat_x, flat_o = x.flatten(1), out.flatten(1)
    assert torch.equal(flat_x.sort(1).values, flat_o.sort(1).values)  # same values per image
    # recover each image's permutation through distinct keys: they differ between images
    keys = torch.arange(30, dtype=torch.float32).view(1, 1, 6, 5).expand(4, 1, 6, 5).contiguous()
    p = C.random_pixels(keys, seed=2).flatten(1)
    assert len({tuple(r.tolist()) for r in p}) == 4


def test_gaussian_images_match_mean_and_std():
    x = torch.cat([images(2000, 1), images(2000, 1, seed=1) // 4], 1)  # 2 channels, different stats
    out = C.gaussian_images(x, seed=0)
    assert out.dtype == torch.uint8 and out.shape == x.shape
    xf, of = x.double(), out.double()
    for ch in range(2):
        assert of[:, ch].mean().item() == pytest.approx(xf[:, ch].mean().item(), rel=0.02)
        # the clip to [0, 255] shrinks the wide channel's spread a little
        assert of[:, ch].std().item() == pytest.approx(xf[:, ch].std().item(), rel=0.08)
    # the noise has no relation to the images: correlation ~ 0
    r = torch.corrcoef(torch.stack([xf[:, 0].flatten(), of[:, 0].flatten()]))[0, 1].item()
    assert abs(r) < 0.02


def test_corrupt_dispatch():
    x, y = images(), torch.arange(200) % 10
    assert C.corrupt(x, y, "none") == (x, y)
    xx, yy = C.corrupt(x, y, "random-labels", seed=0)
    assert xx is x and yy.max().item() <= 9 and (yy != y).any()
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt(x, y, "blur")
    with pytest.raises(ValueError, match="fraction"):
        C.random_labels(y, 10, fraction=1.5)


def test_split_loaders_corrupts_the_training_split_only(tmp_path):
    from profond.contract import Env
    from profond.methods.imagedata import load_image_data, split_loaders

    def split(*o):
        cfg = tiny_cfg(tmp_path, *o)
        env = Env(device=torch.device("cpu"))
        data = load_image_data(cfg, env)
        norm = {"mean": data.mean, "std": data.std}
        tr, va = split_loaders(cfg, env, data.train_x, data.train_y, norm=norm, num_classes=10)
        return tr, va

    clean_t, clean_v = split()
    lab_t, lab_v = split("data.corrupt=random-labels")
    assert torch.equal(lab_t.x, clean_t.x) and torch.equal(lab_v.y, clean_v.y) and torch.equal(lab_v.x, clean_v.x)
    agree = (lab_t.y == clean_t.y).float().mean().item()
    assert agree == pytest.approx(0.1, abs=0.04)  # chance agreement with 10 classes
    again_t, _ = split("data.corrupt=random-labels")
    assert torch.equal(again_t.y, lab_t.y)  # seeded by train.seed
    other_t, _ = split("data.corrupt=random-labels", "train.seed=1")
    assert not torch.equal(other_t.y, lab_t.y)
    sub_t, _ = split("data.corrupt=gaussian", "data.subset=100")
    assert len(sub_t.x) == 100 and torch.equal(sub_t.y, clean_t.y[:100]) and not torch.equal(sub_t.x, clean_t.x[:100])


def test_config_refuses_bad_values(tmp_path):
    from profond.errors import ConfigError

    with pytest.raises(ConfigError):
        tiny_cfg(tmp_path, "data.corrupt_fraction=1.5")
    with pytest.raises(ConfigError):
        tiny_cfg(tmp_path, "data.corrupt=blur")
