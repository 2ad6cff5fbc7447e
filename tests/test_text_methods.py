"""Sequence models I (profond.methods.sequence): the text classifier (§5.8) and the
character language model (ch. 5) trained by the one loop, their baselines, the saved
tokenizer, sampling and `profond generate`. Tiny real runs on the installed fortunes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from profond.cli import app
from profond.config import resolve
from profond.data import text as T
from profond.data.tokenize import load_tokenizer
from profond.methods.sequence import (
    TOKENIZER_FILE,
    StreamBatches,
    TokenBatches,
    filter_logits,
    macro_f1,
    ngram_bpc,
)
from profond.train import train
from profond.train.loop import load_run
from tests.conftest import StopAt

SYSTEM = T.FORTUNE_DIRS[0]
needs_fortunes = pytest.mark.skipif(
    not (SYSTEM / "computers").is_file() or not (SYSTEM / "de").is_dir(),
    reason="fortunes not installed (apt-get install fortunes fortunes-min fortunes-de fortunes-es ...)",
)

LANG = ["model.name=rnn-classifier", "data.name=fortune-languages", "method.dataset={max_per_class: 100}",
        "model.kind=gru", "model.embed_dim=16", "model.hidden_size=32", "model.pool=mean",
        "method.max_len=64", "data.batch_size=32", "optim.lr=0.01", "train.epochs=3",
        "train.threads=1", "train.quiet=true", "train.device=cpu"]
LM = ["model.name=char-lm", "data.name=fortune-chars", "method.dataset={files: [computers]}",
      "method.max_train_chars=12000", "method.bptt=32", "method.eval_streams=16", "data.batch_size=16",
      "model.embed_dim=16", "model.hidden_size=48", "model.num_layers=1", "model.dropout=0.1", "optim.lr=0.01",
      "train.epochs=2", "train.threads=1", "train.quiet=true", "train.device=cpu"]


def _cfg(out: Path, base: list[str], *extra: str):
    return resolve(overrides=[*base, f"out={out}", "name=run", *extra])


@pytest.fixture(scope="module")
def lang_run(tmp_path_factory):
    torch.set_num_threads(1)
    return train(_cfg(tmp_path_factory.mktemp("lang"), LANG))


@pytest.fixture(scope="module")
def lang_loaded(lang_run):
    """The finished language-ID run rebuilt by ``load_run`` (method, trainer)."""
    return load_run(lang_run.run_dir, device="cpu")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    torch.set_num_threads(1)
    return train(_cfg(tmp_path_factory.mktemp("lm"), LM))


# -- pure functions -----------------------------------------------------------------------


def test_macro_f1_matches_sklearn_on_random_predictions():
    from sklearn.metrics import f1_score

    g = torch.Generator().manual_seed(0)
    for k in (2, 5):
        y = torch.randint(0, k, (60,), generator=g)
        p = torch.randint(0, k - 1, (60,), generator=g)  # one class never predicted
        conf = torch.bincount(y * k + p, minlength=k * k).view(k, k)
        assert macro_f1(conf) == pytest.approx(f1_score(y.numpy(), p.numpy(), average="macro"), abs=1e-12)


def test_bigram_and_unigram_baselines_by_hand():
    # train "abaab" as ids 0 1 0 0 1, V = 2; pairs ab ba aa ab: n_aa=1 n_ab=2 n_ba=1 n_bb=0
    train_ids = torch.tensor([0, 1, 0, 0, 1])
    prev, target = torch.tensor([0, 1]), torch.tensor([1, 0])
    out = ngram_bpc(train_ids, prev, target, vocab_size=2)
    p_b_given_a = (2 + 1) / (3 + 2)
    p_a_given_b = (1 + 1) / (1 + 2)
    assert out["bigram_bpc"] == pytest.approx(-(math.log2(p_b_given_a) + math.log2(p_a_given_b)) / 2)
    assert out["unigram_bpc"] == pytest.approx(-(math.log2(3 / 7) + math.log2(4 / 7)) / 2)


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3]]))
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(1e-9) == [False, True, False]  # p -> 0: greedy
    assert kept(0.7) == [False, True, True]
    assert kept(0.8) == [False, True, True]  # 0.5 + 0.3 reaches 0.8
    assert kept(0.81) == [True, True, True]
    assert torch.isfinite(filter_logits(logits, top_k=2)).sum() == 2


def test_token_batches_resume_exactly_and_cover_the_epoch():
    seqs = [[5] * (1 + i % 7) for i in range(50)]
    tb = TokenBatches(seqs, torch.arange(50), batch_size=8, shuffle=True, seed=3, bucket=True, bucket_batches=2)
    full = list(tb.batches(2))
    assert len(full) == len(tb) == 7
    assert sorted(torch.cat([y for _, _, y in full]).tolist()) == list(range(50))
    for a, b in zip(full[4:], tb.batches(2, start=4), strict=True):
        assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    tokens, lengths, _ = full[0]
    assert tokens.shape == (8, int(lengths.max()))


def test_stream_batches_are_contiguous():
    ids = torch.arange(1000)
    sb = StreamBatches(ids, batch_size=4, bptt=10, shuffle=False)
    b0, b1 = list(sb.batches(0))[:2]
    assert b0[2] and not b1[2]
    assert torch.equal(b0[1], b0[0] + 1) and torch.equal(b1[0][:, 0], b0[0][:, -1] + 1)
    assert torch.equal(sb.targets(), ids[1: 4 * sb.stream_len + 1])


# -- text classifier ----------------------------------------------------------------------


@needs_fortunes
def test_language_id_run_beats_chance_and_reports_baseline(lang_run):
    f = lang_run.summary["final"]
    assert f["test_accuracy"] > 0.45  # chance is 1/8
    assert f["test_baseline_accuracy"] > 0.8 and 0 < f["test_baseline_macro_f1"] <= 1
    assert 0 < f["test_macro_f1"] <= 1 and "val_baseline_accuracy" in f
    assert lang_run.summary["tokenizer"] == "char"


@needs_fortunes
def test_saved_tokenizer_reloads_with_identical_encodings(lang_run, lang_loaded):
    saved = load_tokenizer(lang_run.run_dir / TOKENIZER_FILE)
    method, trainer = lang_loaded
    fitted = method.tokenizer
    method.attach_run(lang_run.run_dir)
    assert saved == fitted == method.tokenizer
    texts = [t for t, _ in method.data.test[:20]] + ["Zażółć gęślą jaźń ✓"]
    assert [saved.encode(t) for t in texts] == [fitted.encode(t) for t in texts]
    metrics = trainer.evaluate(method.test_data(), detailed=True)
    assert metrics["accuracy"] == pytest.approx(lang_run.summary["final"]["test_accuracy"])


@needs_fortunes
def test_macro_f1_equals_sklearn_on_the_run_predictions(lang_loaded):
    from sklearn.metrics import f1_score

    method, trainer = lang_loaded
    metrics = trainer.evaluate(method.test_data(), detailed=True)
    y = method.data.labels("test").numpy()
    assert metrics["macro_f1"] == pytest.approx(f1_score(y, metrics["predictions"], average="macro"), abs=1e-12)
    assert len(metrics["confusion_matrix"]) == len(method.classes)


@needs_fortunes
def test_eval_cli_writes_confusion_png(lang_run):
    res = CliRunner().invoke(app, ["eval", str(lang_run.run_dir), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert (lang_run.run_dir / "confusion.png").is_file()


# -- char LM ------------------------------------------------------------------------------


@needs_fortunes
def test_char_lm_beats_unigram_and_bpc_is_nats_over_ln2(lm_run):
    f = lm_run.summary["final"]
    assert f["test_bpc"] < f["test_unigram_bpc"]
    assert f["test_bpc"] == pytest.approx(f["test_loss"] / math.log(2), rel=1e-12)
    assert f["val_bpc"] == pytest.approx(f["val_loss"] / math.log(2), rel=1e-12)
    assert f["test_bigram_bpc"] < f["test_unigram_bpc"]
    assert (lm_run.run_dir / TOKENIZER_FILE).is_file()


@needs_fortunes
def test_top_k_1_and_top_p_to_0_are_greedy(lm_run):
    method, _ = load_run(lm_run.run_dir, device="cpu")
    greedy = method.generate("The ", n=2, length=30, temperature=0)
    assert method.generate("The ", n=2, length=30, temperature=1.3, top_k=1, seed=5) == greedy
    assert method.generate("The ", n=2, length=30, temperature=0.7, top_p=1e-9, seed=9) == greedy
    # the model's own greedy decoding agrees
    ctx = torch.tensor([method.tokenizer.encode(T.END_OF_FORTUNE + "The ")])
    ids = method.nets["model"].generate(ctx, 30, temperature=0)[0, ctx.shape[1]:]
    assert greedy[0] == "The " + method.tokenizer.decode(ids.tolist())
    a = method.generate("The ", n=3, length=40, seed=1)
    assert a == method.generate("The ", n=3, length=40, seed=1) and len(set(a)) > 1


@needs_fortunes
def test_generate_cli_writes_text_and_rejects_bad_input(lm_run, lang_run, tmp_path):
    run = str(lm_run.run_dir)
    res = CliRunner().invoke(app, ["generate", run, "--prompt", "Unix ", "--n", "2", "--length", "20",
                                   "--top-p", "0.9", "--top-k", "10", "--temperature", "0.8", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    samples = (tmp_path / "generated.txt").read_text().split("\n" + "-" * 40 + "\n")
    assert len(samples) == 2 and all(s.startswith("Unix ") for s in samples)
    for args, msg in ((["--prompt", "caf\u00e9\u20ac"], "'\u20ac'"), (["--top-p", "0"], "--top-p"),
                      (["--top-p", "1.5"], "--top-p"), (["--top-k", "0"], "--top-k"),
                      (["--temperature", "-1"], "--temperature")):
        bad = CliRunner().invoke(app, ["generate", run, *args])
        assert bad.exit_code == 2 and msg in bad.output, bad.output
    bad = CliRunner().invoke(app, ["generate", str(lang_run.run_dir)])
    assert bad.exit_code == 2 and "character language model" in bad.output


@needs_fortunes
def test_char_lm_resume_mid_epoch_is_exact(lm_run, tmp_path):
    part = train(_cfg(tmp_path, LM), callbacks=[StopAt(30)])  # mid-epoch 2 (23 steps per epoch)
    assert part.summary["status"] == "interrupted"
    run = part.run_dir
    meta = json.loads(next((run / "checkpoints").glob("step_00000030/meta.json")).read_text())
    assert meta["meta"]["loop"]["method_state"]["carry"]  # the carried state is checkpointed
    train(_cfg(tmp_path, LM), run_dir=run, resume=True)

    def last(d: Path) -> dict[str, torch.Tensor]:
        p = json.loads((d / "checkpoints" / "latest.json").read_text())["path"]
        return load_file(str(d / "checkpoints" / p / "model.safetensors"))

    wa, wb = last(lm_run.run_dir), last(run)  # the same config, uninterrupted
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_wrong_dataset_or_model_is_a_clear_config_error(tmp_path):
    from profond.errors import ConfigError

    with pytest.raises(ConfigError, match="not a text classification dataset"):
        train(_cfg(tmp_path, ["model.name=rnn-classifier", "train.quiet=true", "train.device=cpu"]))
    with pytest.raises(ConfigError, match="not a character corpus"):
        train(_cfg(tmp_path, ["model.name=char-lm", "data.name=fortune-topics", "train.quiet=true"]))
    with pytest.raises(ConfigError, match="set by the data"):
        train(_cfg(tmp_path, [*LM, "model.vocab_size=50"]))


# -- gate traces (exercise 5.4.2) ----------------------------------------------------------


def test_trace_gates_equal_the_lstm_equations_on_the_trained_model(lm_run):
    """The traced gates are those of eqs. 5.9-5.13 computed by hand from the nn.LSTM's weights."""
    from profond.models.rnn import trace_gates

    method, _ = load_run(lm_run.run_dir, device="cpu")
    model = method.nets["model"]
    ids = torch.tensor(method.encode_prompt("Unix is"))
    g = trace_gates(model, ids)
    assert set(g) == {"f", "i", "o", "h"} and g["f"].shape == (len(ids), model.rnn.hidden_size)
    x = model.embedding(ids)
    w_ih, w_hh = model.rnn.weight_ih_l0, model.rnn.weight_hh_l0
    b = model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0
    h = c = torch.zeros(model.rnn.hidden_size)
    with torch.no_grad():
        for t in range(len(ids)):
            i, f, cand, o = (w_ih @ x[t] + w_hh @ h + b).chunk(4)  # PyTorch's gate order i, f, g, o
            i, f, o = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o)
            c = f * c + i * torch.tanh(cand)
            h = o * torch.tanh(c)
            for name, v in (("f", f), ("i", i), ("o", o), ("h", h)):
                torch.testing.assert_close(g[name][t], v, atol=1e-5, rtol=1e-5)


@needs_fortunes
def test_gates_cli_draws_png_and_rejects_bad_input(lm_run, lang_run, tmp_path):
    png = tmp_path / "g.png"
    res = CliRunner().invoke(app, ["gates", str(lm_run.run_dir), "Unix is", "--out", str(png), "--units", "8"])
    assert res.exit_code == 0, res.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [line.split(":")[0] for line in res.stdout.strip().splitlines()] == ["f", "i", "o"]
    # a GRU classifier: reset and update gates, default path in the run folder
    res = CliRunner().invoke(app, ["gates", str(lang_run.run_dir), "Das ist gut"])
    assert res.exit_code == 0, res.output
    assert (lang_run.run_dir / "gates.png").is_file()
    assert [line.split(":")[0] for line in res.stdout.strip().splitlines()] == ["r", "z"]
    for args in (["Unix", "--layer", "3"], ["Unix", "--units", "0"], ["\u2603 snow"], [""]):
        bad = CliRunner().invoke(app, ["gates", str(lm_run.run_dir), *args])
        assert bad.exit_code == 2, (args, bad.output)
    bad = CliRunner().invoke(app, ["gates", str(tmp_path), "text"])
    assert bad.exit_code == 2 and "config.yaml" in bad.output
