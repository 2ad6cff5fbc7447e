"""The denoising U-Net of the diffusion family (course §10.5, fig. 10.2, §10.8): shapes, zero
initialisation, gradients, dependence on t and y, the registry builder and a tiny DDPM fit."""

from __future__ import annotations

import pytest
import torch

from profond.errors import ConfigError
from profond.models.diffusion import PRESETS, DiffusionUNet, timestep_embedding
from profond.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")


def small(**kw) -> DiffusionUNet:
    args = dict(base=16, mults=(1, 2), attn_levels=(1,), num_res_blocks=1, dropout=0.0)
    return DiffusionUNet(**{**args, **kw})


@torch.no_grad()
def wake(model: DiffusionUNet, std: float = 0.1) -> DiffusionUNet:
    """Give random values to every zero-initialised parameter (and only those), so that the
    residual branches and the last conv are no longer 0."""
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        if not p.any():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.mark.parametrize(("shape", "kw"), [
    ((1, 28, 28), dict(base=16, mults=(1, 2, 2), attn_levels=(2,))),
    ((3, 32, 32), dict(base=16, mults=(1, 2, 2, 2), attn_levels=(1, 3), film=True)),
    ((1, 8, 8), dict(base=16, mults=(1, 2), attn_levels=(1,))),
    ((1, 30, 30), dict(base=16, mults=(1, 2, 2), attn_levels=(1, 2))),  # padded to 32, cropped back
    ((2, 7, 5), dict(base=16, mults=(1, 2, 2), attn_levels=(), out_channels=3)),  # too small to reflect
])
def test_output_shape(shape, kw):
    torch.manual_seed(0)
    model = wake(DiffusionUNet(in_channels=shape[0], image_size=shape[1:], num_res_blocks=1, **kw))
    x = torch.randn(3, *shape)
    out = model(x, torch.tensor([0, 10, 999]))
    c = kw.get("out_channels", shape[0])
    assert out.shape == (3, c, *shape[1:])
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    # the crop keeps the image's own pixels: changing one corner pixel changes the output there
    x2 = x.clone()
    x2[:, :, -1, -1] += 1.0
    assert not torch.allclose(model(x2, torch.tensor([0, 10, 999]))[:, :, -1, -1], out[:, :, -1, -1])


def test_zero_at_init_then_not_and_every_parameter_learns():
    torch.manual_seed(0)
    model = small(num_classes=3)
    x, t, y = torch.randn(4, 1, 8, 8), torch.tensor([1.0, 50.0, 300.0, 999.0]), torch.tensor([0, 1, 2, 3])
    assert torch.equal(model(x, t, y), torch.zeros_like(x))  # exactly the zero function
    init = {k: v.clone() for k, v in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.randn_like(x)
    for _ in range(4):  # the zero-initialised convs open the branches behind them one step each
        opt.zero_grad()
        loss = (model(x, t, y) - target).pow(2).mean()
        loss.backward()
        opt.step()
    assert model(x, t, y).abs().max() > 0
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing
    frozen = [k for k, p in model.named_parameters() if torch.equal(p, init[k])]
    assert not frozen, f"parameters that never got a nonzero gradient: {frozen}"


def test_output_depends_on_t_and_y():
    torch.manual_seed(0)
    model = wake(small(num_classes=4)).eval()
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([5.0, 5.0])
    a = model(x, t)
    assert not torch.allclose(a, model(x, t + 200.0), atol=1e-4)
    # class vs null class; y=None is the null class (row num_classes) exactly
    y = torch.tensor([1, 2])
    null = torch.full((2,), 4)
    assert not torch.allclose(model(x, t, y), a, atol=1e-4)
    assert torch.equal(model(x, t, null), a)
    assert not torch.allclose(model(x, t, torch.tensor([1, 1]))[1], model(x, t, torch.tensor([2, 2]))[1], atol=1e-4)
    # scalar t is broadcast to the batch
    assert torch.equal(model(x, torch.tensor(5.0)), a)


def test_float_t_is_continuous():
    torch.manual_seed(0)
    model = wake(small()).eval()
    x = torch.randn(2, 1, 8, 8)
    t = torch.tensor([12.3456, 700.5])
    a, b, far = model(x, t), model(x, t + 1e-3), model(x, t + 30.0)
    assert (a - b).abs().max() < 1e-3 * (a - far).abs().max()
    assert torch.equal(model(x, torch.tensor([3, 7])), model(x, torch.tensor([3.0, 7.0])))  # int == float


def test_timestep_embedding_is_eq_10_19():
    t = torch.tensor([0.0, 1.5, 999.0])
    d = 8
    pe = timestep_embedding(t, d)
    i = torch.arange(d // 2, dtype=torch.float64)
    arg = t.double()[:, None] / 10000 ** (2 * i / d)
    assert torch.allclose(pe[:, 0::2].double(), arg.sin(), atol=1e-5)  # PE(t, 2i)
    assert torch.allclose(pe[:, 1::2].double(), arg.cos(), atol=1e-5)  # PE(t, 2i + 1)
    assert timestep_embedding(t, 7).shape == (3, 7)


def test_unconditional_refuses_labels_and_bad_t():
    model = small()
    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="unconditional"):
        model(x, torch.zeros(2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ConfigError, match="one timestep per image"):
        model(x, torch.zeros(3))


def test_train_eval_deterministic_without_dropout():
    torch.manual_seed(0)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1.0, 2.0, 3.0])
    model = wake(small(dropout=0.0))
    assert torch.equal(model.train()(x, t), model.eval()(x, t))
    noisy = wake(small(dropout=0.5)).train()
    assert not torch.equal(noisy(x, t), noisy(x, t))  # dropout does act in train mode
    assert torch.equal(noisy.eval()(x, t), noisy(x, t))


def test_registry_builder():
    model = MODELS.build("diffusion-unet", in_shape=(1, 28, 28), num_classes=10, conditional=True,
                         base=16, num_res_blocks=1)
    assert model.is_denoiser and model.num_classes == 10
    assert model.class_embed.num_embeddings == 11  # 10 classes + ∅
    x = torch.randn(2, 1, 28, 28)
    assert model(x, torch.tensor([0.0, 3.5]), torch.tensor([9, 10])).shape == x.shape
    # unconditional unless the config says so: num_classes is the dataset's, unused
    plain = MODELS.build("diffusion-unet", in_shape=(1, 8, 8), num_classes=10, base=16, mults=[1, 2])
    assert plain.num_classes == 0 and plain.class_embed is None
    assert plain.attn_levels == (1,)  # mults given without attn_levels: the lowest resolution
    base, mults, levels = PRESETS["fig10.2"]
    assert [base * m for m in mults] == [64, 128, 256, 512] and levels == (2, 3)
    fig = MODELS.build("diffusion-unet", in_shape=(1, 28, 28), preset="fig10.2", base=8, groups=4, num_heads=2)
    assert fig.mults == mults and fig.attn_levels == levels and fig.multiple == 8
    assert MODELS.build("diffusion-unet", preset="large", base=16).base == 16  # explicit beats preset


@pytest.mark.parametrize(("kw", "field"), [
    (dict(base=0), "model.base"),
    (dict(mults=[1, 0]), "model.mults"),
    (dict(attn_levels=[3]), "model.attn_levels"),
    (dict(groups=5), "model.groups"),
    (dict(base=8, groups=8, mults=[1, 2]), "model.groups"),  # one channel per group
    (dict(num_heads=3), "model.num_heads"),
    (dict(dropout=1.0), "model.dropout"),
    (dict(preset="huge"), "model.preset"),
    (dict(attn_impl="local"), "model.attn_impl"),
    (dict(conditional=True, num_classes=0), "model.conditional"),
])
def test_registry_bad_values(kw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        MODELS.build("diffusion-unet", in_shape=(1, 28, 28), **{"num_classes": 10, **kw})


def test_learns_ddpm_eps_loss_on_digits():
    """150 Adam steps of the ε-loss (eq. 10.9) on 64 digits 8×8: the loss falls from 1."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    x0 = torch.tensor(load_digits().images[:64], dtype=torch.float32)[:, None] / 8.0 - 1.0  # [-1, 1]
    T = 1000
    alpha_bar = torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, T), 0)  # linear schedule

    def q_sample(x, t, eps):  # x_t = √ᾱ x_0 + √(1−ᾱ) ε  (10.8)
        ab = alpha_bar[t][:, None, None, None]
        return ab.sqrt() * x + (1 - ab).sqrt() * eps

    g = torch.Generator().manual_seed(1)
    t_val, eps_val = torch.randint(0, T, (64,), generator=g), torch.randn(x0.shape, generator=g)
    model = small(base=16)

    def val_loss() -> float:
        with torch.no_grad():
            return (model(q_sample(x0, t_val, eps_val), t_val) - eps_val).pow(2).mean().item()

    start = val_loss()
    assert start == pytest.approx(eps_val.pow(2).mean().item())  # zero net: E ε² ≈ 1
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(150):
        t = torch.randint(0, T, (64,))
        eps = torch.randn_like(x0)
        loss = (model(q_sample(x0, t, eps), t) - eps).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert val_loss() < 0.3 * start
