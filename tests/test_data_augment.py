"""Batched augmentations: each transform checked against a by-hand computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from profond.data.augment import (
    Augment,
    CutMix,
    Mixup,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    affine_theta,
    build_augment,
)
from profond.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(b=16, c=3, h=12, w=10, seed=0):
    return torch.rand(b, c, h, w, generator=gen(seed))


# -- crop --------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_crop_equals_manual_crop_of_padded_image(pad):
    x = batch()
    crop = RandomCrop(pad)
    offsets = crop.sample(x, gen(3))
    out = crop(x, gen(3))  # same seed: the same offsets are drawn
    padded = F.pad(x, (pad, pad, pad, pad))
    assert out.shape == x.shape
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert 0 <= dy <= 2 * pad and 0 <= dx <= 2 * pad
        torch.testing.assert_close(out[i], padded[i, :, dy : dy + 12, dx : dx + 10], rtol=0, atol=0)
    assert len({tuple(o) for o in offsets.tolist()}) > 1  # offsets differ between samples


def test_crop_default_padding_depends_on_size():
    assert RandomCrop().pad_for(torch.zeros(1, 3, 32, 32)) == 4
    assert RandomCrop().pad_for(torch.zeros(1, 1, 28, 28)) == 2
    assert RandomCrop().pad_for(torch.zeros(1, 1, 8, 8)) == 1
    assert RandomCrop(0)(batch(), gen()).equal(batch())


def test_crop_zero_fill_is_visible_when_shifted():
    x = torch.ones(64, 1, 8, 8)
    out = RandomCrop(2)(x, gen(1))
    border = (out == 0).flatten(1).any(1)
    assert border.any() and (out[~border] == 1).all()  # unshifted samples are untouched


# -- flip --------------------------------------------------------------------------------


def test_flip_flips_exactly_the_chosen_samples():
    x = batch(b=64)
    flip = RandomFlip(0.5)
    mask = flip.sample(x, gen(5))
    out = flip(x, gen(5))
    assert 0 < mask.sum() < 64
    assert out[mask].equal(x[mask].flip(-1))
    assert out[~mask].equal(x[~mask])


def test_flip_probability_extremes():
    x = batch()
    assert RandomFlip(0.0)(x, gen()).equal(x)
    assert RandomFlip(1.0)(x, gen()).equal(x.flip(-1))


# -- affine ------------------------------------------------------------------------------


def apply_theta(x, theta):
    return RandomAffine().apply(x, theta)


def test_affine_identity():
    x = batch(b=4)
    theta = affine_theta(torch.zeros(4), torch.zeros(4, 2), torch.ones(4), 12, 10)
    torch.testing.assert_close(apply_theta(x, theta), x, atol=1e-5, rtol=0)


def test_affine_rotation_by_90_degrees_is_rot90():
    x = batch(b=3, h=9, w=9)
    theta = affine_theta(torch.full((3,), 90.0), torch.zeros(3, 2), torch.ones(3), 9, 9)
    torch.testing.assert_close(
        apply_theta(x, theta), torch.rot90(x, 1, (-2, -1)), atol=1e-5, rtol=0
    )


def test_affine_translation_moves_right_and_down():
    x = batch(b=2, h=10, w=10)
    theta = affine_theta(torch.zeros(2), torch.tensor([[0.2, 0.1]] * 2), torch.ones(2), 10, 10)
    out = apply_theta(x, theta)  # +2 px right, +1 px down, zeros come in
    torch.testing.assert_close(out[..., 1:, 2:], x[..., :-1, :-2], atol=1e-5, rtol=0)
    assert out[..., :1, :].abs().max() == 0 and out[..., :, :2].abs().max() == 0


def test_affine_random_parameters_stay_in_range():
    x = batch(b=256, h=8, w=8)
    theta = RandomAffine(degrees=15, translate=0.1, scale=(0.9, 1.1)).sample(x, gen(2))
    lin = theta[:, :, :2]
    det = torch.linalg.det(lin)  # 1/scale^2
    assert ((det > 1 / 1.1**2 - 1e-5) & (det < 1 / 0.9**2 + 1e-5)).all()
    angle = torch.rad2deg(torch.atan2(lin[:, 1, 0], lin[:, 0, 0]))
    assert angle.abs().max() <= 15 + 1e-4 and angle.abs().max() > 10
    out = RandomAffine(15)(x, gen(2))
    assert out.shape == x.shape and not out.equal(x)


# -- mixup / cutmix ----------------------------------------------------------------------


def test_mixup_mixes_inputs_and_targets_with_the_same_lambda():
    x, y = batch(b=32), torch.randint(0, 10, (32,), generator=gen(1))
    mix = Mixup(alpha=0.4, num_classes=10)
    lam, perm = mix.sample(x, gen(7))
    xo, yo = mix(x, y, gen(7))
    assert 0 < lam < 1
    torch.testing.assert_close(xo, lam * x + (1 - lam) * x[perm])
    assert yo.shape == (32, 10) and yo.dtype == torch.float32
    torch.testing.assert_close(yo.sum(1), torch.ones(32))
    expected = lam * F.one_hot(y, 10) + (1 - lam) * F.one_hot(y[perm], 10)
    torch.testing.assert_close(yo, expected.float())


def test_cutmix_lambda_is_the_pasted_area_fraction():
    b, h, w = 16, 12, 10
    x = torch.arange(1, b + 1, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, h, w).clone()
    y = torch.arange(b) % 10
    seen_partial_box = False
    for seed in range(20):
        cut = CutMix(alpha=1.0, num_classes=10)
        lam, perm, _box = cut.sample(x, gen(seed))
        xo, yo = cut(x, y, gen(seed))
        for i in range(b):
            if perm[i] == i:
                continue
            own = (xo[i] == x[i, 0, 0, 0]).float().mean().item()
            assert own == pytest.approx(lam, abs=1e-6)
            other = (xo[i] == x[perm[i], 0, 0, 0]).float().mean().item()
            assert own + other == pytest.approx(1.0)
        torch.testing.assert_close(yo.sum(1), torch.ones(b))
        for i in range(b):
            soft = lam * F.one_hot(y[i], 10) + (1 - lam) * F.one_hot(y[perm[i]], 10)
            torch.testing.assert_close(yo[i], soft.float())
        seen_partial_box |= 0 < lam < 1
    assert seen_partial_box


def test_both_mixers_each_get_picked():
    aug = build_augment([], mixup_alpha=0.2, cutmix_alpha=1.0, num_classes=10)
    x, y = batch(b=8, h=16, w=16), torch.arange(8)
    kinds = set()
    for seed in range(30):
        xo, _ = aug(x, y, gen(seed))
        # CutMix leaves a part of every image untouched; Mixup blends every pixel.
        kinds.add("cutmix" if (xo == x).flatten(1).any(1).all() else "mixup")
    assert kinds == {"mixup", "cutmix"}


# -- pipeline and specs ------------------------------------------------------------------


def test_build_augment_parses_specs():
    assert build_augment([]) is None and build_augment(None) is None
    aug = build_augment(["crop:2", "flip", "affine:15"], num_classes=10)
    assert isinstance(aug, Augment) and not aug.soft_targets
    crop, flip, affine = aug.transforms
    assert crop.padding == 2 and flip.p == 0.5 and affine.degrees == 15
    assert build_augment(["crop"]).transforms[0].padding is None
    assert build_augment(["flip:0.25"]).transforms[0].p == 0.25
    mixed = build_augment([], mixup_alpha=0.2, num_classes=7)
    assert mixed.soft_targets and mixed.num_classes == 7


@pytest.mark.parametrize("spec", ["rotate", "crop:x", "crop:-1", "flip:2", "affine:400", "cutout"])
def test_bad_spec_lists_valid_ones(spec):
    with pytest.raises(ConfigError) as e:
        build_augment([spec])
    assert "crop[:PAD]" in str(e.value) and "flip[:P]" in str(e.value)
    assert "affine[:DEGREES]" in str(e.value) and repr(spec) in str(e.value)


def test_negative_alpha_is_config_error():
    with pytest.raises(ConfigError, match="mixup_alpha"):
        build_augment([], mixup_alpha=-1)


def test_pipeline_is_a_function_of_the_generator_seed():
    aug = build_augment(["crop", "flip", "affine"], mixup_alpha=0.2, num_classes=10)
    x, y = batch(b=32, c=1, h=28, w=28), torch.randint(0, 10, (32,))
    a = aug(x, y, gen(11))
    b = aug(x, y, gen(11))
    c = aug(x, y, gen(12))
    assert a[0].equal(b[0]) and a[1].equal(b[1])
    assert not a[0].equal(c[0])
