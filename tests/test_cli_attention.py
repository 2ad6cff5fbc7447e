"""`profond attention RUN TEXT`: draws the attention maps of an attn-classifier run and of a
seq2seq attention run, and refuses, with exit code 2 and the fix, runs without attention
(an rnn-classifier, an MLP on images, a seq2seq without attention) and bad options."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from profond.cli import app
from profond.config import resolve
from profond.train import train
from tests.test_text_methods import needs_fortunes

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
FAST = ["train.threads=1", "train.quiet=true", "train.device=cpu"]
TOPICS = ["data.name=fortune-topics", "method.dataset={max_per_class: 30}", "method.tokenizer=char",
          "method.max_len=32", "method.baseline=false", "data.batch_size=32", "train.epochs=1", *FAST]
ATTN = ["model.name=attn-classifier", "model.d_model=16", "model.num_heads=2", "model.num_layers=2",
        "model.pool=cls", *TOPICS]
RNN = ["model.name=rnn-classifier", "model.embed_dim=8", "model.hidden_size=8", "train.max_steps=1", *TOPICS]
S2S = ["model.name=seq2seq", "data.name=french-numbers", "method.dataset={n_train: 100, n_val: 20, n_test: 20}",
       "model.embed_dim=8", "model.hidden_size=16", "train.max_steps=2", *FAST]


def _train(tmp_path_factory, name: str, overrides: list[str]):
    torch.set_num_threads(1)
    return train(resolve(overrides=[*overrides, f"out={tmp_path_factory.mktemp(name)}", "name=run"])).run_dir


@pytest.fixture(scope="module")
def attn_run(tmp_path_factory):
    return _train(tmp_path_factory, "attn", ATTN)


def invoke(*args: str):
    return runner.invoke(app, ["attention", *map(str, args)])


def test_help_has_examples():
    r = invoke("--help")
    assert r.exit_code == 0, r.output
    assert "Examples" in r.output and "profond attention" in r.output


@needs_fortunes
def test_draws_every_layer_and_head_of_an_attn_classifier(attn_run, tmp_path):
    png = tmp_path / "maps.png"
    r = invoke(attn_run, "The computer is down.", "--out", png)
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == PNG
    assert str(png) in r.output
    assert r.stdout.strip().splitlines()[-1].startswith("predicted: ")
    # default path in the run folder; one layer, one head: a smaller grid
    r = invoke(attn_run, "The computer is down.", "--layer", 1, "--heads", 1)
    assert r.exit_code == 0, r.output
    one = attn_run / "attention.png"
    with Image.open(png) as full, Image.open(one) as single:
        assert single.width < full.width and single.height < full.height


@needs_fortunes
@pytest.mark.parametrize("args, words", [
    (["The disk", "--layer", "2"], ["--layer 2", "2 attention layer(s)"]),
    (["The disk", "--layer", "-1"], ["--layer -1"]),
    (["The disk", "--heads", "0"], ["--heads 0"]),
    ([""], ["empty"]),
    (["The disk", "--checkpoint", "first"], ["last or best"]),
])
def test_bad_options_exit_2(attn_run, args, words):
    r = invoke(attn_run, *args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, r.output


@needs_fortunes
def test_gates_on_an_attn_classifier_points_to_attention(attn_run):
    r = runner.invoke(app, ["gates", str(attn_run), "The disk"])
    assert r.exit_code == 2, r.output
    assert "no recurrent layer" in r.output and "profond attention" in r.output


@needs_fortunes
def test_a_recurrent_classifier_has_no_attention(tmp_path_factory):
    run = _train(tmp_path_factory, "rnn", RNN)
    r = invoke(run, "The computer is down.")
    assert r.exit_code == 2, r.output
    assert "has no attention" in r.output and "attn-classifier" in r.output
    assert not (run / "attention.png").exists()


def test_an_image_run_is_refused_before_loading(tmp_path):
    r = runner.invoke(app, ["train", "mlp", "--dataset", "synthetic", "--epochs", "1", "--out", str(tmp_path),
                            "--name", "r", "-q", "--set", "data.val_size=200", "--set", "model.widths=[8]",
                            "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = invoke(tmp_path / "r", "some text")
    assert r.exit_code == 2, r.output
    assert "profond attention` needs a run whose model has attention" in r.output
    r = invoke(tmp_path, "some text")
    assert r.exit_code == 2 and "config.yaml" in r.output


def test_seq2seq_runs_draw_their_attention_or_say_they_have_none(tmp_path_factory, tmp_path):
    pytest.importorskip("num2words")
    run = _train(tmp_path_factory, "s2s", [*S2S, "model.attention=bahdanau"])
    r = invoke(run, "vingt et un", "--out", tmp_path / "a.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG
    run = _train(tmp_path_factory, "s2s-none", [*S2S, "model.attention=none"])
    r = invoke(run, "vingt et un")
    assert r.exit_code == 2, r.output
    assert "no attention" in r.output and "Traceback" not in r.output
