"""GAN models, losses and method (course ch. 8) on sklearn digits (8x8): losses against hand
computations, the gradient penalty (eq. 8.16), the two optimizers and n_critic, training moves
samples toward the data, the divergence guard, exact resume and `profond sample`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from typer.testing import CliRunner

from profond.errors import ConfigError, TrainingDiverged
from profond.methods.gan_losses import LOSSES, d_loss, g_loss, gradient_penalty

from .conftest import digits_cfg, needs_fmnist

FAST = ["method.eval_n=200", "method.grid_n=16", "data.batch_size=64", "optim.betas=[0.5,0.999]"]


def gan_cfg(out: Path, *overrides: str):
    """A seconds-long fully connected GAN on digits."""
    return digits_cfg(out, "model.name=gan", "model.g_hidden=[64]", "model.d_hidden=[64]",
                      "model.latent_dim=16", "optim.lr=0.001", *FAST, *overrides)


def dcgan_cfg(out: Path, *overrides: str):
    """A seconds-long small DCGAN on digits (8x8: one transposed conv 4 -> 8)."""
    return digits_cfg(out, "model.name=dcgan", "model.features_g=8", "model.features_d=8",
                      "model.latent_dim=16", "optim.lr=0.001", *FAST, *overrides)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"]
    return load_file(str(run_dir / "checkpoints" / latest / "model.safetensors"))


def patch_perfect_discriminator(monkeypatch) -> None:
    """Make the FC discriminator win outright: real digits have an exact -1 background, tanh
    outputs never do, so D scores reals +20 and fakes -20 (gradients still reach its weights)."""
    from profond.models.gan import MLPDiscriminator

    forward = MLPDiscriminator.forward

    def perfect_d(self, x, labels=None):
        real = (x.flatten(1).min(1).values == -1).float()
        return forward(self, x, labels) * 0 + 20 * (2 * real - 1)

    monkeypatch.setattr(MLPDiscriminator, "forward", perfect_d)


# -- losses ------------------------------------------------------------------------------------


REAL = torch.tensor([2.0, -1.0, 0.5, 3.0])
FAKE = torch.tensor([-2.0, 0.3, 1.0, -0.7])


def _bce(logits, target):
    p = torch.sigmoid(logits)
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()


@pytest.mark.parametrize("kind", LOSSES)
def test_losses_equal_hand_computed_expressions(kind):
    bce_d = _bce(REAL, torch.ones(4)) + _bce(FAKE, torch.zeros(4))      # eq. 8.1, D side
    expected_d = {
        "minimax": bce_d, "non-saturating": bce_d,
        "wasserstein": FAKE.mean() - REAL.mean(),
        "hinge": torch.clamp(1 - REAL, min=0).mean() + torch.clamp(1 + FAKE, min=0).mean(),
        "least-squares": 0.5 * ((REAL - 1) ** 2).mean() + 0.5 * (FAKE ** 2).mean(),
    }[kind]
    expected_g = {
        "minimax": torch.log(1 - torch.sigmoid(FAKE)).mean(),
        "non-saturating": _bce(FAKE, torch.ones(4)),
        "wasserstein": -FAKE.mean(), "hinge": -FAKE.mean(),
        "least-squares": 0.5 * ((FAKE - 1) ** 2).mean(),
    }[kind]
    assert d_loss(kind, REAL, FAKE).item() == pytest.approx(expected_d.item(), rel=1e-5)
    assert g_loss(kind, FAKE).item() == pytest.approx(expected_g.item(), rel=1e-5)


def test_gradient_penalty_zero_for_unit_norm_linear_critic():
    torch.manual_seed(0)
    real, fake = torch.randn(16, 1, 8, 8), torch.randn(16, 1, 8, 8)
    w = torch.randn(64)
    unit = lambda x: x.flatten(1) @ (w / w.norm())  # noqa: E731 - ‖∇D‖ = 1 everywhere
    steep = lambda x: x.flatten(1) @ (3 * w / w.norm())  # noqa: E731
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-8)
    assert gradient_penalty(steep, real, fake).item() == pytest.approx(4.0, rel=1e-4)  # (3 - 1)²
    quad = lambda x: (x.flatten(1) ** 2).sum(1)  # noqa: E731
    assert gradient_penalty(quad, real, fake).item() > 0.1


# -- models ------------------------------------------------------------------------------------


def test_models_shapes_registration_and_default_method():
    from profond.config import resolve
    from profond.registry import MODELS

    cfg = resolve(overrides=["model.name=dcgan"])
    assert cfg.method.name == "gan"
    y = torch.tensor([0, 3, 9])
    for name, kw in [("dcgan", {"features_g": 4, "features_d": 4}), ("dcgan", {"conditional": True, "spectral_norm": True, "d_norm": "none"}),
                     ("dcgan", {"d_norm": "layer"}), ("gan", {"conditional": True})]:
        m = MODELS.build(name, in_shape=(1, 28, 28), num_classes=10, **kw)
        x = m.G(torch.randn(3, m.latent_dim), y if kw.get("conditional") else None)
        assert x.shape == (3, 1, 28, 28) and x.abs().max() <= 1
        assert m.D(x, y if kw.get("conditional") else None).shape == (3,)
    # §8.7: 4f x 4 x 4 -> 2f x 7 x 7 -> f x 14 x 14 -> 28 x 28, DCGAN init N(0, 0.02)
    m = MODELS.build("dcgan", in_shape=(1, 28, 28), num_classes=10, features_g=16, features_d=16)
    convs = [mod for mod in m.G.modules() if isinstance(mod, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [64, 32, 16, 1]
    assert [c.kernel_size[0] for c in convs] == [4, 3, 4, 4]
    assert convs[1].weight.std().item() == pytest.approx(0.02, rel=0.1)
    with pytest.raises(ConfigError, match="4x4"):
        MODELS.build("dcgan", in_shape=(1, 12, 12), num_classes=10)


# -- the method: optimizers, n_critic ----------------------------------------------------------


def test_two_optimizers_update_only_their_net_and_n_critic(tmp_path):
    from profond.train.loop import Trainer

    t = Trainer(gan_cfg(tmp_path, "method.n_critic=5"), run_dir=tmp_path / "run")
    m = t.method
    assert set(t.optimizers) == {"D", "G"}
    counts = {"D": 0, "G": 0}
    untouched = {"D": "G", "G": "D"}

    def wrap(name, opt):
        step = opt.step

        def counted(*a, **k):
            other = m.raw_nets[untouched[name]]
            before = [p.detach().clone() for p in other.parameters()]
            mine = [p.detach().clone() for p in m.raw_nets[name].parameters()]
            r = step(*a, **k)
            assert all(torch.equal(b, p) for b, p in zip(before, other.parameters(), strict=True))
            assert not all(torch.equal(b, p) for b, p in zip(mine, m.raw_nets[name].parameters(), strict=True))
            counts[name] += 1
            return r
        opt.step = counted

    for name, opt in t.optimizers.items():
        wrap(name, opt)
    m.train()
    for batch in itertools.islice(m.train_data.batches(0), 10):
        out = m.train_step(batch, t.ctx)
        t.step += 1
    assert counts == {"D": 10, "G": 2}
    assert {"loss_D", "loss_G", "D_x", "D_G_z", "grad_norm_D", "grad_norm_G"} <= set(out)
    assert 0 <= float(out["D_x"]) <= 1


def test_bad_options(tmp_path):
    from profond.train.loop import Trainer

    for bad, match in [("method.loss=foo", "method.loss"), ("method.n_critic=0", "n_critic")]:
        with pytest.raises(ConfigError, match=match):
            Trainer(gan_cfg(tmp_path, bad), run_dir=tmp_path / "bad")


def test_wgan_gp_step_logs_wasserstein_and_gp(tmp_path):
    from profond.train.loop import Trainer

    t = Trainer(gan_cfg(tmp_path, "method.loss=wasserstein", "method.gp_weight=10", "method.clip=0.5"),
                run_dir=tmp_path / "run")
    out = t.method.train_step(next(iter(t.method.train_data.batches(0))), t.ctx)
    assert float(out["gp"]) >= 0 and "wasserstein" in out
    assert max(p.abs().max().item() for p in t.method.raw_nets["D"].parameters()) <= 0.5 + 1e-6


# -- training ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from profond.train import train

    out = tmp_path_factory.mktemp("gan")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(out / ".cache"))
        return train(gan_cfg(out, "train.epochs=6", "train.eval_every=3", "method.eval_n=300",
                             "train.ema_decay=0.9"))


def test_training_moves_samples_toward_the_data(trained, tmp_path):
    from profond.train.loop import Trainer

    init = Trainer(gan_cfg(tmp_path, "train.epochs=6", "method.eval_n=300"), run_dir=tmp_path / "init")
    fid0 = init.evaluate(init.method.val_data)["fid"]
    fid1 = trained.history[-1]["val_fid"]
    assert fid1 < 0.8 * fid0, (fid0, fid1)  # measured: 32.7 at init -> 23.4 after 6 epochs
    run = trained.run_dir
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        *(f"epoch-{i:03d}.png" for i in range(1, 7)), "evolution.gif"]
    summary = json.loads((run / "summary.json").read_text())
    assert "G" in json.dumps(summary)


def test_profond_sample_on_a_gan_run(trained, tmp_path):
    from profond.cli import app

    r = CliRunner().invoke(app, ["sample", str(trained.run_dir), "--n", "10", "--seed", "3",
                                 "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "samples.png").is_file()
    r = CliRunner().invoke(app, ["eval", str(trained.run_dir), "--n", "50", "--json"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.output.strip().splitlines()[-1])
    assert ev["n_fake"] == 50 and ev["fid"] > 0 and ev["fid_n300"] > 0 and "class_histogram" in ev


def test_divergence_guard_on_forced_collapse(tmp_path, monkeypatch):
    from profond.train import train

    patch_perfect_discriminator(monkeypatch)
    with pytest.raises(TrainingDiverged, match="collapse"):
        train(gan_cfg(tmp_path, "method.collapse_steps=5", "train.epochs=4",
                           "method.eval_n=0", "data.subset=128"))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert (tmp_path / "run" / "checkpoints").is_dir()  # epochs 1-2 (2 steps each) were saved before


def test_resume_gives_the_same_weights(tmp_path):
    from profond.train import train

    args = ["method.n_critic=2", "method.eval_n=0", "data.subset=256", "train.ema_decay=0.9"]
    ref = train(dcgan_cfg(tmp_path / "ref", *args, "train.epochs=2"))
    train(dcgan_cfg(tmp_path / "res", *args, "train.epochs=1"))
    res = train(dcgan_cfg(tmp_path / "res", *args, "train.epochs=2"), run_dir=tmp_path / "res" / "run",
                resume=True)
    assert res.summary["steps"] == ref.summary["steps"] == 8
    wa, wb = weights(ref.run_dir), weights(res.run_dir)
    assert {k.split(".")[0] for k in wa} == {"G", "D"}
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_conditional_sampling_uses_labels(tmp_path):
    from profond.train.loop import Trainer

    t = Trainer(gan_cfg(tmp_path, "model.conditional=true"), run_dir=tmp_path / "run")
    m = t.method
    out = m.train_step(next(iter(m.train_data.batches(0))), t.ctx)
    assert torch.isfinite(out["loss_D"])
    a = m.sample(4, seed=0, labels=torch.tensor([0, 0, 0, 0]))
    b = m.sample(4, seed=0, labels=torch.tensor([1, 1, 1, 1]))
    assert a.shape == (4, 1, 8, 8) and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, b)
    assert torch.equal(a, m.sample(4, seed=0, labels=torch.zeros(4, dtype=torch.long)))
    with pytest.raises(ConfigError):
        m.sample(2, labels=torch.tensor([0, 10]))
    assert F.mse_loss(a, b).item() > 0


def test_conditional_generator_follows_its_labels(tmp_path):
    """A cGAN (eq. 8.17) trained 15 epochs on digits: a logistic regression fitted on the real
    digits reads the conditioning label back from the samples far above chance (measured 0.83);
    the same samples graded against shifted labels stay near chance."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from profond.train import train
    from profond.train.loop import load_run

    d = load_digits()
    clf = LogisticRegression(max_iter=2000).fit(d.data / 16.0, d.target)
    res = train(gan_cfg(tmp_path, "model.conditional=true", "train.epochs=15", "method.eval_n=0",
                        "method.grid_n=0", "model.g_hidden=[128]", "model.d_hidden=[128]"))
    m, _ = load_run(res.run_dir)
    labels = torch.arange(500) % 10
    pred = clf.predict(m.sample(500, seed=0, labels=labels).view(500, -1).numpy())
    acc = float((pred == labels.numpy()).mean())
    shifted = float((pred == ((labels + 3) % 10).numpy()).mean())
    assert acc > 0.5 and shifted < 0.25, (acc, shifted)


@needs_fmnist
def test_class_monitor_every_k_steps_is_averaged_over_its_steps(tmp_path):
    """The mode-collapse monitor runs on Fashion-MNIST-shaped data every ``monitor_every`` steps;
    the epoch row averages it over the steps that logged it, not over all steps."""
    from profond.contract import Callback
    from profond.train import train

    seen: list[dict] = []

    class Spy(Callback):
        def on_step_end(self, loop, step, metrics):
            seen.append(dict(metrics))

    cfg = digits_cfg(tmp_path, "data.name=fashion-mnist", "data.subset=320", "data.val_size=64",
                     "model.name=gan", "model.g_hidden=[32]", "model.d_hidden=[32]", "model.latent_dim=8",
                     "model.conditional=true", "method.monitor_every=2", "method.monitor_n=16",
                     "method.eval_n=0", "method.grid_n=0", "data.batch_size=32", "train.epochs=1")
    res = train(cfg, callbacks=[Spy()])
    logged = [s for s in seen if "class_entropy" in s]
    assert len(seen) >= 8 and len(logged) == (len(seen) + 1) // 2  # steps 0, 2, 4, ...
    row = res.history[-1]
    ent = sum(s["class_entropy"] for s in logged) / len(logged)
    assert row["train_class_entropy"] == pytest.approx(ent)
    assert 0 <= row["train_class_entropy"] <= 1 and 0 <= row["train_label_accuracy"] <= 1
    assert row["train_missing_classes"] == pytest.approx(sum(s["missing_classes"] for s in logged) / len(logged))


def test_collapse_counter_survives_resume(tmp_path, monkeypatch):
    """The collapse guard's counter is checkpointed: 2 collapsed steps before the interruption
    plus 1 after reach collapse_steps=3; a counter restarting at 0 would not fire in 2 steps."""
    from profond.train import train

    patch_perfect_discriminator(monkeypatch)
    args = ["method.collapse_steps=3", "method.eval_n=0", "method.grid_n=0", "data.subset=128"]
    train(gan_cfg(tmp_path, *args, "train.epochs=1"))  # 2 steps: counter 2 < 3
    meta = json.loads(next((tmp_path / "run" / "checkpoints").glob("*/meta.json")).read_text())
    assert meta["meta"]["loop"]["method_state"]["collapse_run"] == 2
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        train(gan_cfg(tmp_path, *args, "train.epochs=2"), run_dir=tmp_path / "run", resume=True)


def test_normless_critic_has_biases_so_it_is_not_homogeneous():
    """Without a norm layer the DCGAN critic keeps its conv biases: a bias-free conv + LeakyReLU
    stack is positively homogeneous (D(a x) = a D(x)) and cannot see a grey vs a black background
    (measured before the fix: hinge + SN samples with grey backgrounds). With BatchNorm the
    norm's shift plays that role and the convs stay bias-free, as in DCGAN."""
    from profond.models.gan import dcgan

    torch.manual_seed(0)
    none = dcgan(features_d=8, features_g=8, spectral_norm=True, d_norm="none").D.eval()
    convs = [m for m in none.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs)
    for c in convs:  # non-zero biases (they start at 0)
        torch.nn.init.normal_(c.bias, 0.0, 0.1)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert not torch.allclose(none(2 * x), 2 * none(x), atol=1e-4)
    batch = dcgan(features_d=8, features_g=8).D
    assert all(m.bias is None for m in batch.modules() if isinstance(m, torch.nn.Conv2d))
