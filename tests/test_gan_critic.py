"""The critic side of the GANs (course §8.4.2, eq. 8.16; hinge + spectral norm): the gradient
penalty term by term (ε per example, per-example norm over all pixels, (norm - 1)² averaged,
a graph that reaches the critic's weights and never the generator's, the labels of a
conditional critic), the critic's normalisation (no BatchNorm with a penalty; a layer-norm
critic that is not blind to an image's contrast), the n_critic schedule on fresh noise, both
LR schedules, the EMA of G, the [-1, 1] scaling of reals and fakes, spectral norm and the hinge
losses' signs, and the recipes / benchmark configurations that use them."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from profond.errors import ConfigError
from profond.methods.gan_losses import d_loss, g_loss, gradient_penalty

from .conftest import digits_cfg

FAST = ["method.eval_n=0", "method.grid_n=0", "method.monitor_every=0", "data.batch_size=32"]


def synth_cfg(out: Path, *overrides: str):
    """A small DCGAN on the offline 28x28 synthetic data (so that the critic has norm layers)."""
    return digits_cfg(out, "data.name=synthetic", "data.subset=256", "data.val_size=64", "model.name=dcgan",
                      "model.features_g=4", "model.features_d=4", "model.latent_dim=8", *FAST, *overrides)


def batches(method, n: int):
    """The first ``n`` training batches, over as many epochs as it takes."""
    return itertools.islice(itertools.chain.from_iterable(method.train_data.batches(e) for e in itertools.count()), n)


class Spy(nn.Module):
    """A critic ``f(x)`` that records its inputs and keyword arguments."""

    def __init__(self, f):
        super().__init__()
        self.f, self.calls = f, []

    def forward(self, x, **kw):
        self.calls.append((x, kw))
        return self.f(x)


# -- the gradient penalty, eq. 8.16 -------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_penalty_of_a_linear_critic_is_norm_minus_one_squared(scale):
    """D(x) = w·x has ∇D = w everywhere: the penalty is (‖w‖ - 1)² exactly, whatever ε draws."""
    torch.manual_seed(0)
    w = torch.randn(64, dtype=torch.float64)
    w = scale * w / w.norm()
    real, fake = torch.randn(16, 1, 8, 8, dtype=torch.float64), torch.randn(16, 1, 8, 8, dtype=torch.float64)
    gp = gradient_penalty(lambda x: x.flatten(1) @ w, real, fake)
    assert gp.item() == pytest.approx((scale - 1.0) ** 2, abs=1e-12)


def test_epsilon_is_uniform_and_per_example():
    """x̂ = ε x + (1 - ε) x̃ with one ε per example (the same for all its pixels), distinct
    across examples, in [0, 1]; x̂ is a leaf that requires grad (no history back to G)."""
    real, fake = torch.ones(256, 1, 4, 4), -torch.ones(256, 1, 4, 4)
    spy = Spy(lambda x: x.flatten(1).sum(1))
    gradient_penalty(spy, real, fake, generator=torch.Generator().manual_seed(0))
    (x_hat, _), = spy.calls
    assert x_hat.is_leaf and x_hat.requires_grad
    eps = (x_hat.detach() + 1) / 2                         # x̂ = 2ε - 1 here
    per_example = eps.flatten(1)
    assert torch.allclose(per_example, per_example[:, :1].expand_as(per_example))  # one ε per example
    e = per_example[:, 0]
    assert 0 <= e.min() and e.max() <= 1 and e.unique().numel() == 256
    assert 0.4 < e.mean() < 0.6 and e.min() < 0.05 and e.max() > 0.95  # U[0, 1], not a constant
    # seeded: the same generator gives the same interpolates
    spy2 = Spy(lambda x: x.flatten(1).sum(1))
    gradient_penalty(spy2, real, fake, generator=torch.Generator().manual_seed(0))
    assert torch.equal(spy2.calls[0][0], x_hat)


def test_norm_is_per_example_over_all_pixels_and_squares_are_averaged():
    """D(x) = ‖x‖² / 2 per example has ∇D(x̂_i) = x̂_i: the penalty is the mean over the batch of
    (‖x̂_i‖ - 1)², not (mean norm - 1)² nor the norm of the whole batch's gradient."""
    torch.manual_seed(1)
    real = torch.randn(8, 3, 5, 5, dtype=torch.float64) * torch.linspace(0.1, 2, 8, dtype=torch.float64)[:, None, None, None]
    fake = torch.randn(8, 3, 5, 5, dtype=torch.float64) * 0.1
    spy = Spy(lambda x: 0.5 * (x.flatten(1) ** 2).sum(1))
    gp = gradient_penalty(spy, real, fake)
    x_hat = spy.calls[0][0].detach()
    norms = x_hat.flatten(1).norm(dim=1)
    assert gp.item() == pytest.approx(((norms - 1) ** 2).mean().item(), rel=1e-12)
    assert gp.item() != pytest.approx((norms.mean() - 1).item() ** 2, rel=1e-3)
    assert gp.item() != pytest.approx((x_hat.norm() - 1).item() ** 2, rel=1e-3)


def test_penalty_gradient_reaches_the_critic_and_never_the_generator():
    """create_graph=True: d/dw (‖w‖ - 1)² = 2 (‖w‖ - 1) w / ‖w‖ flows into the critic's weights;
    the fakes are detached, so G's parameters get no gradient from the penalty."""
    torch.manual_seed(2)
    critic = nn.Linear(16, 1).double()
    g = nn.Linear(4, 16).double()
    real = torch.randn(10, 16, dtype=torch.float64)
    fake = g(torch.randn(10, 4, dtype=torch.float64))
    gp = gradient_penalty(lambda x: critic(x).view(-1), real, fake)
    gp.backward()
    w = critic.weight.detach().view(-1)
    assert torch.allclose(critic.weight.grad.view(-1), 2 * (w.norm() - 1) * w / w.norm(), atol=1e-12)
    assert critic.bias.grad is None or torch.all(critic.bias.grad == 0)
    assert all(p.grad is None for p in g.parameters())


def test_a_conditional_critic_gets_the_same_labels_in_every_call(tmp_path):
    """In a WGAN-GP step of a conditional DCGAN, D scores the reals, the fakes, the interpolates
    and G's new fakes, each with the batch's labels (x̂_i is scored with the label of x_i)."""
    from profond.train.loop import Trainer

    t = Trainer(synth_cfg(tmp_path, "model.conditional=true", "model.d_norm=layer", "method.loss=wasserstein",
                          "method.gp_weight=10"), run_dir=tmp_path / "run")
    m = t.method
    D = m.raw_nets["D"]
    seen = []
    forward = D.forward

    def recording(x, labels=None):
        seen.append((x.requires_grad and x.is_leaf, labels))
        return forward(x, labels)

    D.forward = recording
    m.train()
    batch = next(iter(m.train_data.batches(0)))
    m.train_step(batch, t.ctx)
    assert len(seen) == 4 and sum(leaf for leaf, _ in seen) == 1  # one of them: the interpolates
    assert all(lab is not None and torch.equal(lab, batch[1]) for _, lab in seen)


# -- the critic's normalisation ---------------------------------------------------------------


def test_a_batchnorm_critic_with_a_penalty_is_refused_naming_the_fix(tmp_path):
    from profond.train.loop import Trainer

    with pytest.raises(ConfigError, match=r"BatchNorm critic.*model\.d_norm=layer"):
        Trainer(synth_cfg(tmp_path, "model.d_norm=batch", "method.loss=wasserstein", "method.gp_weight=10"),
                run_dir=tmp_path / "bad")
    for ok in (["model.d_norm=layer", "method.gp_weight=10"], ["model.d_norm=none", "method.gp_weight=10"],
               ["model.d_norm=batch", "method.gp_weight=0"]):  # no penalty: BatchNorm is the course's DCGAN
        t = Trainer(synth_cfg(tmp_path, "method.loss=wasserstein", *ok), run_dir=tmp_path / "_".join(ok))
        assert t.method.opts.gp_weight in (0.0, 10.0)


def _with_random_biases(D: nn.Module) -> nn.Module:
    for c in D.modules():
        if isinstance(c, nn.Conv2d) and c.bias is not None:
            nn.init.normal_(c.bias, 0.0, 0.1)
    return D


def test_layer_norm_critic_keeps_biases_and_sees_contrast():
    """The root cause of the collapsed WGAN-GP: bias-free conv + LeakyReLU layers followed by a
    per-example layer norm make D(a x) = D(x) for every a > 0 (the critic cannot see an image's
    contrast; its input gradient is orthogonal to x). The layer-norm critic keeps its conv
    biases, which breaks that invariance; the BatchNorm critic of §8.7 stays bias-free."""
    from profond.models.gan import dcgan

    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    D = _with_random_biases(dcgan(features_d=8, features_g=8, d_norm="layer").D.train())
    convs = [c for c in D.modules() if isinstance(c, nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in D.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    with torch.no_grad():
        assert (D(0.3 * x) - D(x)).abs().max() > 1e-2
        for c in convs:  # the same critic without its biases is blind to the scale of x
            c.bias.zero_()
        assert torch.allclose(D(0.3 * x), D(x), atol=1e-3)
    batch = dcgan(features_d=8, features_g=8, d_norm="batch").D
    assert all(c.bias is None for c in batch.modules() if isinstance(c, nn.Conv2d))


# -- the training step: n_critic on fresh noise, both schedules, EMA, scaling ------------------


def test_g_is_updated_every_n_critic_th_step_on_fresh_noise(tmp_path):
    from profond.train.loop import Trainer

    t = Trainer(synth_cfg(tmp_path, "model.d_norm=layer", "method.loss=wasserstein", "method.gp_weight=10",
                          "method.n_critic=5"), run_dir=tmp_path / "run")
    m = t.method
    G = m.raw_nets["G"]
    calls = []
    forward = G.forward

    def recording(z, labels=None):
        calls.append((t.step, torch.is_grad_enabled(), z.detach().clone()))
        return forward(z, labels)

    G.forward = recording
    m.train()
    for batch in batches(m, 11):
        t._train_step(batch)
    g_steps = [s for s, grad, _ in calls if grad]
    assert g_steps == [0, 5, 10]
    assert [s for s, grad, _ in calls if not grad] == list(range(11))  # one fake batch per D step
    zs = [z for _, _, z in calls]
    assert all(not torch.equal(a, b) for a, b in itertools.combinations(zs, 2))  # fresh noise each call


def test_lr_schedule_steps_both_optimizers_alike(tmp_path):
    from profond.train.loop import Trainer

    t = Trainer(synth_cfg(tmp_path, "method.n_critic=3", "sched.name=cosine", "train.epochs=2", "optim.lr=1e-3"),
                run_dir=tmp_path / "run")
    m = t.method
    m.train()
    lrs = []
    for batch in batches(m, 6):
        t._train_step(batch)
        lrs.append((t.optimizers["D"].param_groups[0]["lr"], t.optimizers["G"].param_groups[0]["lr"]))
    assert all(d == g for d, g in lrs)
    assert all(b[0] < a[0] for a, b in itertools.pairwise(lrs))  # it follows the step counter, not G's updates


def test_only_g_has_an_ema_and_it_moves_only_toward_g(tmp_path):
    from profond.train.loop import Trainer

    t = Trainer(synth_cfg(tmp_path, "train.ema_decay=0.5", "method.n_critic=2"), run_dir=tmp_path / "run")
    assert set(t.emas) == {"G"}
    m = t.method
    m.train()
    G = m.raw_nets["G"]
    key = next(k for k in t.emas["G"].averaged)
    batches = m.train_data.batches(0)
    t._train_step(next(batches))                          # step 0: D and G updated
    prev = t.emas["G"].shadow[key].clone()
    t._train_step(next(batches))                          # step 1: D only, G unchanged
    w = G.state_dict()[key]
    assert torch.allclose(t.emas["G"].shadow[key], 0.5 * prev + 0.5 * w)


def test_reals_and_fakes_reach_d_in_minus_one_one(tmp_path):
    """Reals are scaled 2x - 1 (a black background is -1), G ends with Tanh, samples come back
    as (G + 1) / 2 in [0, 1]."""
    from profond.train.loop import Trainer

    t = Trainer(synth_cfg(tmp_path), run_dir=tmp_path / "run")
    m = t.method
    G, D = m.raw_nets["G"], m.raw_nets["D"]
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    seen = []
    forward = D.forward

    def recording(x, labels=None):
        seen.append(x.detach().clone())
        return forward(x, labels)

    D.forward = recording
    m.train()
    batch = next(iter(m.train_data.batches(0)))
    m.train_step(batch, t.ctx)
    real, fake, g_fake = seen
    assert torch.equal(real, batch[0] * 2 - 1)
    assert real.min() >= -1 and real.max() <= 1 and real.min() < -0.5
    assert fake.abs().max() <= 1 and g_fake.abs().max() <= 1
    s = m.sample(8, seed=0)
    assert 0 <= s.min() and s.max() <= 1


# -- spectral norm and the hinge loss ----------------------------------------------------------


def test_spectral_norm_is_on_every_critic_layer_only_and_keeps_the_biases():
    from torch.nn.utils import parametrize

    from profond.models.gan import dcgan

    torch.manual_seed(0)
    m = dcgan(features_d=8, features_g=8, spectral_norm=True, d_norm="none")
    d_layers = [c for c in m.D.modules() if isinstance(c, nn.Conv2d)]
    assert d_layers and all(parametrize.is_parametrized(c, "weight") and c.bias is not None for c in d_layers)
    assert not any(parametrize.is_parametrized(c) for c in m.G.modules() if isinstance(c, (nn.Conv2d, nn.ConvTranspose2d)))
    m.D.train()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        for _ in range(50):  # power iterations run in training-mode forwards
            m.D(x)
    m.D.eval()
    for c in d_layers:
        sigma = torch.linalg.matrix_norm(c.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)


def test_hinge_losses_signs_and_margins():
    real = torch.tensor([2.0, 0.5, -1.0], requires_grad=True)
    fake = torch.tensor([-2.0, -0.5, 1.0], requires_grad=True)
    loss = d_loss("hinge", real, fake)
    assert loss.item() == pytest.approx(((0 + 0.5 + 2.0) + (0 + 0.5 + 2.0)) / 3)
    loss.backward()
    assert torch.equal(real.grad, torch.tensor([0.0, -1 / 3, -1 / 3]))   # D raises real scores below 1
    assert torch.equal(fake.grad, torch.tensor([0.0, 1 / 3, 1 / 3]))     # and lowers fake scores above -1
    assert d_loss("hinge", torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -4.0])).item() == 0.0
    f = torch.tensor([-2.0, 3.0], requires_grad=True)
    g_loss("hinge", f).backward()
    assert torch.equal(f.grad, torch.tensor([-0.5, -0.5]))  # G raises every fake score (no margin)


# -- the recipes and the benchmark's configurations --------------------------------------------


def test_wgan_gp_recipe_is_gulrajanis_setting():
    from profond.config import resolve
    from profond.registry import MODELS

    cfg = resolve(recipe="fmnist-wgan-gp")
    a = cfg.method.args
    assert (a["loss"], a["n_critic"], a["gp_weight"]) == ("wasserstein", 5, 10.0)
    assert cfg.optim.lr == pytest.approx(2e-4) and cfg.optim.betas == [0.0, 0.9]
    assert cfg.model.args["d_norm"] == "layer"
    D = MODELS.build(cfg.model.name, in_shape=(1, 28, 28), num_classes=10, **cfg.model.args).D
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    assert all(c.bias is not None for c in D.modules() if isinstance(c, nn.Conv2d))


def test_benchmark_hinge_sn_configuration():
    from profond.config import resolve
    from profond.registry import MODELS
    from profond.train.optim import optimizer_cfg_for

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    had_common = "common" in sys.modules
    spec = importlib.util.spec_from_file_location("_bench_gan", bench / "gan.py")
    gan_bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(bench))  # the script imports its sibling `common`
    try:
        spec.loader.exec_module(gan_bench)
    finally:
        sys.path.remove(str(bench))
        if not had_common:
            sys.modules.pop("common", None)
    recipe, extra = gan_bench.GANS["hinge-sn"]
    cfg = resolve(recipe=recipe, overrides=extra)
    assert cfg.method.args["loss"] == "hinge" and cfg.model.args["spectral_norm"] is True
    assert (optimizer_cfg_for(cfg.optim, "G").lr, optimizer_cfg_for(cfg.optim, "D").lr) == (1e-4, 4e-4)
    m = MODELS.build(cfg.model.name, in_shape=(1, 28, 28), num_classes=10, **cfg.model.args)
    assert not any(isinstance(x, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)) for x in m.D.modules())
    assert gan_bench.GANS["wgan-gp"][0] == "fmnist-wgan-gp"
