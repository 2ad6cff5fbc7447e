"""Transformers trained by the one loop (course ch. 7): a GPT through ``char-lm`` (KV-cache
generation, windows without carried state), BERT's masked-LM objective (``mlm``, def. 7.10)
and its fine-tuning through ``text-classifier`` with ``model.init_from``, the encoder-decoder
through ``seq2seq`` and the ViT through ``classifier``. Tiny real runs on the installed data."""

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
from profond.errors import ConfigError
from profond.methods.mlm import mask_tokens
from profond.train import train
from profond.train.loop import load_run
from tests.conftest import StopAt

needs_fortunes = pytest.mark.skipif(not (T.FORTUNE_DIRS[0] / "computers").is_file(),
                                    reason="fortunes not installed (apt-get install fortunes fortunes-min)")

GPT = ["model.name=gpt", "data.name=fortune-chars", "method.dataset={files: [computers]}",
       "method.max_train_chars=12000", "method.bptt=32", "method.eval_streams=16", "data.batch_size=16",
       "model.d_model=32", "model.num_heads=2", "model.num_layers=2", "model.max_len=32", "optim.name=adam",
       "optim.lr=0.003", "train.epochs=5", "train.threads=1", "train.quiet=true", "train.device=cpu"]
BERT = ["model.name=bert", "method.name=mlm", "data.name=fortune-languages", "method.dataset={max_per_class: 60}",
        "method.tokenizer=char", "method.max_len=48", "model.d_model=32", "model.num_heads=2", "model.num_layers=1",
        "model.max_len=48", "model.dropout=0.0", "model.attn_dropout=0.0", "data.batch_size=16", "optim.name=adam",
        "optim.lr=0.003", "train.epochs=3", "train.threads=1", "train.quiet=true", "train.device=cpu"]
FINETUNE = ["model.name=transformer-classifier", "data.name=fortune-languages", "method.dataset={max_per_class: 60}",
            "method.max_len=47", "model.d_model=32", "model.num_heads=2", "model.num_layers=1", "model.max_len=48",
            "model.pool=cls", "model.cls_id=2", "model.norm_first=false", "model.embed_norm=true",
            "model.type_vocab=2", "model.norm_eps=1e-12", "model.dropout=0.0", "data.batch_size=16",
            "optim.name=adam", "optim.lr=0.003", "train.epochs=1", "train.threads=1", "train.quiet=true",
            "train.device=cpu", "method.baseline=false"]


def _cfg(out: Path, base: list[str], *extra: str):
    return resolve(overrides=[*base, f"out={out}", "name=run", *extra])


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    torch.set_num_threads(1)
    return train(_cfg(tmp_path_factory.mktemp("gpt"), GPT))


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    torch.set_num_threads(1)
    return train(_cfg(tmp_path_factory.mktemp("bert"), BERT))


# -- GPT through char-lm (§7.7) ----------------------------------------------------------------


@needs_fortunes
def test_gpt_learns_beyond_the_unigram_baseline(gpt_run):
    f = gpt_run.summary["final"]
    assert f["test_bpc"] < f["test_unigram_bpc"] - 0.3
    assert f["test_bpc"] == pytest.approx(f["test_loss"] / math.log(2), rel=1e-12)


@needs_fortunes
def test_gpt_generation_with_the_kv_cache_equals_recomputing_the_context(gpt_run):
    method, _ = load_run(gpt_run.run_dir, device="cpu")
    model = method.nets["model"].eval()
    out = method.generate("The ", n=2, length=20, temperature=0)
    # the same greedy tokens by recomputing the whole context at every step (no cache)
    ids = method.tokenizer.encode(T.END_OF_FORTUNE + "The ")
    ctx = torch.tensor([ids])
    with torch.no_grad():
        for _ in range(20):
            logits, _ = model(ctx, None, use_cache=False)
            ctx = torch.cat([ctx, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert out[0] == out[1] == "The " + method.tokenizer.decode(ctx[0, len(ids):].tolist())
    # beyond the context (32): the model slides its window and keeps generating
    long = method.generate("The ", n=1, length=80, temperature=0.8, seed=3)[0]
    assert len(method.tokenizer.encode(long)) >= 80


@needs_fortunes
def test_gpt_prompt_longer_than_the_context_exits_2(gpt_run):
    res = CliRunner().invoke(app, ["generate", str(gpt_run.run_dir), "--prompt", "x" * 40])
    assert res.exit_code == 2 and "model.max_len=32" in res.output, res.output


@needs_fortunes
def test_gpt_resume_mid_epoch_is_exact_without_carried_state(gpt_run, tmp_path):
    part = train(_cfg(tmp_path, GPT), callbacks=[StopAt(60)])
    assert part.summary["status"] == "interrupted"
    meta = json.loads(next((part.run_dir / "checkpoints").glob("step_00000060/meta.json")).read_text())
    assert not meta["meta"]["loop"]["method_state"].get("carry")  # a GPT carries no state
    train(_cfg(tmp_path, GPT), run_dir=part.run_dir, resume=True)

    def last(d: Path) -> dict[str, torch.Tensor]:
        p = json.loads((d / "checkpoints" / "latest.json").read_text())["path"]
        return load_file(str(d / "checkpoints" / p / "model.safetensors"))

    wa, wb = last(gpt_run.run_dir), last(part.run_dir)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@needs_fortunes
def test_gpt_on_bpe_tokens_reports_bits_per_character(tmp_path):
    """With ``method.tokenizer=bpe`` the loss is per token; bpc divides it by the characters each
    token spells, measured on the decoded targets, and so do the n-gram baselines."""
    torch.set_num_threads(1)
    res = train(_cfg(tmp_path, GPT, "method.tokenizer=bpe", "method.bpe_vocab=300", "train.epochs=1"))
    f = res.summary["final"]
    method, _ = load_run(res.run_dir, device="cpu")
    loader = method.test_data()
    ratio = len(method.tokenizer.decode(loader.targets().tolist())) / len(loader.targets())
    assert 1.2 < ratio < 4  # merges: more than one character per token
    assert f["test_bpc"] == pytest.approx(f["test_bits_per_token"] / ratio, rel=1e-9)
    assert f["test_bits_per_token"] == pytest.approx(f["test_loss"] / math.log(2), rel=1e-12)
    assert f["test_bigram_bpc"] < f["test_unigram_bpc"]
    out = method.generate("Unix ", n=1, length=10, temperature=0)[0]
    assert out.startswith("Unix ") and len(out) > len("Unix ")


def test_gpt_bptt_longer_than_its_context_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="longer than the model's context"):
        train(_cfg(tmp_path, GPT, "method.bptt=64"))


# -- BERT's masked-LM objective (def. 7.10) -------------------------------------------------------


def test_mask_tokens_follows_the_80_10_10_rule():
    b, t, v, mask_id, first = 400, 60, 50, 4, 5
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(first, v, (b, t), generator=g)
    lengths = torch.randint(2, t + 1, (b,), generator=g)
    inputs, targets = mask_tokens(tokens, lengths, mask_id=mask_id, vocab_size=v, first_normal=first,
                                  generator=torch.Generator().manual_seed(1))
    pos = torch.arange(t)[None]
    valid = (pos >= 1) & (pos < lengths[:, None])
    sel = targets != -100
    assert not (sel & ~valid).any()  # never [CLS] (position 0) nor padding
    assert sel.any(1)[lengths > 1].all()  # at least one per row
    assert torch.equal(targets[sel], tokens[sel]) and torch.equal(inputs[~sel], tokens[~sel])
    assert abs(sel.sum() / valid.sum() - 0.15) < 0.01
    m = inputs[sel] == mask_id
    same = inputs[sel] == tokens[sel]
    rnd = ~m & ~same
    n = sel.sum()
    assert abs(m.sum() / n - 0.8) < 0.02
    assert abs(rnd.sum() / n - 0.1 * (1 - 1 / (v - first))) < 0.02  # a random draw can hit the token itself
    assert (inputs[sel][rnd] >= first).all()  # random replacements are ordinary tokens
    again, _ = mask_tokens(tokens, lengths, mask_id=mask_id, vocab_size=v, first_normal=first,
                           generator=torch.Generator().manual_seed(1))
    assert torch.equal(inputs, again)


@needs_fortunes
def test_bert_mlm_beats_the_unigram_baseline_and_saves_its_tokenizer(bert_run):
    f = bert_run.summary["final"]
    assert f["test_loss"] < f["test_unigram_loss"] - 0.1
    tok = json.loads((bert_run.run_dir / "tokenizer.json").read_text())
    assert "<mask>" in tok["specials"]


@needs_fortunes
def test_finetuning_from_bert_reads_its_tokenizer_and_encoder(bert_run, tmp_path):
    torch.set_num_threads(1)
    res = train(_cfg(tmp_path, FINETUNE, f"model.init_from={bert_run.run_dir}", "model.init_strict=false"))
    init = res.summary["describe"]["init_from"] if "describe" in res.summary else None
    method, _ = load_run(res.run_dir, device="cpu")
    pre, _ = load_run(bert_run.run_dir, device="cpu")
    assert method.tokenizer == pre.tokenizer  # the pretrained vocabulary, <mask> included
    assert init is None or init["loaded"] > 0
    # the fine-tuned body started from the pretrained one: the token embedding moved little
    start = pre.nets["model"].body.tok_embedding.weight
    now = method.nets["model"].body.tok_embedding.weight
    scratch = torch.nn.Embedding(*start.shape).weight
    assert (now - start).norm() < 0.5 * (scratch - start).norm()
    assert res.summary["final"]["test_accuracy"] > 1.5 / len(method.classes)


# -- encoder-decoder (§7.4) and ViT (§7.5) --------------------------------------------------------


def test_transformer_seq2seq_refuses_scheduled_sampling(tmp_path):
    with pytest.raises(ConfigError, match="plain teacher forcing"):
        train(_cfg(tmp_path, ["model.name=transformer-seq2seq", "method.name=seq2seq", "data.name=french-numbers",
                              "method.teacher_forcing_end=0.7", "train.quiet=true", "train.device=cpu"]))


def test_transformer_seq2seq_learns_and_translates(tmp_path):
    torch.set_num_threads(1)
    res = train(_cfg(tmp_path, [
        "model.name=transformer-seq2seq", "method.name=seq2seq", "data.name=french-numbers",
        "method.dataset={n_train: 1500}", "method.teacher_forcing_end=1.0", "model.d_model=48",
        "model.num_heads=4", "model.num_layers=1", "model.d_ff=96", "model.dropout=0.0", "data.batch_size=32",
        "optim.name=adam", "optim.lr=0.003", "train.epochs=3", "train.threads=1", "train.quiet=true",
        "train.device=cpu"]))
    f = res.summary["final"]
    assert f["test_token_accuracy"] > f["test_majority_token_accuracy"] + 0.05
    method, _ = load_run(res.run_dir, device="cpu")
    out, attn = method.translate(["vingt-six", "mille"])
    assert len(out) == 2 and attn[0] is not None
    assert torch.allclose(attn[0].sum(-1), torch.ones(attn[0].shape[0]), atol=1e-5)


def test_transformer_seq2seq_learns_to_copy_through_cross_attention():
    """The decoder can only copy the source by attending to it (def. 6.6): a copy task is
    learnt within a few hundred steps, and the cross-attention of each output step peaks on
    the source position it copies."""
    from profond.registry import MODELS, load_all

    load_all()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    m = MODELS.build("transformer-seq2seq", src_vocab=20, d_model=48, num_heads=4, num_layers=1, d_ff=96,
                     dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    for _ in range(250):
        src = torch.randint(4, 20, (32, 8))
        out = m(src, None, torch.cat([torch.full((32, 1), 2), src], 1)).logits
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 20), torch.cat([src, torch.full((32, 1), 3)], 1).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    src = torch.randint(4, 20, (64, 8))
    dec = m.greedy_decode(src, torch.full((64,), 8), max_len=9, bos=2, eos=3)
    assert (dec.tokens[:, :8] == src).float().mean() > 0.95
    assert (dec.attention[:, :8].argmax(-1) == torch.arange(8)).float().mean() > 0.8
