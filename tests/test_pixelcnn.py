"""PixelCNN and Gated PixelCNN (van den Oord et al. 2016a, 2016b): the masks, exact causality
(∂ output_i / ∂ x_j = 0 for every j at or after i in raster order, over the whole net), the blind
spot of the plain PixelCNN that the gated stacks remove, class conditioning, code inputs and the
builders' checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from profond.errors import ConfigError
from profond.models.pixelcnn import GatedPixelCNN, MaskedConv2d, PixelCNN, causal_mask, down_shift
from profond.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")


def jacobian_support(model: torch.nn.Module, shape: tuple[int, int, int], y: torch.Tensor | None = None,
                     seed: int = 0) -> torch.Tensor:
    """``S[i, j] = max |∂ logits of pixel i / ∂ x_j|`` over all levels and channels of both, for a
    random float64 input of ``shape``, pixels in raster order: one backward pass per output pixel."""
    torch.manual_seed(seed)
    c, h, w = shape
    model = model.double()
    x = torch.rand(1, c, h, w, dtype=torch.float64, requires_grad=True)
    logits = model(x, y)                                   # (1, K, C, H, W)
    d = h * w
    S = torch.zeros(d, d, dtype=torch.float64)
    w_out = torch.randn_like(logits)                       # a random projection of the outputs
    for i in range(d):
        r, q = divmod(i, w)
        (g,) = torch.autograd.grad((logits[..., r, q] * w_out[..., r, q]).sum(), x, retain_graph=True)
        S[i] = g[0].abs().amax(0).flatten()                # max over input channels: (H·W,)
    return S


def test_masks_are_the_papers():
    a = torch.tensor([[1., 1, 1], [1, 0, 0], [0, 0, 0]])
    b = torch.tensor([[1., 1, 1], [1, 1, 0], [0, 0, 0]])
    v = torch.tensor([[1., 1, 1], [1, 1, 1], [0, 0, 0]])
    assert torch.equal(causal_mask(3, 3, "A"), a)
    assert torch.equal(causal_mask(3, 3, "B"), b)
    assert torch.equal(causal_mask(3, 3, "V"), v)
    assert torch.equal(causal_mask(1, 5, "A"), torch.tensor([[1., 1, 0, 0, 0]]))
    assert causal_mask(7, 7, "A").sum() == 24 and causal_mask(7, 7, "B").sum() == 25


def test_masked_conv_is_the_conv_of_the_masked_kernel_and_masked_weights_get_no_gradient():
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 4, 5, "A").double()
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64)
    ref = F.conv2d(x, conv.weight * causal_mask(5, 5, "A"), conv.bias, padding=2)
    out = conv(x)
    assert out.shape == (2, 4, 6, 7) and torch.allclose(out, ref, atol=1e-12)
    out.pow(2).sum().backward()
    assert torch.all(conv.weight.grad[..., causal_mask(5, 5, "A") == 0] == 0)
    assert torch.all(conv.weight.grad[..., causal_mask(5, 5, "A") == 1] != 0)
    with pytest.raises(ConfigError, match="odd"):
        MaskedConv2d(1, 1, 4, "A")


def test_down_shift_moves_rows_down():
    x = torch.arange(12.).view(1, 1, 3, 4)
    s = down_shift(x)
    assert torch.equal(s[0, 0, 0], torch.zeros(4)) and torch.equal(s[..., 1:, :], x[..., :-1, :])


@pytest.mark.parametrize("cls, kw", [(PixelCNN, dict(layers=3)), (GatedPixelCNN, dict(layers=3))])
@pytest.mark.parametrize("shape", [(1, 6, 6), (2, 6, 6)])
def test_no_output_depends_on_its_own_or_a_later_pixel(cls, kw, shape):
    """Exact zeros: the masks, not small weights (all levels, all channels, all layers)."""
    model = cls(in_shape=shape, width=8, out_hidden=8, **kw)
    S = jacobian_support(model, shape)
    assert torch.all(torch.triu(S) == 0), "an output sees its own pixel or a later one"
    assert torch.tril(S, -1).ne(0).any()


def test_gated_pixelcnn_has_no_blind_spot_and_pixelcnn_has_one():
    h = w = 8
    gated = GatedPixelCNN(in_shape=(1, h, w), width=8, layers=5, out_hidden=8)  # 3 + 4·1 >= 7
    plain = PixelCNN(in_shape=(1, h, w), width=8, layers=5, out_hidden=8)
    Sg, Sp = jacobian_support(gated, (1, h, w)), jacobian_support(plain, (1, h, w))
    earlier = torch.tril(torch.ones(h * w, h * w, dtype=torch.bool), -1)
    assert torch.all(Sg[earlier] != 0), "the gated model misses an earlier pixel"
    assert torch.all(Sg[-1, :-1] != 0)  # the last pixel sees all 63 before it
    # plain: pixel (4, 0) sees (3, 0..3) (the 7x7 type-A kernel) but never (3, 4..7), up-right
    i = 4 * w
    assert torch.all(Sp[i, 3 * w: 3 * w + 4] != 0) and torch.all(Sp[i, 3 * w + 4: 4 * w] == 0)
    assert (Sp[earlier] == 0).sum() > 0


def test_class_conditioning_changes_the_output_and_keeps_causality():
    torch.manual_seed(0)
    for cls in (GatedPixelCNN, PixelCNN):
        model = cls(in_shape=(1, 6, 6), width=8, layers=2, out_hidden=8, num_classes=3)
        x = torch.rand(4, 1, 6, 6)
        a, b = model(x, torch.zeros(4, dtype=torch.long)), model(x, torch.full((4,), 2))
        assert a.shape == (4, 256, 1, 6, 6) and not torch.allclose(a, b)
        S = jacobian_support(model, (1, 6, 6), y=torch.tensor([1]))
        assert torch.all(torch.triu(S) == 0)
        with pytest.raises(ConfigError, match="labels"):
            model(x)
    plain = GatedPixelCNN(in_shape=(1, 6, 6), width=8, layers=2)
    assert torch.equal(plain(x), plain(x, torch.zeros(4, dtype=torch.long)))  # unconditional: y unused


def test_code_inputs_are_embedded_and_causal():
    """A prior over VQ-VAE codes reads integer indices: changing the code at position j changes
    the logits of exactly the positions after j."""
    torch.manual_seed(0)
    model = GatedPixelCNN(in_shape=(1, 4, 4), levels=32, categorical=True, width=8, layers=3, out_hidden=8)
    k = torch.randint(0, 32, (1, 1, 4, 4))
    base = model(k)
    assert base.shape == (1, 32, 1, 4, 4)
    for j in range(16):
        k2 = k.clone()
        k2.view(-1)[j] = (k2.view(-1)[j] + 1) % 32
        changed = (model(k2) - base).abs().amax(dim=(0, 1, 2)).flatten() != 0  # (16,)
        assert torch.equal(changed, torch.arange(16) > j), j


def test_registered_builders_and_their_checks():
    m = MODELS.build("gated-pixelcnn", in_shape=[1, 8, 8], num_classes=10, conditional=True, width=4, layers=2)
    assert isinstance(m, GatedPixelCNN) and m.num_classes == 10 and m.levels == 256
    p = MODELS.build("pixelcnn", in_shape=[1, 8, 8], num_classes=10, width=4, layers=1)
    assert isinstance(p, PixelCNN) and p.num_classes == 0  # conditional: false by default
    assert p(torch.rand(2, 1, 8, 8)).shape == (2, 256, 1, 8, 8)
    for kwargs, needle in ((dict(first_kernel=6), "odd"), (dict(levels=17), "256 levels"),
                           (dict(conditional=True, num_classes=0), "labelled dataset"),
                           (dict(width=0), "model.width")):
        with pytest.raises(ConfigError, match=needle):
            MODELS.build("gated-pixelcnn", **kwargs)
    assert MODELS.build("pixelcnn", levels=512, categorical=True, width=4, layers=1).levels == 512


def test_discretized_logistic_mixture_is_the_papers_distribution():
    """PixelCNN++ (Salimans et al. 2017, eq. 2): P(k) = Σ π_m [σ((x_k + δ − μ)/s) − σ((x_k − δ − μ)/s)]
    with open end bins, against a float64 evaluation of the same formula; the 256 sum to one."""
    from profond.models.pixelcnn import discretized_logistic_log_probs

    torch.manual_seed(0)
    n, m, c, h, w = 2, 3, 1, 2, 3
    params = torch.stack([torch.randn(n, m, c, h, w), torch.rand(n, m, c, h, w) * 2 - 1,
                          torch.rand(n, m, c, h, w) * -3], dim=1)               # log s in [-3, 0]
    got = discretized_logistic_log_probs(params).exp().double()                # (N, 256, C, H, W)
    p64 = params.double()
    pi, mu, s = torch.softmax(p64[:, 0], 1), p64[:, 1], p64[:, 2].exp()
    x = torch.linspace(-1, 1, 256, dtype=torch.float64).view(1, 256, 1, 1, 1, 1)
    upper = torch.sigmoid((x + 1 / 255 - mu[:, None]) / s[:, None])
    lower = torch.sigmoid((x - 1 / 255 - mu[:, None]) / s[:, None])
    upper[:, -1], lower[:, 0] = 1.0, 0.0                                        # the open end bins
    ref = ((upper - lower) * pi[:, None]).sum(2)
    assert got.shape == (n, 256, c, h, w)
    assert torch.allclose(got, ref, atol=1e-6)
    assert torch.allclose(got.sum(1), torch.ones(n, c, h, w, dtype=torch.float64), atol=1e-5)
    # one sharp component centred on level 100 puts its mass there
    sharp = torch.zeros(1, 3, 1, 1, 1, 1)
    sharp[0, 1], sharp[0, 2] = 2 * 100 / 255 - 1, -7.0
    expected = 2 * torch.sigmoid(torch.tensor(1 / 255 / math.exp(-7.0))) - 1      # σ(δ/s) − σ(−δ/s)
    assert discretized_logistic_log_probs(sharp).exp()[0, 100].item() == pytest.approx(float(expected), abs=1e-5)


def test_the_mixture_output_keeps_shape_and_causality():
    model = GatedPixelCNN(in_shape=(1, 6, 6), width=8, layers=3, out_hidden=8, mixtures=4)
    assert model.head[-1].out_channels == 12 and model(torch.rand(2, 1, 6, 6)).shape == (2, 256, 1, 6, 6)
    S = jacobian_support(model, (1, 6, 6))
    assert torch.all(torch.triu(S) == 0) and torch.tril(S, -1).ne(0).any()
    with pytest.raises(ConfigError, match="model.mixtures"):
        MODELS.build("gated-pixelcnn", categorical=True, mixtures=5)
