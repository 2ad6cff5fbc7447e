"""Seq2seq on French numbers (profond.methods.seq2seq, course §6.1-6.3, exercise 6.1): a tiny
real attention run learns held-out numbers, the teacher-forcing schedule, saved tokenizers,
exact match by input length and `profond translate` with its attention heatmap."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from profond.cli import app
from profond.config import resolve
from profond.contract import Callback
from profond.data.tokenize import load_tokenizer
from profond.methods.seq2seq import SRC_TOKENIZER_FILE, TGT_TOKENIZER_FILE, teacher_forcing_at
from profond.train import train
from profond.train.loop import load_run
from tests.conftest import StopAt

pytest.importorskip("num2words")

TINY = ["model.name=seq2seq", "data.name=french-numbers", "method.dataset={n_train: 1500, n_val: 100, n_test: 200}",
        "model.embed_dim=24", "model.hidden_size=48", "model.attention=bahdanau", "data.batch_size=32",
        "data.eval_batch_size=256", "optim.lr=0.01", "train.epochs=2", "train.clip_grad_norm=1.0",
        "method.teacher_forcing_start=1.0", "method.teacher_forcing_end=0.6",
        "train.threads=1", "train.quiet=true", "train.device=cpu"]


class _Record(Callback):
    def __init__(self):
        self.tf: dict[int, float] = {}

    def on_step_end(self, loop, step, metrics):
        self.tf[step] = metrics["teacher_forcing"]


@pytest.fixture(scope="module")
def s2s(tmp_path_factory):
    torch.set_num_threads(1)
    rec = _Record()
    out = tmp_path_factory.mktemp("s2s")
    res = train(resolve(overrides=[*TINY, f"out={out}", "name=run"]), callbacks=[rec])
    return res, rec


def test_tiny_attention_run_learns_held_out_numbers(s2s):
    res, _ = s2s
    f = res.summary["final"]
    # val/test numbers never occur in training; a model that learnt nothing gets 0 exact matches
    assert f["test_exact_match"] > 0.03, f
    assert f["test_token_accuracy"] > f["test_majority_token_accuracy"] + 0.2, f
    assert res.summary["direction"] == "words2digits" and res.summary["train_pairs"] == 1600


def test_teacher_forcing_schedule_values():
    assert teacher_forcing_at(0, 11, 1.0, 0.5) == 1.0
    assert teacher_forcing_at(5, 11, 1.0, 0.5) == pytest.approx(0.75)
    assert teacher_forcing_at(10, 11, 1.0, 0.5) == pytest.approx(0.5)
    assert teacher_forcing_at(30, 11, 1.0, 0.5) == pytest.approx(0.5)  # held after the end
    assert teacher_forcing_at(3, 11, 0.8, 0.8) == pytest.approx(0.8)


def test_run_follows_the_schedule_step_by_step(s2s):
    res, rec = s2s
    steps = res.summary["steps"]
    assert sorted(rec.tf) == list(range(1, steps + 1))  # the loop's step after each update
    # update k (0-based, = step - 1) used p_k = 1 - 0.4 k / (K - 1)
    for step, p in rec.tf.items():
        assert p == pytest.approx(1.0 - 0.4 * (step - 1) / (steps - 1), abs=1e-6)
    assert rec.tf[1] == 1.0 and rec.tf[steps] == pytest.approx(0.6)


def test_tokenizers_reload_identically_and_eval_by_length(s2s):
    res, _ = s2s
    method, trainer = load_run(res.run_dir, device="cpu")
    fitted = (method.src_tokenizer, method.tgt_tokenizer)
    saved = (load_tokenizer(res.run_dir / SRC_TOKENIZER_FILE), load_tokenizer(res.run_dir / TGT_TOKENIZER_FILE))
    method.attach_run(res.run_dir)
    assert saved == fitted == (method.src_tokenizer, method.tgt_tokenizer)
    texts = [s for s, _ in method.pairs("test")[:20]]
    assert [saved[0].encode(t) for t in texts] == [fitted[0].encode(t) for t in texts]
    m = trainer.evaluate(method.test_data(), detailed=True)
    assert m["exact_match"] == pytest.approx(res.summary["final"]["test_exact_match"])
    by, count = m["exact_match_by_length"], m["count_by_length"]
    assert sum(count.values()) == m["examples"] == 200
    assert sum(by[k] * count[k] for k in by) / 200 == pytest.approx(m["exact_match"])
    # translate() decodes like evaluate() (greedy)
    outs, attn = method.translate(texts, beam=1)
    assert outs[:10] == [p["output"] for p in m["sample_predictions"]]
    assert len(attn) == 20 and all(a.shape[1] == len(t) for a, t in zip(attn, texts, strict=True))
    assert len(method.translate(texts[:5], beam=3)[0]) == 5


def test_translate_cli_prints_digits_and_writes_attention_png(s2s, tmp_path):
    res, _ = s2s
    png = tmp_path / "attn.png"
    r = CliRunner().invoke(app, ["translate", str(res.run_dir), "deux mille vingt-six", "cent un",
                                 "--beam", "2", "--attention-png", str(png)])
    assert r.exit_code == 0, r.output
    lines = [x for x in r.stdout.splitlines() if x.strip()]
    assert len(lines) == 2 and all(x.isdigit() for x in lines), r.stdout
    meta = json.loads(Image.open(png).text["attention"])
    m = torch.tensor(meta["matrix"])
    assert m.shape == (len(meta["target"]), len("deux mille vingt-six"))
    assert torch.allclose(m.sum(1), torch.ones(m.shape[0]), atol=1e-4) and (m >= 0).all()
    assert "".join(meta["target"]).startswith(lines[0])


def test_translate_cli_bad_inputs_exit_2(s2s, tmp_path):
    res, _ = s2s
    run = str(res.run_dir)
    for args, msg in (([run, "deux€"], "'€'"), ([run, "cent", "--beam", "0"], "--beam"),
                      ([run, ""], "empty"), ([str(tmp_path), "cent"], "config.yaml")):
        bad = CliRunner().invoke(app, ["translate", *args])
        assert bad.exit_code == 2 and msg in bad.output, bad.output
    other = tmp_path / "other"
    other.mkdir()
    resolve(overrides=["model.name=mlp"]).save(other / "config.yaml")
    bad = CliRunner().invoke(app, ["translate", str(other), "cent"])
    assert bad.exit_code == 2 and "seq2seq run" in bad.output, bad.output


def test_data_subset_is_a_seeded_sample_spread_over_all_numbers():
    from profond.contract import Env
    from profond.data.text import count_words
    from profond.methods.seq2seq import Seq2SeqMethod

    cfg = resolve(overrides=[*TINY, "method.dataset={n_train: 300, n_val: 10, n_test: 10}", "data.subset=50"])
    m = Seq2SeqMethod(cfg, Env(device=torch.device("cpu")), with_data=False)
    rows = m.pairs("train")
    assert len(rows) == 50 and rows == Seq2SeqMethod(cfg, Env(device=torch.device("cpu")), with_data=False).pairs("train")
    assert max(len(d) for _, d in rows) >= 5  # not just the 50 smallest numbers (0..49)
    assert m.input_lengths("train") == [count_words(w) for w, _ in rows]


def test_resume_mid_schedule_is_exact(tmp_path):
    from safetensors.torch import load_file

    small = [*TINY, "method.dataset={n_train: 200, n_val: 20, n_test: 20}", "train.max_steps=6",
             "method.teacher_forcing_end=0.2"]
    full = train(resolve(overrides=[*small, f"out={tmp_path}", "name=full"]))
    part = train(resolve(overrides=[*small, f"out={tmp_path}", "name=part"]), callbacks=[StopAt(3)])
    assert part.summary["status"] == "interrupted"
    train(resolve(overrides=[*small, f"out={tmp_path}", "name=part"]), run_dir=part.run_dir, resume=True)

    def last(d):
        p = json.loads((d / "checkpoints" / "latest.json").read_text())["path"]
        return load_file(str(d / "checkpoints" / p / "model.safetensors"))

    wa, wb = last(full.run_dir), last(part.run_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
