"""CycleGAN (course 004 "CycleGAN: Traduction d'Image Non-Supervisée", Zhu et al. 2017):
the image pool of past fakes, the U-Net options it uses (no full-resolution skip, instance
norm), a PatchGAN that sees the whole garment, option validation, the fmnist target-class
rates of the evaluation, and a short unpaired run on two digit classes that learns the cycle
and resumes exactly (pool included)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from profond.contract import Env
from profond.errors import ConfigError
from profond.methods.img2img import CycleGANMethod, ImagePool
from profond.models.unet import PatchGAN, UNet
from profond.registry import MODELS
from profond.train import load_run, train
from tests.conftest import digits_cfg, needs_fmnist

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_CG = ("model.name=unet", "model.base=8", "method.name=cyclegan", "method.d_base=8",
            "data.val_size=60", "data.batch_size=32", "optim.lr=0.005")
CPU = Env(torch.device("cpu"))


# ----------------------------------------------------------------------------------------
# image pool


def test_image_pool_fills_then_returns_past_fakes_half_of_the_time():
    torch.manual_seed(0)
    pool = ImagePool(10)
    ids = lambda t: t[:, 0, 0, 0].long().tolist()  # noqa: E731 - image i is the constant image i
    img = lambda lo, hi: torch.arange(lo, hi).float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2)  # noqa: E731
    assert ids(pool.query(img(0, 10))) == list(range(10)) and len(pool) == 10  # filling: fresh images back
    n = 4000
    out = ids(pool.query(img(10, 10 + n)))
    past = [(i + 10, v) for i, v in enumerate(out) if v != i + 10]
    assert 0.46 < len(past) / n < 0.54, len(past) / n  # a past fake with probability 1/2
    assert all(v < i for i, v in past)  # ... given to the pool earlier
    assert len({v for _, v in past}) == len(past)  # ... and swapped out: never returned twice
    stored = set(ids(torch.stack(pool.images)))
    assert len(pool) == 10 and stored.isdisjoint(v for _, v in past)
    assert min(stored) >= 10 + n - 200  # the pool holds recent fakes (the new ones are stored)


def test_image_pool_size_zero_is_the_identity_and_state_round_trips():
    x = torch.rand(5, 1, 3, 3, requires_grad=True)
    out = ImagePool(0).query(x)
    assert torch.equal(out, x) and not out.requires_grad
    pool = ImagePool(4)
    pool.query(torch.rand(3, 1, 3, 3))
    state = pool.state_dict()
    other = ImagePool(4)
    other.load_state_dict(state)
    assert len(other) == 3 and all(torch.equal(a, b) for a, b in zip(pool.images, other.images, strict=True))
    empty = ImagePool(4)
    empty.load_state_dict(ImagePool(4).state_dict())
    assert len(empty) == 0


# ----------------------------------------------------------------------------------------
# generator / discriminator options


def test_unet_inner_skips_cut_the_pixel_copy_path_and_keep_defaults():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    for skips in ("inner", "none", False):
        g = UNet(1, 1, base=8, depth=2, skips=skips).eval()
        assert g(x).shape == x.shape
        # cut the encoder after the first conv: without the full-resolution skip nothing reaches the output
        g.downs[0].register_forward_hook(lambda mod, inp, out: out.detach() * 0)
        x.grad = None
        g(x)[0, 0, 13, 13].backward()
        assert x.grad is None or x.grad.abs().sum() == 0, skips
    sizes = {s: sum(p.numel() for p in UNet(1, 1, 8, 2, skips=s).parameters()) for s in ("all", "inner", "none")}
    assert sizes["all"] > sizes["inner"] > sizes["none"]
    assert sizes["all"] == sum(p.numel() for p in UNet(1, 1, 8, 2).parameters())  # default unchanged: all
    assert UNet(1, 1, 8, 2, skips=True).use_skip == [True, True]
    assert UNet(1, 1, 8, 2, skips="inner").use_skip == [True, False]  # coarsest stage first
    with pytest.raises(ConfigError, match="skips"):
        UNet(1, 1, 8, 2, skips="outer")
    with pytest.raises(ConfigError, match="norm"):
        UNet(1, 1, 8, 2, norm="layer")


def test_unet_instance_norm_is_the_same_in_train_and_eval_mode():
    torch.manual_seed(0)
    g = MODELS.build("unet", in_shape=(1, 28, 28), base=8, skips="inner", norm="instance")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in g.modules())
    x = torch.rand(4, 1, 28, 28)
    g.train()
    y_train = g(x)
    g.eval()
    torch.testing.assert_close(g(x), y_train)
    torch.testing.assert_close(g(x[:1]), y_train[:1])  # per-image statistics: batch-independent
    default = MODELS.build("unet", in_shape=(1, 28, 28), base=8)
    assert any(isinstance(m, nn.BatchNorm2d) for m in default.modules())


def test_three_layer_patchgan_sees_the_whole_28x28_garment():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    deep = PatchGAN(1, base=8, n_layers=3).eval()
    out = deep(x)
    assert out.shape == (1, 1, 3, 3)
    out[0, 0, 1, 1].backward()
    assert (x.grad[0, 0] != 0).float().mean() == 1.0  # every pixel, corners included
    x.grad = None
    PatchGAN(1, base=8, n_layers=2).eval()(x)[0, 0, 3, 3].backward()
    assert (x.grad[0, 0] != 0).float().mean() < 0.5 and x.grad[0, 0, 0, 0] == 0  # 2 layers: a local patch


# ----------------------------------------------------------------------------------------
# the method


@pytest.mark.parametrize("override, match", [
    ("method.pool_size=-1", "pool_size"), ("method.adv_weight=-1", "adv_weight"),
    ("method.identity_weight=-0.5", "identity_weight"), ("method.d_layers=0", "d_layers"),
    ("method.domain_b=7", "domain_a / domain_b"), ("method.domain_a=10", "domain_a / domain_b"),
    ("model.skips=outer", "skips"), ("method.loss=l2", "method.loss"),
])
def test_cyclegan_rejects_bad_options(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match):
        CycleGANMethod(digits_cfg(tmp_path, *SMALL_CG, override), CPU, with_data=False)
    with pytest.raises(ConfigError, match="model.name"):
        CycleGANMethod(digits_cfg(tmp_path, *SMALL_CG, "model.name=srnet"), CPU, with_data=False)


def test_adversarial_weight_zero_leaves_only_cycle_and_identity(tmp_path):
    torch.manual_seed(0)
    cfg = digits_cfg(tmp_path, *SMALL_CG, "method.adv_weight=0", "method.identity_weight=0")
    m = CycleGANMethod(cfg, CPU, with_data=True)

    class Ctx:
        losses: dict[str, torch.Tensor] = {}

        def autocast(self):
            import contextlib

            return contextlib.nullcontext()

        def optimize(self, loss, name):
            self.losses[name] = loss.detach()

    ctx = Ctx()
    x, y = next(iter(m.train_data.batches(0)))
    out = m.train_step((x, y), ctx)
    assert out["adv"] == 0 and out["identity"] == 0
    torch.testing.assert_close(ctx.losses["G"], 10.0 * out["cycle"])
    assert len(m.pools["a"]) == int((y == 9).sum()) and len(m.pools["b"]) == int((y == 7).sum())


def test_cyclegan_learns_the_cycle_and_resumes_exactly_with_its_pool(tmp_path):
    args = [*SMALL_CG, "model.skips=inner", "model.norm=instance", "method.identity_weight=0",
            "method.d_layers=3", "method.pool_size=8", "data.subset=128"]
    ref = train(digits_cfg(tmp_path / "ref", *args, "train.epochs=4"))
    method, trainer = load_run(ref.run_dir, device="cpu")
    _, val = method.build_loaders()
    init = CycleGANMethod(method.cfg, method.env, with_data=False).evaluate(val, trainer.ctx)
    f = ref.summary["final"]
    assert f["val_cycle_l1"] < 0.7 * init["cycle_l1"] and f["val_cycle_psnr"] > init["cycle_psnr"] + 2, (f, init)
    latest = json.loads((ref.run_dir / "checkpoints" / "latest.json").read_text())["path"]
    meta = json.loads((ref.run_dir / "checkpoints" / latest / "meta.json").read_text())
    pools = meta["meta"]["loop"]["method_state"]["pools"]
    assert pools["a"]["shape"] == pools["b"]["shape"] == [8, 1, 8, 8]  # the pools travel in checkpoints
    x, _ = method.test_images(3)
    assert method.translate(x).shape == x.shape and method.translate(x, "ba").shape == x.shape
    with pytest.raises(ConfigError, match="direction"):
        method.translate(x, "ab2")
    # stop after 2 epochs, resume to 4: same weights as the uninterrupted run (pool and RNG restored)
    train(digits_cfg(tmp_path / "res", *args, "train.epochs=2"))
    res = train(digits_cfg(tmp_path / "res", *args, "train.epochs=4"), run_dir=tmp_path / "res" / "run",
                resume=True)
    assert res.summary["steps"] == ref.summary["steps"]
    a, b = load_run(res.run_dir, device="cpu")[0], method
    for name in ("G_ab", "D_b"):
        sa, sb = a.raw_nets[name].state_dict(), b.raw_nets[name].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


@needs_fmnist
def test_fmnist_evaluation_reports_target_class_rates_against_the_no_op_baseline(tmp_path):
    from profond.config import resolve
    from profond.data import Batches
    from profond.methods.generative import PIXELS

    cfg = resolve(overrides=["model.name=unet", "model.base=8", "method.name=cyclegan", "method.d_base=8",
                             "data.name=fashion-mnist", "train.device=cpu", f"out={tmp_path}", "name=run"])
    m = CycleGANMethod(cfg, CPU, with_data=False)
    for net in m.nets.values():
        net.eval()
    # an exact identity translation: the rates are the classifier's on the untranslated images
    m.nets["G_ab"] = m.nets["G_ba"] = nn.Identity()
    m.raw_nets = dict(m.nets)
    d = m.data
    keep = (d.test_y == 7) | (d.test_y == 9)
    data = Batches(d.test_x[keep][:400], d.test_y[keep][:400], batch_size=200, shuffle=False,
                   device=torch.device("cpu"), **PIXELS)
    r = m.evaluate(data, None, detailed=True)  # `profond eval` asks for details
    assert r["cycle_l1"] == 0 and r["identity_l1"] == 0 and r["cycle_psnr"] > 50
    assert r["real_a_rate"] > 0.85 and r["real_b_rate"] > 0.85  # the feature net knows both classes
    assert r["to_b_rate"] == r["source_as_b_rate"] < 0.1 and r["to_a_rate"] == r["source_as_a_rate"] < 0.1
