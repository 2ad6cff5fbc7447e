"""`profond explain RUN (--index K | --image FILE) --method ...` (issue 20, course §12.5) on a
small CNN and an MLP trained on sklearn digits: one overlay PNG per method and a side-by-side
for --method all, the predicted class explained by default, Grad-CAM on the last conv layer by
default, Integrated Gradients complete on the trained CNN, and exit code 2 with one line for
bad input (unknown or non-conv layer, index out of range, Grad-CAM on a run without a conv
layer, ...)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import profond.cli.explain as cx  # registers `profond explain` (until profond.cli imports it)
from profond.cli import app
from profond.train import load_run, train
from tests.conftest import digits_cfg
from tests.test_cli_attention import RNN
from tests.test_text_methods import needs_fortunes

pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, one_thread):
    cfg = digits_cfg(tmp_path_factory.mktemp("cnn"), "model.name=fmnist-cnn", "model.width=8", "train.epochs=2",
                     "train.threads=1")
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, one_thread):
    cfg = digits_cfg(tmp_path_factory.mktemp("mlp"), "model.name=mlp", "train.epochs=1", "train.max_steps=2", "train.threads=1")
    return train(cfg).run_dir


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, one_thread):
    from profond.config import resolve

    return train(resolve(overrides=[*RNN, f"out={tmp_path_factory.mktemp('text')}", "name=run"])).run_dir


def invoke(*args):
    return runner.invoke(app, ["explain", *map(str, args)])


def test_help_has_examples():
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "Examples" in r.output and "profond explain" in r.output and "--method" in r.output


def test_all_methods_write_one_overlay_each_and_a_side_by_side(cnn_run, tmp_path):
    r = invoke(cnn_run, "--index", 5, "--method", "all", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("image: test image 5 of digits")
    assert "the predicted class" in lines[1]
    assert "Grad-CAM layer: features.10 (the last conv layer)" in r.stdout
    want = [tmp_path / f"test5-{m}.png" for m in cx.METHODS] + [tmp_path / "test5-all.png"]
    assert lines[-len(want):] == [str(p) for p in want]
    for p in want:
        assert p.read_bytes()[:8] == PNG
    with Image.open(want[-1]) as panel, Image.open(want[0]) as one:
        assert panel.width > 5 * one.width // 2  # seven panels side by side


def test_one_method_from_an_image_file_with_a_target_and_a_layer(cnn_run, tmp_path):
    run = load_run(cnn_run, device="cpu")[0]
    digit = (run.data.test_x[7, 0].numpy()).astype("uint8")
    Image.fromarray(digit, mode="L").resize((32, 32)).save(tmp_path / "seven.png")
    r = invoke(cnn_run, "--image", tmp_path / "seven.png", "--layer", "features.3", "--target", 3)  # default: gradcam
    assert r.exit_code == 0, r.output
    assert "explained: 3 (class 3)" in r.stdout and "the predicted class" not in r.stdout
    assert "Grad-CAM layer: features.3" in r.stdout and "last conv" not in r.stdout
    out = cnn_run / "explain" / "seven-gradcam.png"  # default folder: RUN/explain
    assert r.stdout.strip().splitlines()[-1] == str(out) and out.read_bytes()[:8] == PNG


def test_ig_is_complete_on_the_trained_cnn(cnn_run):
    from profond import explain as E

    run = load_run(cnn_run, device="cpu")[0]
    net = run.pixel_model()
    x = run.data.test_x[:40].float() / 255
    t = E.resolve_target(net, x, None)
    with torch.no_grad():  # the wrapper feeds the net as the test batches do: same predictions
        assert torch.equal(t, run.raw_nets["model"]((x - run.data.mean[0]) / run.data.std[0]).argmax(1))
        delta = (net(x) - net(torch.zeros_like(x))).gather(1, t.view(-1, 1)).squeeze(1).abs()
    gap = E.completeness_gap(net, x, E.integrated_gradients(net, x, t), t)  # the default 128 steps
    assert float(gap.median()) < 0.01 and float((gap * delta).sum() / delta.sum()) < 0.01, gap


def test_mlp_run_all_skips_gradcam_and_says_why(mlp_run, tmp_path):
    r = invoke(mlp_run, "--index", 0, "--method", "all", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    assert "Grad-CAM skipped" in r.stdout and "no convolution layer" in r.stdout
    assert not (tmp_path / "test0-gradcam.png").exists() and (tmp_path / "test0-all.png").is_file()


@needs_fortunes
def test_text_classifier_token_attributions(text_run, tmp_path):
    r = invoke(text_run, "--text", "The disk is full.", "--method", "all", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("text: 'The disk is full.'") and "the predicted class" in lines[1]
    # completeness, as printed: Σ_t IG_t = f_c(e) − f_c(0)
    sums = [float(v.split(",")[0]) for v in lines[2].split(" = ")[1:]]
    assert sums[0] == pytest.approx(sums[1], rel=0.01, abs=2e-4), lines[2]
    png = tmp_path / "text-The-disk-is-full-all.png"
    assert lines[-1] == str(png) and png.read_bytes()[:8] == PNG
    r = invoke(text_run, "--text", "The disk is full.", "--out", tmp_path)  # default: all
    assert r.exit_code == 0 and r.stdout.strip().splitlines()[-1] == str(png), r.output
    for args, words in [(["--index", 0], ["pass --text TEXT"]), (["--text", "a", "--method", "gradcam"],
                                                                  ["saliency, ig, all"])]:
        r = invoke(text_run, *args)
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert all(w in r.output for w in words), r.output


@pytest.mark.parametrize("run, args, words", [
    ("cnn", ["--index", 0, "--method", "gradcam", "--layer", "features.99"],
     ["'features.99' does not exist", "features.0, features.3, features.7, features.10"]),
    ("cnn", ["--index", 0, "--method", "gradcam", "--layer", "head.2"], ["is not a convolution layer"]),
    ("cnn", ["--index", 359, "--method", "ig"], ["--index 359 is out of range", "0..358"]),
    ("cnn", ["--index", -1], ["--index -1"]),
    ("cnn", ["--index", 0, "--target", 10], ["--target 10", "0..9"]),
    ("cnn", ["--index", 0, "--method", "lime"], ["--method 'lime'", "gradcam"]),
    ("cnn", ["--method", "ig"], ["one of --index K"]),
    ("cnn", ["--index", 0, "--image", "x.png"], ["one of --index K"]),
    ("cnn", ["--image", "no-such.png"], ["no such file"]),
    ("cnn", ["--index", 0, "--method", "ig", "--layer", "features.0"], ["--layer is Grad-CAM's"]),
    ("cnn", ["--index", 0, "--checkpoint", "first"], ["last or best"]),
    ("cnn", ["--text", "hello"], ["--text is for text-classifier runs"]),
    ("mlp", ["--index", 0, "--method", "gradcam"], ["no convolution layer"]),
    ("none", ["--index", 0], ["no config.yaml"]),
])
def test_bad_input_exits_2_with_one_line(cnn_run, mlp_run, tmp_path, run, args, words):
    folder = {"cnn": cnn_run, "mlp": mlp_run, "none": tmp_path}[run]
    r = invoke(folder, *args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output
