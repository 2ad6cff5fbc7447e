"""Magnitude-pruning masks (profond.metrics.pruning, course §11.7, remark 11.18) on tensors whose
answer is known: exact counts, the smallest magnitudes removed, layer-wise against global
pruning, pruning a fraction of what *remains*, random masks with the same per-layer counts, and
the weights that are prunable (Linear / Conv weights, never biases)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from profond.metrics.pruning import (
    apply_masks,
    full_masks,
    layer_fractions,
    magnitude_masks,
    prunable_weights,
    random_masks,
    remaining_fraction,
)


def _ones(*shapes):
    return {f"l{i}": torch.ones(s, dtype=torch.bool) for i, s in enumerate(shapes)}


def test_prunable_weights_are_linear_and_conv_weights_only():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 5),
                        nn.LayerNorm(5), nn.Linear(5, 2))
    assert list(prunable_weights(net)) == ["0.weight", "4.weight", "6.weight"]
    masks = full_masks(net)
    assert {k: m.shape for k, m in masks.items()} == {"0.weight": (3, 1, 3, 3), "4.weight": (5, 12), "6.weight": (2, 5)}
    assert all(m.all() and m.dtype == torch.bool for m in masks.values())
    assert remaining_fraction(masks) == 1.0


def test_layerwise_removes_exactly_the_smallest_magnitudes():
    w = {"l0": torch.tensor([[0.5, -0.1, 0.3, -0.9, 0.2], [0.05, -0.7, 0.8, -0.4, 0.6]])}
    m = magnitude_masks(w, _ones((2, 5)), 0.3)  # round(0.3 · 10) = 3 removed: 0.05, -0.1, 0.2
    expected = torch.tensor([[True, False, True, True, False], [False, True, True, True, True]])
    assert torch.equal(m["l0"], expected)
    # next round: 20% of the 7 that remain (round(1.4) = 1): the smallest survivor, 0.3
    m2 = magnitude_masks(w, m, 0.2)
    expected[0, 2] = False
    assert torch.equal(m2["l0"], expected)
    assert int(m2["l0"].sum()) == 6


def test_a_fraction_of_the_remaining_weights_each_round():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(100, 50, generator=g), "b": torch.randn(10, 100, generator=g)}
    m = {k: torch.ones_like(v, dtype=torch.bool) for k, v in w.items()}
    kept_a, kept_b = 5000, 1000
    for _ in range(6):
        m = magnitude_masks(w, m, {"a": 0.2, "b": 0.1})
        kept_a -= round(0.2 * kept_a)
        kept_b -= round(0.1 * kept_b)
        assert (int(m["a"].sum()), int(m["b"].sum())) == (kept_a, kept_b)
    assert (kept_a, kept_b) == (1310, 531)  # 5000 · 0.8^6 ≈ 1311, 1000 · 0.9^6 ≈ 531, rounding each round
    # a pruned weight never comes back, even when its trained value is now large
    w2 = {k: v + 100.0 * (~m[k]) for k, v in w.items()}
    m3 = magnitude_masks(w2, m, 0.2)
    assert not (m3["a"] & ~m["a"]).any() and not (m3["b"] & ~m["b"]).any()
    assert remaining_fraction(m3) == pytest.approx((kept_a - round(0.2 * kept_a) + kept_b - round(0.2 * kept_b)) / 6000)


def test_global_pools_the_layers_layerwise_does_not():
    # layer a has all the small weights: global pruning takes them all from a, layer-wise takes half of each
    w = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    ones = _ones(4, 4)
    ones = {"a": ones["l0"], "b": ones["l1"]}
    glob = magnitude_masks(w, ones, 0.5, scope="global")
    assert torch.equal(glob["a"], torch.zeros(4, dtype=torch.bool)) and glob["b"].all()
    layer = magnitude_masks(w, ones, 0.5, scope="layer")
    assert torch.equal(layer["a"], torch.tensor([False, False, True, True]))
    assert torch.equal(layer["b"], torch.tensor([False, False, True, True]))
    assert layer_fractions(glob) == {"a": 0.0, "b": 1.0} and layer_fractions(layer) == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="one rate"):
        magnitude_masks(w, ones, {"a": 0.5, "b": 0.5}, scope="global")
    with pytest.raises(ValueError, match="scope"):
        magnitude_masks(w, ones, 0.5, scope="neuron")


def test_random_masks_keep_each_layers_count():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(30, 20, generator=g), "b": torch.randn(7, 30, generator=g)}
    m = magnitude_masks(w, {k: torch.ones_like(v, dtype=torch.bool) for k, v in w.items()}, {"a": 0.7, "b": 0.3})
    r = random_masks(m, torch.Generator().manual_seed(1))
    assert {k: int(v.sum()) for k, v in r.items()} == {k: int(v.sum()) for k, v in m.items()} == {"a": 180, "b": 147}
    assert not torch.equal(r["a"], m["a"])  # elsewhere than the magnitude mask
    # the kept places are spread uniformly: over 200 draws each place of a is kept ~30% of the time
    freq = torch.stack([random_masks(m, torch.Generator().manual_seed(s))["a"] for s in range(200)]).float().mean(0)
    assert freq.mean().item() == pytest.approx(0.3, abs=1e-6)
    assert freq.min().item() > 0.12 and freq.max().item() < 0.5


def test_apply_masks_zeroes_pruned_weights_and_leaves_biases():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    masks = magnitude_masks(prunable_weights(net), full_masks(net), 0.5)
    apply_masks(net, masks)
    for k, m in masks.items():
        w = net.state_dict()[k]
        assert (w[~m] == 0).all() and torch.equal(w[m], before[k][m])
        assert int((w == 0).sum()) == m.numel() // 2
    assert torch.equal(net[0].bias, before["0.bias"]) and torch.equal(net[2].bias, before["2.bias"])
