"""Hand-written-backward layers (profond.scratch.layers) against gradcheck and torch.nn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from profond.scratch import layers as sl

D = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _rand(*shape, seed=0, requires_grad=True):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=D).requires_grad_(requires_grad)


# --------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 3, 2)])
@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_batchnorm(shape, training):
    x = _rand(*shape)
    c = shape[1]
    w, b = _rand(c, seed=1), _rand(c, seed=2)
    rm, rv = _rand(c, seed=3, requires_grad=False), _rand(c, seed=4, requires_grad=False).abs() + 0.5
    assert torch.autograd.gradcheck(
        lambda x, w, b: sl.BatchNormFunction.apply(x, w, b, rm, rv, training, 1e-5), (x, w, b))
    # no affine parameters
    assert torch.autograd.gradcheck(
        lambda x: sl.BatchNormFunction.apply(x, None, None, rm, rv, training, 1e-5), (x,))


@pytest.mark.parametrize("shape,k", [((3, 5), 1), ((2, 3, 2, 3), 2)])
def test_gradcheck_layernorm_rmsnorm(shape, k):
    x = _rand(*shape)
    w, b = _rand(*shape[-k:], seed=1), _rand(*shape[-k:], seed=2)
    assert torch.autograd.gradcheck(
        lambda x, w, b: sl.LayerNormFunction.apply(x, w, b, k, 1e-5), (x, w, b))
    assert torch.autograd.gradcheck(lambda x: sl.LayerNormFunction.apply(x, None, None, k, 1e-5),
                                    (x,))
    assert torch.autograd.gradcheck(lambda x, w: sl.RMSNormFunction.apply(x, w, k, 1e-6), (x, w))
    assert torch.autograd.gradcheck(lambda x: sl.RMSNormFunction.apply(x, None, k, 1e-6), (x,))


def test_gradcheck_dropout():
    x = _rand(4, 5)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(1)) >= 0.3
    assert torch.autograd.gradcheck(lambda x: sl.DropoutFunction.apply(x, mask, 0.3), (x,))


# ------------------------------------------------------------- against torch.nn


def _compare(ours, ref, x, params=("weight", "bias"), atol=1e-10):
    """Same output and same gradients (input + parameters) for a random upstream gradient."""
    xa, xb = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, atol=atol, rtol=0)
    up = _rand(*ya.shape, seed=99, requires_grad=False)
    (ya * up).sum().backward()
    (yb * up).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=atol, rtol=0)
    for name in params:
        pa, pb = getattr(ours, name), getattr(ref, name)
        if pa is None:
            assert pb is None
            continue
        torch.testing.assert_close(pa.grad, pb.grad, atol=atol, rtol=0)
        pa.grad = pb.grad = None


def _copy_params(ours, ref, seed=5):
    with torch.no_grad():
        for i, (name, p) in enumerate(ref.named_parameters()):
            p.copy_(_rand(*p.shape, seed=seed + i, requires_grad=False))
            getattr(ours, name).copy_(p)


@pytest.mark.parametrize("dims,shape,ref_cls", [
    (1, (8, 4), nn.BatchNorm1d),
    (1, (6, 4, 5), nn.BatchNorm1d),
    (2, (4, 3, 5, 5), nn.BatchNorm2d),
])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_batchnorm_matches_torch(dims, shape, ref_cls, affine, momentum):
    c = shape[1]
    ours = sl.BatchNorm(c, dims=dims, momentum=momentum, affine=affine).double()
    ref = ref_cls(c, momentum=momentum, affine=affine).double()
    if affine:
        _copy_params(ours, ref)
    for step in range(4):      # several training steps: running statistics must follow torch
        x = _rand(*shape, seed=step) * 3 + 1.5
        _compare(ours, ref, x)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-12, rtol=0)
        torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-12, rtol=0)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    ours.eval()
    ref.eval()
    _compare(ours, ref, _rand(*shape, seed=42))
    # eval mode does not touch the running statistics
    before = ours.running_mean.clone()
    ours(_rand(*shape, seed=43))
    torch.testing.assert_close(ours.running_mean, before, atol=0, rtol=0)
    assert ours.state_dict().keys() == ref.state_dict().keys()


def test_batchnorm_input_checks():
    bn = sl.BatchNorm(3, dims=2)
    with pytest.raises(ValueError):
        bn(torch.randn(4, 3))
    with pytest.raises(ValueError):
        sl.BatchNorm(3)(torch.randn(1, 3))          # one value per channel in training
    with pytest.raises(ValueError):
        sl.BatchNorm(3)(torch.randn(4, 5))
    with pytest.raises(ValueError):
        sl.BatchNorm(3, dims=3)


@pytest.mark.parametrize("normalized_shape,shape", [(6, (4, 6)), ((3, 4), (2, 5, 3, 4))])
@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_matches_torch(normalized_shape, shape, affine):
    ours = sl.LayerNorm(normalized_shape, elementwise_affine=affine).double()
    ref = nn.LayerNorm(normalized_shape, elementwise_affine=affine).double()
    if affine:
        _copy_params(ours, ref)
    for mode in ("train", "eval"):
        ours.train(mode == "train")
        ref.train(mode == "train")
        _compare(ours, ref, _rand(*shape) * 2 - 1)


@pytest.mark.parametrize("normalized_shape,shape", [(6, (4, 6)), ((3, 4), (2, 5, 3, 4))])
@pytest.mark.parametrize("eps", [None, 1e-5])
@pytest.mark.parametrize("affine", [True, False])
def test_rmsnorm_matches_torch(normalized_shape, shape, eps, affine):
    ours = sl.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine).double()
    ref = nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine).double()
    if affine:
        _copy_params(ours, ref)
    for mode in ("train", "eval"):
        ours.train(mode == "train")
        ref.train(mode == "train")
        _compare(ours, ref, _rand(*shape) * 0.1, params=("weight",))


def test_rmsnorm_default_eps_follows_input_dtype():
    # float32 input, tiny values: the finfo(float32) eps is visible in the output
    x = torch.full((2, 4), 1e-4)
    torch.testing.assert_close(sl.RMSNorm(4)(x), nn.RMSNorm(4)(x))


# ---------------------------------------------------------------------- dropout


def test_dropout_statistics_and_gradient():
    torch.manual_seed(0)
    p = 0.3
    drop = sl.Dropout(p)
    x = torch.full((400, 500), 2.0, dtype=D, requires_grad=True)
    y = drop(x)
    zero_frac = (y == 0).double().mean().item()
    assert abs(zero_frac - p) < 0.01                       # 200k draws: σ ≈ 0.001
    assert abs(y.mean().item() - 2.0) < 0.02               # E[y] = x (inverted dropout)
    kept = y != 0
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 2.0 / (1 - p)))
    up = torch.randn_like(y)
    (y * up).sum().backward()
    torch.testing.assert_close(x.grad, up * kept.double() / (1 - p), atol=1e-14, rtol=0)


def test_dropout_eval_identity_and_edge_cases():
    x = torch.randn(5, 7, dtype=D)
    drop = sl.Dropout(0.5).eval()
    assert drop(x) is x
    assert sl.Dropout(0.0)(x) is x
    assert (sl.Dropout(1.0)(x) == 0).all()
    with pytest.raises(ValueError):
        sl.Dropout(1.5)
