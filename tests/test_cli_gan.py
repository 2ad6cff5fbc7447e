"""`profond sample --input` on image-to-image runs (pix2pix, srgan, cyclegan) and `profond latent`
on GAN runs (linear vs spherical interpolation, the class × z grid of a conditional GAN, §8.5),
with the unit tests of :func:`profond.methods.generative.slerp`.

The runs are sklearn-digits (8x8) models trained for one optimizer step, once per module: the
commands only need a run folder with a checkpoint, and the tests compare what the commands
print and draw with what the loaded method computes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from profond.cli import app
from profond.data.inputs import read_image as _read_image
from profond.methods.autoencoder import psnr
from profond.methods.gan import GANMethod
from profond.methods.generative import slerp
from profond.train import load_run
from profond.viz.images import save_image_table

pytestmark = pytest.mark.usefixtures("one_thread")

runner = CliRunner()

TINY_GAN = ("model.name=gan", "model.g_hidden=[32]", "model.d_hidden=[32]", "model.latent_dim=8",
            "method.eval_n=0", "method.grid_n=0", "data.batch_size=64")
RUNS = {
    "gan": TINY_GAN,
    "cgan": (*TINY_GAN, "model.conditional=true"),
    "pix2pix": ("model.name=unet", "model.base=8", "method.name=pix2pix", "method.d_base=8", "method.test_n=64",
                "data.batch_size=64"),
    "srgan": ("model.name=srnet", "model.width=8", "model.blocks=1", "method.name=srgan", "method.d_base=8",
              "method.feature_weight=0", "method.test_n=64", "data.batch_size=64"),
    "cyclegan": ("model.name=unet", "model.base=8", "method.name=cyclegan", "method.d_base=8", "data.val_size=60",
                 "data.batch_size=32"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One-step runs (a checkpoint is all the commands need); curves.png is skipped (slow to draw)."""
    from profond.config import resolve
    from profond.train import train

    root = tmp_path_factory.mktemp("ganruns")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / ".cache"))
        mp.delenv("PROFOND_DATA", raising=False)
        mp.setattr("profond.viz.curves.plot_curves", lambda *a, **k: None)
        for name, overrides in RUNS.items():
            cfg = resolve(overrides=["data.name=digits", "data.val_size=200", "train.quiet=true", "train.device=cpu",
                                     "train.epochs=1", "train.max_steps=1", "data.subset=128", f"out={root}",
                                     f"name={name}", *overrides])
            out[name] = train(cfg).run_dir
    return out


@pytest.fixture(scope="module")
def methods(runs) -> dict[str, object]:
    return {k: load_run(v, device="cpu")[0] for k, v in runs.items()}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: object):
    r = invoke(*args, "--device", "cpu")
    assert r.exit_code == 0, r.output
    return r


def png(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        size = im.size
        im.verify()
    return size


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """``torch.allclose`` with a message (torch.testing.assert_close costs ~2 s of imports at first use)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual - expected).abs().max()


def table_row(output: str, name: str) -> list[float]:
    """The numbers of the table row that starts with ``name`` (rich box characters around)."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line)]
        cells = [c for c in cells if c]
        if cells and cells[0] == name:
            return [float(c) for c in cells[1:]]
    raise AssertionError(f"no row {name!r} in:\n{output}")


# -- slerp ------------------------------------------------------------------------------------


def test_slerp_endpoints_are_exact():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    path = slerp(a[0], b[0], torch.linspace(0, 1, 7))
    assert path.shape == (7, 16) and torch.equal(path[0], a[0]) and torch.equal(path[-1], b[0])
    assert slerp(a, b, torch.tensor([[0.0], [0.5], [1.0]])).shape == (3, 3, 16)  # T x N pairs


def test_slerp_keeps_the_norm_of_equal_norm_endpoints():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 32, generator=g, dtype=torch.float64), torch.randn(5, 32, generator=g, dtype=torch.float64)
    b = b * (a.norm(dim=1, keepdim=True) / b.norm(dim=1, keepdim=True))
    t = torch.linspace(0, 1, 11, dtype=torch.float64).view(-1, 1)
    z = slerp(a, b, t)
    close(z.norm(dim=-1), a.norm(dim=1).expand(11, 5), rtol=1e-12, atol=0)
    lerp_mid = (a + b) / 2  # the linear path cuts inside the sphere
    assert (lerp_mid.norm(dim=1) < 0.95 * a.norm(dim=1)).all()


def test_slerp_reduces_to_lerp_for_parallel_and_opposite_vectors():
    a = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    for b in (2.5 * a, a.clone(), -a):
        expected = (1 - t)[:, None] * a + t[:, None] * b
        close(slerp(a, b, t), expected, rtol=1e-12, atol=1e-12)
        assert torch.isfinite(slerp(a.float(), b.float(), t.float())).all()


def test_slerp_is_a_rotation_in_2d():
    r, theta = 2.0, 1.2
    a = torch.tensor([r, 0.0], dtype=torch.float64)
    b = torch.tensor([r * math.cos(theta), r * math.sin(theta)], dtype=torch.float64)
    for t in (0.1, 0.25, 0.5, 0.9):
        expected = torch.tensor([r * math.cos(t * theta), r * math.sin(t * theta)], dtype=torch.float64)
        close(slerp(a, b, t), expected, rtol=1e-12, atol=1e-12)
    # a small angle in float32 stays accurate (no acos of ~1)
    c = torch.tensor([1.0, 1e-4])
    close(slerp(torch.tensor([1.0, 0.0]), c, 0.5), torch.tensor([1.0, 5e-5]), rtol=1e-5,
                               atol=1e-7)


# -- profond sample --input (image-to-image) ---------------------------------------------------


def test_help_documents_input_and_gan_latent():
    r = invoke("sample", "--help")
    assert r.exit_code == 0 and "--input" in r.output and "--as-input" in r.output and "translation.png" in r.output
    r = invoke("latent", "--help")
    assert r.exit_code == 0 and "slerp" in r.output and "class_grid.png" in r.output


def test_pix2pix_translation_png_and_psnr_table(runs, methods, tmp_path):
    r = ok("sample", runs["pix2pix"], "--input", "0,5,9", "--out", tmp_path / "a")
    path = tmp_path / "a" / "translation.png"
    assert str(path) in r.output
    m = methods["pix2pix"]
    x = m.test_images()[0][[0, 5, 9]]
    a = m.make_inputs(x)
    p_out, p_base = psnr(m.translate(a), x), psnr(m.baseline(a).clamp(0, 1), x)
    for k, i in enumerate((0, 5, 9)):
        out, base, gain = table_row(r.output, f"test #{i}")
        assert out == pytest.approx(float(p_out[k]), abs=0.006)
        assert base == pytest.approx(float(p_base[k]), abs=0.006)
        assert gain == pytest.approx(out - base, abs=0.011)
    assert table_row(r.output, "mean")[0] == pytest.approx(float(p_out.mean()), abs=0.006)
    # one row per example (3 here, 1 below): the height grows with the rows, the width does not
    ok("sample", runs["pix2pix"], "--input", "3", "--out", tmp_path / "b")
    (w3, h3), (w1, h1) = (png(tmp_path / d / "translation.png") for d in "ab")
    assert abs(w1 - w3) <= 8 and 2 * 120 < h3 - h1 < 2 * 180  # ≈ 1.25 in per row at 120 dpi


def test_image_table_size_is_linear_in_rows_and_columns(tmp_path):
    cols = [torch.rand(5, 1, 4, 4), torch.rand(5, 1, 8, 8), torch.rand(5, 3, 8, 8)]
    sizes = {}
    for n, k in ((1, 3), (3, 3), (5, 3), (5, 2)):
        path = save_image_table([c[:n] for c in cols[:k]], tmp_path / f"{n}-{k}.png", ["a", "b", "c"][:k],
                                row_labels=[f"#{i}" for i in range(n)], notes=[None, ["1 dB"] * n, None][:k])
        sizes[n, k] = png(path)
    (w1, h1), (w3, h3), (w5, h5) = sizes[1, 3], sizes[3, 3], sizes[5, 3]
    per_row = (h5 - h1) / 4
    assert 120 < per_row < 180 and abs((h3 - h1) / 2 - per_row) < 0.1 * per_row
    assert max(w1, w3, w5) - min(w1, w3, w5) <= 16 and 100 < w5 - sizes[5, 2][0] < 160  # ≈ 1.1 in a column
    with pytest.raises(ValueError, match="same number"):
        save_image_table([cols[0][:2], cols[1][:3]], tmp_path / "bad.png", ["a", "b"])
    with pytest.raises(ValueError, match="one title per column"):
        save_image_table(cols, tmp_path / "bad.png", ["a"])


def test_img2img_without_input_translates_the_first_test_images(runs, tmp_path):
    r = ok("sample", runs["pix2pix"], "--n", "2", "--out", tmp_path)
    assert "no --input" in r.output and "test #1" in r.output and "test #2" not in r.output
    assert png(tmp_path / "translation.png")


def test_srgan_image_file_is_the_target(runs, methods, tmp_path):
    rgb = np.zeros((30, 44, 3), np.uint8)
    rgb[6:24, 12:30] = (250, 180, 60)
    rgb[10:14, 16:26] = 30
    Image.fromarray(rgb).save(tmp_path / "shoe.png")
    r = ok("sample", runs["srgan"], "--input", tmp_path / "shoe.png", "--out", tmp_path / "t")
    m = methods["srgan"]
    ref = Image.open(tmp_path / "shoe.png").convert("L").resize((8, 8), Image.Resampling.LANCZOS)
    target = torch.from_numpy(np.asarray(ref, np.float32) / 255.0)[None, None]
    a = m.make_inputs(target)
    assert a.shape == (1, 1, 4, 4)
    out, base, _ = table_row(r.output, "shoe.png")
    assert out == pytest.approx(float(psnr(m.translate(a), target)), abs=0.006)
    assert base == pytest.approx(float(psnr(m.baseline(a).clamp(0, 1), target)), abs=0.006)  # bicubic
    w_target, _ = png(tmp_path / "t" / "translation.png")
    # --as-input: the file is the 4x4 low-res input; no target column, no PSNR
    Image.fromarray(np.full((5, 7), 128, np.uint8)).save(tmp_path / "small.jpg")
    r = ok("sample", runs["srgan"], "--input", tmp_path / "small.jpg", "--as-input", "--out", tmp_path / "s")
    assert "no PSNR" in r.output and "output PSNR" not in r.output
    w_input, _ = png(tmp_path / "s" / "translation.png")
    assert w_input < 0.85 * w_target  # 3 columns instead of 4


def test_read_image_grayscale_resize_alpha_and_invert(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:10, :, :] = (255, 255, 255, 255)  # opaque white top half, transparent bottom half
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = _read_image(tmp_path / "a.png", (1, 4, 4), invert=False)
    assert x.shape == (1, 1, 4, 4) and x.dtype == torch.float32
    assert (x[0, 0, :2] > 0.9).all() and (x[0, 0, 2:] < 0.1).all()  # Lanczos rings a little at the seam
    y = _read_image(tmp_path / "a.png", (1, 4, 4), invert=True)  # transparent = white page, then 1 - v
    assert torch.allclose(y, torch.zeros_like(y), atol=1e-6)
    assert _read_image(tmp_path / "a.png", (3, 8, 6), invert=False).shape == (1, 3, 8, 6)


def test_cyclegan_cycle_columns_and_psnr(runs, methods, tmp_path):
    r = ok("sample", runs["cyclegan"], "--input", "0,2", "--direction", "ba", "--out", tmp_path)
    assert png(tmp_path / "translation-ba.png")
    m = methods["cyclegan"]
    x, y = m.test_images()
    b = m.split(x, y)[1][[0, 2]]
    back = m.translate(m.translate(b, direction="ba"), direction="ab")
    for k, i in enumerate((0, 2)):
        (p,) = table_row(r.output, f"B #{i}")
        assert p == pytest.approx(float(psnr(back[k: k + 1], b[k: k + 1])), abs=0.006)


# -- profond latent on GANs -------------------------------------------------------------------


@pytest.fixture
def decode_calls(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
    """Every GANMethod.decode call of the command: (z, labels, images)."""
    calls = []
    orig = GANMethod.decode

    def spy(self, z, labels=None):
        imgs = orig(self, z, labels)
        calls.append((z.detach().cpu().clone(), None if labels is None else torch.as_tensor(labels).cpu().clone(),
                      imgs.clone()))
        return imgs

    monkeypatch.setattr(GANMethod, "decode", spy)
    return calls


def test_gan_latent_interpolates_linearly_and_spherically(runs, methods, decode_calls, tmp_path):
    r = ok("latent", runs["gan"], "--pairs", "2", "--steps", "5", "--seed", "3", "--out", tmp_path / "two")
    assert str(tmp_path / "two" / "interpolation.png") in r.output and "slerp" in r.output
    assert not (tmp_path / "two" / "class_grid.png").exists()
    m = methods["gan"]
    z = m.z(4, generator=m.generator(3)).cpu().float()
    t = torch.linspace(0, 1, 5)
    assert len(decode_calls) == 4  # (linear, slerp) per pair
    for k in range(2):
        za, zb = z[2 * k], z[2 * k + 1]
        (lin, lab_l, _), (sph, lab_s, imgs) = decode_calls[2 * k], decode_calls[2 * k + 1]
        assert lab_l is None and lab_s is None
        close(lin, (1 - t)[:, None] * za + t[:, None] * zb)
        close(sph, slerp(za, zb, t))
        assert torch.equal(sph[0], za) and torch.equal(sph[-1], zb)
        close(sph.norm(dim=1)[2], (za.norm() + zb.norm()) / 2, rtol=0.2, atol=0)
        close(imgs, m.decode(sph))
    ok("latent", runs["gan"], "--pairs", "4", "--steps", "5", "--seed", "3", "--out", tmp_path / "four")
    h2, h4 = (png(tmp_path / d / "interpolation.png")[1] for d in ("two", "four"))
    assert h4 > 1.4 * h2  # 8 labelled rows instead of 4


def test_conditional_gan_class_grid_row_k_is_class_k(runs, methods, decode_calls, tmp_path):
    r = ok("latent", runs["cgan"], "--pairs", "2", "--steps", "4", "--out", tmp_path)
    assert (tmp_path / "interpolation.png").is_file() and str(tmp_path / "class_grid.png") in r.output
    m = methods["cgan"]
    k_cls = m.num_classes
    # interpolation: pair k in class k, the whole row
    for call, c in zip(decode_calls[:4], (0, 0, 1, 1), strict=True):
        assert torch.equal(call[1], torch.full((4,), c))
    z, labels, imgs = decode_calls[4]
    zc = m.z(4, generator=m.generator(0)).cpu().float()
    assert torch.equal(labels, torch.arange(k_cls).repeat_interleave(4))
    assert torch.equal(z.view(k_cls, 4, -1), zc.expand(k_cls, 4, -1))  # same z in every row of a column
    rows = imgs.view(k_cls, 4, *imgs.shape[1:])
    for k in (0, 3, k_cls - 1):
        close(rows[k], m.decode(zc, torch.full((4,), k)))
    assert not torch.equal(rows[0], rows[1])
    _, h = png(tmp_path / "class_grid.png")
    _, h_interp = png(tmp_path / "interpolation.png")
    assert h > 1.5 * h_interp  # 10 class rows vs 4 interpolation rows


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["sample", "GAN", "--input", "3"], ["image-to-image", "drop --input"]),
    (["sample", "P2P", "--input", "100000"], ["out of range", "0..358"]),
    (["sample", "P2P", "--input", "0-8"], ["no image file", "0:8", "PNG/JPG"]),
    (["sample", "P2P", "--input", "BADFILE"], ["cannot read it as an image", "PNG or JPG"]),
    (["sample", "P2P", "--input", "0:100"], ["at most 64", "split"]),
    (["sample", "P2P", "--input", "5:2"], ["empty range", "END > START"]),
    (["sample", "P2P", "--input", "3", "--as-input"], ["drop --as-input"]),
    (["sample", "P2P", "--direction", "ba"], ["CycleGAN", "drop it"]),
    (["sample", "CYC", "--direction", "xy"], ["ab or ba"]),
    (["sample", "P2P", "--recon"], ["drop --recon"]),
    (["latent", "GAN", "--label", "2"], ["conditional", "drop it"]),
    (["latent", "GAN", "--pairs", "0"], ["--pairs >= 1"]),
    (["latent", "CGAN", "--label", "99"], ["--label 99", "0..9"]),
    (["latent", "P2P"], ["no vector latent", "GAN"]),
])
def test_errors_exit_2(runs, args, words, tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    names = {"GAN": runs["gan"], "CGAN": runs["cgan"], "P2P": runs["pix2pix"], "CYC": runs["cyclegan"],
             "BADFILE": tmp_path / "bad.png"}
    r = invoke(*[names.get(a, a) for a in args], "--out", tmp_path / "out")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["pix2pix", "srgan", "cyclegan"])
def test_profond_eval_on_image_to_image_runs(runs, name, tmp_path):
    """`profond eval` (which asks for detailed metrics) works on every image-to-image family."""
    import json

    r = ok("eval", runs[name], "--json", "--n", "0")
    ev = json.loads(r.output.strip().splitlines()[-1])
    key = "cycle_psnr" if name == "cyclegan" else "baseline_psnr"
    assert key in ev and ev[key] > 0, ev
