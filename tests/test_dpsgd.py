"""DP-SGD's noisy clipped gradient (profond.privacy.dpsgd, course §12.7.1):
g̃ = (1/B)(Σ clip(g_i, C) + N(0, σ²C²I)). Per-example gradients against a loop of single-example
backward passes (float64), the clipping bound, σ = 0 with huge C giving the ordinary gradient,
the noise's standard deviation σC/B, the surrogate loss whose gradient is g̃, BatchNorm refused,
and the Poisson sampler's batch sizes and independent inclusions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from profond.privacy import (
    PoissonSampler,
    add_noise,
    check_per_example,
    clip_per_example,
    dp_gradient,
    per_example_grads,
    surrogate_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 3)).double()


def _cnn() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).double()


def _data(model: nn.Module, n: int = 7):
    g = torch.Generator().manual_seed(2)
    shape = (n, 6) if isinstance(model[0], nn.Linear) else (n, 1, 6, 6)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def _loop_grads(model: nn.Module, x, y) -> list[dict[str, torch.Tensor]]:
    """Reference: one backward per example, batch of one."""
    out = []
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        out.append({k: p.grad.clone() for k, p in model.named_parameters()})
    return out


@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_per_example_gradients_equal_a_loop_over_examples(make):
    model = make()
    x, y = _data(model)
    got = per_example_grads(model, F.cross_entropy, x, y)
    ref = _loop_grads(model, x, y)
    assert set(got) == {k for k, _ in model.named_parameters()}
    for k, g in got.items():
        assert g.shape == (len(y), *dict(model.named_parameters())[k].shape)
        want = torch.stack([r[k] for r in ref])
        assert torch.allclose(g, want, atol=1e-6, rtol=0), k
        assert (g - want).abs().max() < 1e-12  # float64: the same numbers
    # the examples really differ (the test is not comparing one gradient to itself)
    assert (got["0.weight"][0] - got["0.weight"][1]).abs().max() > 1e-3


@pytest.mark.parametrize("make", [_mlp, _cnn])
def test_clipping_matches_the_loop_and_bounds_every_norm(make):
    model = make()
    x, y = _data(model, 9)
    ref = _loop_grads(model, x, y)
    ref_norms = torch.stack([torch.cat([g.flatten() for g in r.values()]).norm() for r in ref])
    c = float(ref_norms.median())  # some examples clipped, some not
    clipped, norms = clip_per_example(per_example_grads(model, F.cross_entropy, x, y), c)
    assert torch.allclose(norms, ref_norms, rtol=1e-12, atol=0)
    for i, r in enumerate(ref):
        factor = min(1.0, c / float(ref_norms[i]))  # clip(g, C) = g · min(1, C/‖g‖), global norm
        for k, g in r.items():
            assert torch.allclose(clipped[k][i], g * factor, atol=1e-6, rtol=0)
    clipped_norms = torch.cat([g.reshape(len(y), -1) for g in clipped.values()], 1).norm(dim=1)
    assert (clipped_norms <= c * (1 + 1e-12)).all()
    big = ref_norms > c
    assert big.any() and (~big).any()
    assert torch.allclose(clipped_norms[big], torch.full_like(clipped_norms[big], c), rtol=1e-12)
    assert torch.allclose(clipped_norms[~big], ref_norms[~big], rtol=1e-12)


def test_without_noise_or_clipping_it_is_the_ordinary_gradient():
    model = _cnn()
    x, y = _data(model, 10)
    g_tilde = dp_gradient(model, F.cross_entropy, x, y, max_norm=1e12, noise_multiplier=0.0)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()  # mean loss over the batch
    for k, p in model.named_parameters():
        assert torch.allclose(g_tilde[k], p.grad, atol=1e-12, rtol=0), k
    # in chunks of 3 examples: the same sum
    chunked = dp_gradient(model, F.cross_entropy, x, y, max_norm=1e12, noise_multiplier=0.0, chunk_size=3)
    for k in g_tilde:
        assert torch.allclose(chunked[k], g_tilde[k], atol=1e-12, rtol=0)


def test_noise_has_std_sigma_c_over_b_and_comes_from_the_generator():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(100, 50), nn.Tanh(), nn.Linear(50, 10)).double()  # 5560 params
    x, y = torch.randn(8, 100, dtype=torch.float64), torch.randint(0, 10, (8,))
    sigma, c, b = 1.3, 0.5, 16.0  # B = 16 (an expected batch size), 8 examples drawn
    clean = dp_gradient(model, F.cross_entropy, x, y, max_norm=c, noise_multiplier=0.0, batch_size=b)
    noise = []
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        noisy = dp_gradient(model, F.cross_entropy, x, y, max_norm=c, noise_multiplier=sigma,
                            batch_size=b, generator=g)
        noise.append(torch.cat([(noisy[k] - clean[k]).flatten() for k in clean]))
    noise = torch.cat(noise)  # 55 600 draws of N(0, (σC/B)²)
    n, want = noise.numel(), sigma * c / b
    assert float(noise.std()) == pytest.approx(want, rel=5 / (2 * n) ** 0.5)  # 5 standard errors
    assert abs(float(noise.mean())) < 5 * want / n**0.5
    kurt = float(((noise / noise.std()) ** 4).mean())
    assert kurt == pytest.approx(3.0, abs=0.15)  # Gaussian, not uniform (1.8) or Laplace (6)
    # the same seed replays the same noise; a different seed does not
    same = dp_gradient(model, F.cross_entropy, x, y, max_norm=c, noise_multiplier=sigma, batch_size=b,
                       generator=torch.Generator().manual_seed(0))
    first = torch.cat([(same[k] - clean[k]).flatten() for k in clean])
    assert torch.equal(first, noise[:first.numel()])
    assert not torch.equal(first, noise[first.numel():2 * first.numel()])


def test_add_noise_on_an_empty_batch_is_pure_noise():
    model = _mlp()
    x, y = _data(model, 0)
    g = dp_gradient(model, F.cross_entropy, x, y, max_norm=2.0, noise_multiplier=1.0, batch_size=4.0,
                    generator=torch.Generator().manual_seed(0))
    ref = add_noise({k: torch.zeros_like(p) for k, p in model.named_parameters()}, 2.0, 1.0, 4.0,
                    torch.Generator().manual_seed(0))
    for k in ref:
        assert torch.equal(g[k], ref[k]) and g[k].abs().sum() > 0


def test_surrogate_loss_gradient_is_g_tilde():
    model = _cnn()
    x, y = _data(model, 5)
    g_tilde = dp_gradient(model, F.cross_entropy, x, y, max_norm=0.1, noise_multiplier=1.1,
                          generator=torch.Generator().manual_seed(0))
    model.zero_grad()
    surrogate_loss(model, g_tilde).backward()
    for k, p in model.named_parameters():
        assert torch.equal(p.grad, g_tilde[k]), k
    # frozen parameters get no g̃ (only requires_grad parameters count)
    model[0].bias.requires_grad_(False)
    assert "0.bias" not in dp_gradient(model, F.cross_entropy, x, y, max_norm=1.0, noise_multiplier=1.0)


def test_batchnorm_is_refused_naming_the_layer():
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)))
    from profond.scratch.layers import BatchNorm  # the hand-written one is refused too

    with pytest.raises(ValueError, match=r"'0' is BatchNorm.*GroupNorm"):
        check_per_example(nn.Sequential(BatchNorm(4, dims=1)))
    for fn in (lambda: check_per_example(net),
               lambda: per_example_grads(net, F.cross_entropy, torch.randn(3, 4), torch.zeros(3, dtype=torch.long))):
        with pytest.raises(ValueError, match=r"'1\.1' is BatchNorm1d.*GroupNorm"):
            fn()
    check_per_example(_cnn())  # GroupNorm / LayerNorm are per-example: accepted


class _Square(torch.autograd.Function):  # old-style: no setup_context, so no vmap support
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class _SquareLayer(nn.Module):
    def forward(self, x):
        return _Square.apply(x)


def test_a_custom_autograd_function_is_refused_in_one_clear_error():
    net = nn.Sequential(nn.Linear(4, 4), _SquareLayer(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="custom torch.autograd.Function"):
        per_example_grads(net, F.cross_entropy, torch.randn(3, 4), torch.zeros(3, dtype=torch.long))


def test_dropout_runs_with_a_mask_per_example():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 50), nn.Dropout(0.5), nn.Linear(50, 2)).double().train()
    x = torch.randn(1, 5, dtype=torch.float64).repeat(6, 1)  # six copies of one example
    g = per_example_grads(net, F.cross_entropy, x, torch.zeros(6, dtype=torch.long))["0.weight"]
    assert not torch.equal(g[0], g[1])  # different masks, hence different gradients


def test_bad_clip_and_noise():
    with pytest.raises(ValueError, match="max_norm"):
        clip_per_example({"w": torch.ones(2, 3)}, 0.0)
    with pytest.raises(ValueError, match="noise_multiplier"):
        add_noise({"w": torch.ones(3)}, 1.0, -1.0, 4.0)
    with pytest.raises(ValueError, match="batch_size"):
        add_noise({"w": torch.ones(3)}, 1.0, 1.0, 0.0)


def test_poisson_sampler_sizes_and_independent_inclusions():
    n, q, steps = 50, 0.2, 4000
    sampler = PoissonSampler(n, q, steps=steps, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == steps and sampler.expected_batch_size == pytest.approx(10.0)
    m = torch.zeros(steps, n, dtype=torch.float64)
    for s, b in enumerate(batches):
        assert b == sorted(set(b)) and all(0 <= i < n for i in b)  # no repeats, valid indices
        m[s, b] = 1.0
    sizes = m.sum(1)
    # binomial(N, q): mean qN = 10, variance Nq(1−q) = 8 (a fixed-size sampler has variance 0)
    assert float(sizes.mean()) == pytest.approx(n * q, abs=5 * (n * q * (1 - q) / steps) ** 0.5)
    assert float(sizes.var()) == pytest.approx(n * q * (1 - q), rel=0.15)
    assert len(set(sizes.tolist())) > 5
    # each example with probability q, and inclusions uncorrelated: |corr| < 5/√steps for all pairs
    freq = m.mean(0)
    assert (freq - q).abs().max() < 5 * (q * (1 - q) / steps) ** 0.5
    corr = torch.corrcoef(m.T)
    off = corr[~torch.eye(n, dtype=torch.bool)]
    assert off.abs().max() < 5 / steps**0.5
    assert abs(float(off.mean())) < 0.005


def test_poisson_sampler_seeding_epochs_and_state():
    a, b = PoissonSampler(1000, 0.01, seed=7), PoissonSampler(1000, 0.01, seed=7)
    assert len(a) == 100  # round(1/q) batches: every example once in expectation
    first = list(a)
    assert first == list(b)  # same seed, same batches
    state = a.state_dict()
    second = list(a)
    assert second != first  # the next epoch draws afresh
    a.load_state_dict(state)
    assert list(a) == second  # resume replays it
    assert list(PoissonSampler(1000, 0.01, seed=8)) != first
    assert list(PoissonSampler(5, 1.0, steps=2)) == [[0, 1, 2, 3, 4]] * 2  # q = 1: full batches
    for bad in [dict(num_examples=0, sample_rate=0.1), dict(num_examples=10, sample_rate=0.0),
                dict(num_examples=10, sample_rate=1.5), dict(num_examples=10, sample_rate=0.1, steps=0)]:
        with pytest.raises(ValueError):
            PoissonSampler(**bad)
