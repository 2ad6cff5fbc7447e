"""Batches: coverage, determinism, resuming mid-epoch, rank slices, normalisation."""

from __future__ import annotations

import pytest
import torch

from profond.data import Batches, build_augment
from profond.errors import ConfigError

N = 103


def data(n=N, c=1, hw=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, hw, hw), dtype=torch.uint8, generator=g)
    y = torch.arange(n)  # the label is the example's index: easy to track
    return x, y


def collect(loader, epoch=0, start=0):
    return list(loader.batches(epoch, start))


def same(a, b):
    return len(a) == len(b) and all(
        xa.equal(xb) and ya.equal(yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True)
    )


def test_every_index_exactly_once_per_epoch():
    x, y = data()
    loader = Batches(x, y, batch_size=10, shuffle=True, seed=1)
    assert len(loader) == 11 and loader.num_samples == N
    for epoch in range(3):
        seen = torch.cat([yb for _, yb in loader.batches(epoch)])
        assert sorted(seen.tolist()) == list(range(N))
        assert seen.tolist() != list(range(N))  # shuffled
    assert [len(yb) for _, yb in collect(loader)] == [10] * 10 + [3]


def test_drop_last():
    x, y = data()
    loader = Batches(x, y, batch_size=10, shuffle=True, drop_last=True)
    assert len(loader) == 10 and loader.num_samples == 100
    assert all(len(yb) == 10 for _, yb in collect(loader))


def test_no_shuffle_is_in_order():
    x, y = data()
    loader = Batches(x, y, batch_size=32, shuffle=False)
    assert torch.cat([yb for _, yb in loader]).tolist() == list(range(N))


def test_same_seed_same_batches_and_epochs_differ():
    x, y = data()
    aug = build_augment(["crop", "flip"])
    a = Batches(x, y, batch_size=16, shuffle=True, seed=3, augment=aug)
    b = Batches(x, y, batch_size=16, shuffle=True, seed=3, augment=aug)
    c = Batches(x, y, batch_size=16, shuffle=True, seed=4, augment=aug)
    assert same(collect(a, 2), collect(b, 2))
    assert not same(collect(a, 2), collect(c, 2))
    assert not same(collect(a, 1), collect(a, 2))


def test_epoch_does_not_depend_on_history():
    x, y = data()
    aug = build_augment(["crop", "flip"], mixup_alpha=0.2, num_classes=N)
    a = Batches(x, y, batch_size=16, shuffle=True, seed=3, augment=aug)
    collect(a, 0), collect(a, 1)
    fresh = Batches(x, y, batch_size=16, shuffle=True, seed=3, augment=aug)
    assert same(collect(a, 2), collect(fresh, 2))


@pytest.mark.parametrize("start", [0, 1, 4, 6, 7])
def test_start_yields_the_tail_of_the_epoch(start):
    x, y = data()
    aug = build_augment(["crop", "flip", "affine"], cutmix_alpha=1.0, num_classes=N)
    loader = Batches(x, y, batch_size=16, shuffle=True, seed=5, augment=aug)
    full = collect(loader, epoch=3)
    assert len(full) == 7
    assert same(collect(loader, 3, start), full[start:])


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("n", [96, 103, 98])
def test_rank_slices_concatenate_to_the_single_process_batch(world_size, n):
    x, y = data(n=n)
    aug = build_augment(["crop", "flip"], mixup_alpha=0.4, num_classes=n)
    kw = dict(batch_size=16, shuffle=True, seed=9, augment=aug)
    single = collect(Batches(x, y, **kw), epoch=1)
    ranks = [
        collect(Batches(x, y, rank=r, world_size=world_size, **kw), epoch=1)
        for r in range(world_size)
    ]
    lens = {len(r) for r in ranks}
    assert len(lens) == 1  # every rank runs the same number of steps
    rest = n % 16
    expected_batches = n // 16 + (1 if rest >= world_size else 0)
    assert lens == {expected_batches}
    for k in range(expected_batches):
        xs = torch.cat([r[k][0] for r in ranks])
        ys = torch.cat([r[k][1] for r in ranks])
        assert xs.equal(single[k][0]) and ys.equal(single[k][1])
    for r in range(world_size):
        loader = Batches(x, y, rank=r, world_size=world_size, **kw)
        assert loader.num_samples == sum(len(b[1]) for b in ranks[r])
    assert [len(b[1]) for b in ranks[0][:-1]] == [16 // world_size] * (expected_batches - 1)


def test_rank_slices_without_augmentation():
    x, y = data()
    single = collect(Batches(x, y, batch_size=12, shuffle=True, seed=2))
    r0 = collect(Batches(x, y, batch_size=12, shuffle=True, seed=2, rank=0, world_size=3))
    assert r0[0][1].equal(single[0][1][:4]) and r0[0][0].equal(single[0][0][:4])


def test_batch_size_must_divide_by_world_size():
    x, y = data()
    with pytest.raises(ConfigError, match="not divisible by the world size 4"):
        Batches(x, y, batch_size=10, shuffle=True, world_size=4, rank=0)
    with pytest.raises(ConfigError, match="rank 2 of world size 2"):
        Batches(x, y, batch_size=10, shuffle=True, world_size=2, rank=2)


def test_normalisation_matches_formula():
    x, y = data(c=3)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.2)
    loader = Batches(x, y, batch_size=50, shuffle=False, mean=mean, std=std)
    xb, yb = next(iter(loader))
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    expected = (x[:50].float() / 255 - m) / s
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    torch.testing.assert_close(xb, expected, rtol=0, atol=1e-6)


def test_float_input_is_not_rescaled():
    x, y = data()
    xf = x.float() / 255
    a = next(iter(Batches(x, y, batch_size=8, shuffle=False)))[0]
    b = next(iter(Batches(xf, y, batch_size=8, shuffle=False)))[0]
    torch.testing.assert_close(a, b)


def test_soft_targets_with_mixup():
    x, _ = data()
    y = torch.randint(0, 10, (N,))
    aug = build_augment([], mixup_alpha=0.2, num_classes=10)
    loader = Batches(x, y, batch_size=16, shuffle=True, augment=aug, num_classes=10)
    xb, yb = next(loader.batches(0))
    assert loader.soft_targets and yb.shape == (16, 10) and yb.dtype == torch.float32
    torch.testing.assert_close(yb.sum(1), torch.ones(16))
    with pytest.raises(ConfigError, match="10-class soft targets"):
        Batches(x, y, batch_size=16, shuffle=True, augment=aug, num_classes=5)


def test_channels_last_and_device_copy_once():
    x, y = data(c=3)
    loader = Batches(x, y, batch_size=8, shuffle=True, channels_last=True)
    xb, _ = next(loader.batches(0))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    assert loader.x.dtype == torch.uint8 and loader.x.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_equal_cpu_batches():
    x, y = data()
    aug = build_augment(["crop", "flip"])
    cpu = collect(Batches(x, y, batch_size=16, shuffle=True, augment=aug))
    gpu = collect(Batches(x, y, batch_size=16, shuffle=True, augment=aug, device="cuda"))
    for (a, ya), (b, yb) in zip(cpu, gpu, strict=True):
        assert b.device.type == "cuda"
        torch.testing.assert_close(a, b.cpu(), rtol=0, atol=1e-6)
        assert ya.equal(yb.cpu())
