"""Image-to-image GANs (course 004 "Pix2Pix", "Super-Résolution avec GANs"): U-Net / PatchGAN /
SRNet shapes, skip connections, deterministic task inputs, G/D optimizer separation, short
trainings on sklearn digits that beat the naive baselines, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from profond.contract import Env
from profond.errors import ConfigError
from profond.methods.img2img import Pix2PixMethod, SRGANMethod, center_mask, sobel_edges
from profond.models.unet import PatchGAN, SRNet, UNet
from profond.registry import METHODS, MODELS
from profond.train import load_run, train
from tests.conftest import digits_cfg

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL_P2P = ("model.name=unet", "model.base=8", "method.name=pix2pix", "method.d_base=8",
             "data.batch_size=64", "optim.lr=0.005")
SMALL_SR = ("model.name=srnet", "model.width=8", "model.blocks=1", "method.name=srgan", "method.d_base=8",
            "method.feature_weight=0", "data.batch_size=64", "optim.lr=0.005")


def weights(run_dir: Path, net: str) -> dict[str, torch.Tensor]:
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["path"]
    files = sorted((run_dir / "checkpoints" / latest).glob("*.safetensors"))
    out = {}
    for f in files:
        out.update({f"{f.stem}.{k}": v for k, v in load_file(str(f)).items()})
    assert out, files
    return out


# ----------------------------------------------------------------------------------------
# nets


@pytest.mark.parametrize("hw", [28, 8, 10])
def test_unet_and_patchgan_shapes(hw):
    g = UNet(1, 1, base=8, depth=2)
    x = torch.rand(3, 1, hw, hw)
    y = g(x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1  # padded to 12 and cropped for 10
    d = PatchGAN(2, base=8, n_layers=2)
    grid = {28: 7, 8: 2, 10: 2}[hw]  # two stride-2 4x4 convs (padding 1): 28 -> 14 -> 7
    assert d(x, y).shape == (3, 1, grid, grid)
    assert MODELS.build("unet", in_shape=(1, 28, 28)).__class__ is UNet


def test_unet_output_depends_on_the_same_full_resolution_input_pixel():
    torch.manual_seed(0)
    g = UNet(1, 1, base=8, depth=2, skips=True).eval()
    x = torch.rand(1, 1, 28, 28, requires_grad=True)
    g(x)[0, 0, 13, 13].backward()
    assert x.grad[0, 0, 13, 13].abs() > 0
    # the full-resolution skip alone carries it: cut every path through the bottleneck
    g.downs[0].register_forward_hook(lambda mod, inp, out: out.detach() * 0)
    x.grad = None
    g(x)[0, 0, 13, 13].backward()
    assert x.grad[0, 0, 13, 13].abs() > 0 and x.grad[0, 0, 0, 0] == 0  # 3x3 + 3x3 convs: local
    assert sum(p.numel() for p in UNet(1, 1, 8, 2, skips=True).parameters()) > \
        sum(p.numel() for p in UNet(1, 1, 8, 2, skips=False).parameters())


def test_srnet_starts_as_bicubic_and_doubles_resolution():
    net = SRNet(1, width=8, blocks=1).eval()
    lr = torch.rand(2, 1, 14, 14)
    out = net(lr)
    assert out.shape == (2, 1, 28, 28)
    torch.testing.assert_close(out, F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False))


# ----------------------------------------------------------------------------------------
# task inputs


def test_edges_of_blank_images_are_zero_and_of_a_step_are_not():
    for v in (0.0, 0.5, 1.0):
        assert torch.equal(sobel_edges(torch.full((2, 1, 28, 28), v)), torch.zeros(2, 1, 28, 28))
    step = torch.zeros(1, 1, 28, 28)
    step[..., 14:] = 1.0
    e = sobel_edges(step)
    assert e[0, 0, 5, 13] > 0 and e[0, 0, 5, 14] > 0 and e[0, 0, 5, 3] == 0 and e.max() <= 1


def test_inpaint_mask_covers_the_stated_square_and_inputs_are_deterministic(tmp_path):
    m = center_mask((28, 28), 12)
    assert m.sum() == 144 and m[0, 0, 8:20, 8:20].all()
    assert not m[0, 0, 7].any() and not m[0, 0, 20].any() and not m[0, 0, :, 7].any()
    method = Pix2PixMethod(digits_cfg(tmp_path, *SMALL_P2P, "method.task=inpaint"), Env(torch.device("cpu")),
                           with_data=False)
    assert method.mask_size == 3  # round(3 * 8 / 7)
    x, _ = method.test_images(4)
    a = method.make_inputs(x)
    mask = center_mask(x.shape, 3)
    assert torch.equal(a, method.make_inputs(x))
    assert (a[mask.expand_as(a)] == 0).all() and torch.equal(a[~mask.expand_as(a)], x[~mask.expand_as(x)])
    base = method.baseline(a)  # the mask filled with the training mean image
    assert torch.equal(base[~mask.expand_as(a)], x[~mask.expand_as(x)])
    out = method.translate(a)  # only the hole is generated
    assert torch.equal(out[~mask.expand_as(a)], x[~mask.expand_as(x)]) and not torch.equal(out, a)
    with pytest.raises(ConfigError, match="task"):
        Pix2PixMethod(digits_cfg(tmp_path, *SMALL_P2P, "method.task=colour"), Env(torch.device("cpu")),
                      with_data=False)


# ----------------------------------------------------------------------------------------
# G and D optimizers


class RecordingCtx:
    """A stand-in for the loop's StepContext: checks that each update touches only its net."""

    def __init__(self, method):
        self.m = method
        self.opts = {k: torch.optim.Adam(v, lr=0.01) for k, v in method.optimizer_params().items()}
        self.updated: list[tuple[str, set[str]]] = []
        self.step = 0

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def optimize(self, loss, name):
        before = {(n, k): p.detach().clone() for n, net in self.m.nets.items() for k, p in net.named_parameters()}
        self.opts[name].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[name].step()
        changed = {n for n, net in self.m.nets.items() for k, p in net.named_parameters()
                   if not torch.equal(before[(n, k)], p.detach())}
        self.updated.append((name, changed))


def test_g_and_d_optimizers_update_only_their_own_nets(tmp_path):
    torch.manual_seed(0)
    method = METHODS.get("pix2pix")(digits_cfg(tmp_path, *SMALL_P2P), Env(torch.device("cpu")))
    method.raw_nets = dict(method.nets)
    groups = method.optimizer_params()
    assert set(groups) == {"G", "D"}
    assert {id(p) for p in groups["G"]} == {id(p) for p in method.nets["G"].parameters()}
    assert {id(p) for p in groups["D"]} == {id(p) for p in method.nets["D"].parameters()}
    ctx = RecordingCtx(method)
    batch = next(iter(method.train_data.batches(0)))
    out = method.train_step(batch, ctx)
    assert ctx.updated == [("D", {"D"}), ("G", {"G"})]
    assert {"loss_d", "loss_g", "adv", "l1"} <= set(out)


# ----------------------------------------------------------------------------------------
# trained runs on digits


def test_pix2pix_edges_beats_the_mean_image_baseline_and_translates(tmp_path):
    res = train(digits_cfg(tmp_path, *SMALL_P2P, "method.task=edges", "train.epochs=2"))
    f = res.summary["final"]
    assert f["val_psnr"] > f["val_baseline_psnr"] + 1.0, f  # ~16 vs 11.5 dB
    assert f["test_psnr_gain"] > 1.0 and f["val_loss"] == pytest.approx(f["val_l1"])
    method, _ = load_run(res.run_dir, device="cpu")
    x, _ = method.test_images(5)
    y = method.translate(method.make_inputs(x))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not method.can_sample


def test_srgan_beats_bicubic_and_its_own_init(tmp_path):
    cfg = digits_cfg(tmp_path, *SMALL_SR, "train.epochs=2")
    res = train(cfg)
    f = res.summary["final"]
    method, trainer = load_run(res.run_dir, device="cpu")
    _, val = method.build_loaders()
    init = SRGANMethod(method.cfg, method.env, with_data=False)
    r0 = init.evaluate(val, trainer.ctx)
    assert r0["psnr"] == pytest.approx(r0["baseline_psnr"], abs=1e-4)  # zero-init tail: bicubic
    assert r0["baseline_psnr"] == pytest.approx(f["val_baseline_psnr"]) and 12.5 < r0["baseline_psnr"] < 14.5
    assert f["val_psnr"] > r0["psnr"] + 0.5 and f["val_ssim"] > f["val_baseline_ssim"], f


def test_pix2pix_inpaint_resume_is_exact(tmp_path):
    args = [*SMALL_P2P, "method.task=inpaint", "data.subset=256"]
    ref = train(digits_cfg(tmp_path / "ref", *args, "train.epochs=2"))
    train(digits_cfg(tmp_path / "res", *args, "train.epochs=1"))
    res = train(digits_cfg(tmp_path / "res", *args, "train.epochs=2"), run_dir=tmp_path / "res" / "run",
                resume=True)
    assert res.summary["steps"] == ref.summary["steps"] == 8
    wa, wb = weights(ref.run_dir, "G"), weights(res.run_dir, "G")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cyclegan_learns_cycle_consistency_on_two_digit_classes(tmp_path):
    cfg = digits_cfg(tmp_path, "model.name=unet", "model.base=8", "method.name=cyclegan", "method.d_base=8",
                     "data.val_size=60", "data.batch_size=32", "optim.lr=0.005", "train.epochs=2")
    res = train(cfg)
    method, trainer = load_run(res.run_dir, device="cpu")
    assert set(method.optimizer_params()) == {"G", "D"}
    _, val = method.build_loaders()
    assert set(torch.cat([y for _, y in val.batches(0)]).tolist()) == {7, 9}  # only the two domains
    init = METHODS.get("cyclegan")(method.cfg, method.env, with_data=False).evaluate(val, trainer.ctx)
    f = res.summary["final"]
    assert f["val_cycle_l1"] < 0.7 * init["cycle_l1"], (f, init)
    assert "val_to_b_rate" not in f  # the fmnist classifier only judges fashion-mnist domains
    x, _ = method.test_images(3)
    assert method.translate(x).shape == x.shape and method.translate(x, "ba").shape == x.shape


def test_sr_content_loss_uses_the_frozen_fmnist_features(tmp_path):
    cfg = digits_cfg(tmp_path, *SMALL_SR, "method.feature_weight=0.5")
    method = SRGANMethod(cfg, Env(torch.device("cpu")), with_data=False)
    x, _ = method.test_images(4)
    fake = x.flip(-1).clone().requires_grad_(True)
    loss, parts = method.content_loss(fake, x)
    assert set(parts) == {"l1", "feature"} and parts["feature"] > 0
    torch.testing.assert_close(loss, parts["l1"] + 0.5 * parts["feature"])
    loss.backward()
    assert fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in method.feature_net().parameters())  # frozen, not trained
    assert method.content_loss(x, x)[1]["feature"] == 0
    assert torch.equal(method.make_inputs(x), F.avg_pool2d(x, 2))
    with pytest.raises(ConfigError, match="scale"):
        SRGANMethod(digits_cfg(tmp_path, *SMALL_SR, "method.scale=4"), Env(torch.device("cpu")), with_data=False)
