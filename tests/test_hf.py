"""Hugging Face interoperability (profond.models.hf, profond import-hf / export-hf): tiny random
GPT-2 and BERT checkpoints built locally by ``transformers`` (nothing downloaded) become profond
runs whose logits and greedy generations equal ``transformers``' own, and go back to folders
``transformers`` loads with the same logits; profond models GPT-2 / BERT cannot express, and
folders that are not safetensors GPT-2 / BERT checkpoints, are refused with exit code 2."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from typer.testing import CliRunner

from profond.cli import app
from profond.data.tokenize import CharTokenizer
from profond.errors import ConfigError
from profond.methods.pretrained import sample_ids
from profond.models import hf
from profond.registry import MODELS
from profond.train import load_run
from tests.conftest import tiny_cfg

transformers = pytest.importorskip("transformers")

#: tiny models: one intra-op thread (the machine's cores are shared)
pytestmark = pytest.mark.usefixtures("one_thread")
runner = CliRunner()
V, D, H, L, NPOS = 61, 32, 4, 2, 64
#: weights this large make the logits of a random model differ from token to token (the
#: default 0.02 gives nearly constant predictions, so equal greedy outputs would prove little)
STD = 0.4
TOL = 1e-4


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _gpt2_config(**kw):
    return transformers.GPT2Config(n_layer=L, n_embd=D, n_head=H, vocab_size=V, n_positions=NPOS,
                                   initializer_range=STD, bos_token_id=None, eos_token_id=None, **kw)


def _bert_config(**kw):
    return transformers.BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                                   intermediate_size=48, max_position_embeddings=NPOS, type_vocab_size=3,
                                   initializer_range=STD, **kw)


def _scramble_norms(model):
    """LayerNorm gains and biases away from (1, 0), so that a mixed-up norm shows in the logits."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))
    return model


def _ids(b=3, t=20, v=V, seed=0):
    return torch.randint(0, v, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("hf")


@pytest.fixture(scope="module")
def gpt2(tmp):
    torch.manual_seed(0)
    model = _scramble_norms(transformers.GPT2LMHeadModel(_gpt2_config())).eval()
    model.save_pretrained(tmp / "gpt2", safe_serialization=True)
    return model, tmp / "gpt2"


@pytest.fixture(scope="module")
def gpt2_run(gpt2, tmp):
    r = invoke("import-hf", gpt2[1], "--out", tmp / "runs", "--name", "gpt2")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(tmp / "runs" / "gpt2")
    return tmp / "runs" / "gpt2"


@pytest.fixture(scope="module")
def bert(tmp):
    torch.manual_seed(0)
    model = _scramble_norms(transformers.BertForMaskedLM(_bert_config())).eval()
    model.save_pretrained(tmp / "bert", safe_serialization=True)
    return model, tmp / "bert"


def _net(run):
    method, trainer = load_run(run, device="cpu")
    assert trainer.cfg.method.name in ("pretrained-lm", "pretrained-mlm")
    return method, method.raw_nets["model"].eval()


# -- GPT-2 ---------------------------------------------------------------------------------------
def test_gpt2_import_same_logits(gpt2, gpt2_run):
    hf_model, _ = gpt2
    method, net = _net(gpt2_run)
    ids = _ids()
    with torch.no_grad():
        want = hf_model(ids).logits
        got, _ = net(ids)  # (B, T, V)
    assert got.shape == (3, 20, V)
    assert (got - want).abs().max() <= TOL
    assert want.argmax(-1).unique().numel() > 3  # the model does not predict one token everywhere
    summary = json.loads((gpt2_run / "summary.json").read_text())
    assert summary["model"] == "gpt" and summary["hf_model_type"] == "gpt2" and not summary["tokenizer"]
    assert net.lm_head.weight is net.body.tok_embedding.weight


def test_gpt2_greedy_generation_equals_transformers(gpt2, gpt2_run):
    hf_model, _ = gpt2
    _, net = _net(gpt2_run)
    context = _ids(1, 6)[0].tolist()
    prompt = torch.tensor([context])  # an explicit mask: generate would take id 0 (pad_token_id) for padding
    want = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=30,
                             pad_token_id=0)[0, 6:]
    got = sample_ids(net, context, n=2, length=30, temperature=0)
    assert got.shape == (2, 30)
    assert got[0].tolist() == want.tolist() == got[1].tolist()
    assert len(set(want.tolist())) > 2
    # sampling: the seed decides
    a, b = (sample_ids(net, context, n=2, length=10, temperature=1.0, top_k=5, seed=s) for s in (3, 3))
    assert torch.equal(a, b)


def test_gpt2_export_back_loads_in_transformers(gpt2, gpt2_run, tmp):
    hf_model, _ = gpt2
    r = invoke("export-hf", gpt2_run, tmp / "gpt2-back")
    assert r.exit_code == 0, r.output
    assert str(tmp / "gpt2-back" / "model.safetensors") in r.stdout
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp / "gpt2-back").eval()
    ids = _ids(seed=5)
    with torch.no_grad():
        assert (back(ids).logits - hf_model(ids).logits).abs().max() <= TOL
    cfg = json.loads((tmp / "gpt2-back" / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2LMHeadModel"] and cfg["model_type"] == "gpt2" and cfg["n_embd"] == D
    # a second export into the (now full) folder is refused
    r = invoke("export-hf", gpt2_run, tmp / "gpt2-back")
    assert r.exit_code == 2 and "not an empty folder" in r.output


def test_gpt2_model_without_head_and_untied_head(gpt2, tmp):
    hf_model, _ = gpt2
    hf_model.transformer.save_pretrained(tmp / "gpt2-body")  # GPT2Model: no prefix, no lm_head
    torch.manual_seed(1)
    untied = _scramble_norms(transformers.GPT2LMHeadModel(_gpt2_config(tie_word_embeddings=False))).eval()
    untied.save_pretrained(tmp / "gpt2-untied")
    ids = _ids(seed=2)
    for folder, ref, tied in ((tmp / "gpt2-body", hf_model, True), (tmp / "gpt2-untied", untied, False)):
        r = invoke("import-hf", folder, "--out", tmp / "runs")
        assert r.exit_code == 0, r.output
        _, net = _net(tmp / "runs" / folder.name)
        assert (net.lm_head.weight is net.body.tok_embedding.weight) == tied
        with torch.no_grad():
            assert (net(ids)[0] - ref(ids).logits).abs().max() <= TOL
    r = invoke("export-hf", tmp / "runs" / "gpt2-untied", tmp / "untied-back")
    assert r.exit_code == 0, r.output
    back = transformers.GPT2LMHeadModel.from_pretrained(tmp / "untied-back").eval()
    with torch.no_grad():
        assert (back(ids).logits - untied(ids).logits).abs().max() <= TOL


def test_sharded_checkpoint_imports(gpt2, tmp):
    hf_model, _ = gpt2
    hf_model.save_pretrained(tmp / "gpt2-shards", max_shard_size="20KB")
    assert len(list((tmp / "gpt2-shards").glob("model-*.safetensors"))) > 1
    r = invoke("import-hf", tmp / "gpt2-shards", "--out", tmp / "runs")
    assert r.exit_code == 0, r.output
    _, net = _net(tmp / "runs" / "gpt2-shards")
    ids = _ids(seed=4)
    with torch.no_grad():
        assert (net(ids)[0] - hf_model(ids).logits).abs().max() <= TOL


@pytest.mark.parametrize("activation, tie", [("gelu_tanh", True), ("gelu", True), ("relu", False)])
def test_profond_gpt_exports_to_transformers(activation, tie, tmp_path):
    torch.manual_seed(0)
    model = MODELS.build("gpt", vocab_size=50, d_model=D, num_heads=H, num_layers=L, d_ff=40, max_len=24,
                         activation=activation, norm_eps=1e-6, tie_weights=tie)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, STD)
    model = _scramble_norms(model).eval()
    config, tensors = hf.profond_to_gpt2(model)
    hf.write_hf_folder(tmp_path, config, tensors)
    theirs = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = _ids(2, 24, 50)
    with torch.no_grad():
        want, _ = model(ids)
        assert (theirs(ids).logits - want).abs().max() <= TOL
    args, state = hf.gpt2_to_profond(*hf.read_hf_folder(tmp_path))
    assert {k: args[k] for k in ("activation", "tie_weights", "d_ff", "max_len", "norm_eps")} == {
        "activation": activation, "tie_weights": tie, "d_ff": 40, "max_len": 24, "norm_eps": 1e-6}


def test_generate_with_a_profond_tokenizer_both_ways(tmp_path):
    """A profond tokenizer.json travels with export and import; `profond generate` then gives
    transformers' greedy continuation, decoded."""
    tok = CharTokenizer.fit("the quick brown fox jumps over the lazy dog")
    torch.manual_seed(0)
    model = MODELS.build("gpt", vocab_size=tok.vocab_size, d_model=D, num_heads=H, num_layers=L, max_len=32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, STD)
    config, tensors = hf.profond_to_gpt2(model.eval(), bos_id=tok.bos_id, eos_id=tok.eos_id)
    src = tmp_path / "char-gpt"
    src.mkdir()
    hf.write_hf_folder(src, config, tensors)
    tok.save(src / "tokenizer.json")
    r = invoke("import-hf", src, "--out", tmp_path / "runs", "--name", "char")
    assert r.exit_code == 0, r.output
    run = tmp_path / "runs" / "char"
    r = invoke("generate", run, "--prompt", "the ", "--temperature", 0, "--length", 12, "--out", tmp_path)
    assert r.exit_code == 0, r.output
    theirs = transformers.GPT2LMHeadModel.from_pretrained(src).eval()
    theirs.generation_config.eos_token_id = None  # continue past <eos>, as profond generate does
    prompt = torch.tensor([tok.encode("the ")])
    out = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=12,
                          pad_token_id=0)
    want = "the " + tok.decode(out[0, 4:].tolist())
    assert (tmp_path / "generated.txt").read_text().strip("\n") == want
    r = invoke("export-hf", run, tmp_path / "back")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "back" / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()


def test_generate_without_tokenizer_and_eval_exit_2(gpt2_run):
    r = invoke("generate", gpt2_run, "--prompt", "x")
    assert r.exit_code == 2, r.output
    assert "no profond tokenizer.json" in r.output and "Traceback" not in r.output
    r = invoke("eval", gpt2_run)
    assert r.exit_code == 2, r.output
    assert "nothing to measure" in r.output


# -- BERT ----------------------------------------------------------------------------------------
def test_bert_import_and_export_same_logits(bert, tmp):
    hf_model, folder = bert
    r = invoke("import-hf", folder, "--out", tmp / "runs", "--name", "bert")
    assert r.exit_code == 0, r.output
    _, net = _net(tmp / "runs" / "bert")
    ids, types = _ids(), _ids(v=3, seed=9)
    with torch.no_grad():
        want = hf_model(ids, token_type_ids=types).logits
        assert (net(ids, token_types=types) - want).abs().max() <= TOL
        assert (net(ids) - hf_model(ids).logits).abs().max() <= TOL
    r = invoke("export-hf", tmp / "runs" / "bert", tmp / "bert-back")
    assert r.exit_code == 0, r.output
    back = transformers.BertForMaskedLM.from_pretrained(tmp / "bert-back").eval()
    with torch.no_grad():
        assert (back(ids, token_type_ids=types).logits - want).abs().max() <= TOL
    r = invoke("generate", tmp / "runs" / "bert", "--prompt", "x")
    assert r.exit_code == 2 and "generates text" in r.output


def test_bert_model_without_mlm_head_gets_a_fresh_one(bert, tmp):
    hf_model, _ = bert
    body = transformers.BertModel(hf_model.config, add_pooling_layer=True).eval()
    body.load_state_dict(hf_model.bert.state_dict(), strict=False)
    body.save_pretrained(tmp / "bert-body")
    r = invoke("import-hf", tmp / "bert-body", "--out", tmp / "runs")
    assert r.exit_code == 0, r.output
    assert "no MLM head" in r.stderr and "pooler" in r.stderr
    run = tmp / "runs" / "bert-body"
    assert any("no MLM head" in n for n in json.loads((run / "summary.json").read_text())["notes"])
    _, net = _net(run)
    ids = _ids()
    with torch.no_grad():
        h, _, _ = net.body(ids)
        assert (h - body(ids).last_hidden_state).abs().max() <= TOL
    assert net.mlm_decoder.weight is net.body.tok_embedding.weight
    assert not net.mlm_decoder.bias.any()


@pytest.mark.parametrize("kw", [{}, {"type_vocab": 0}, {"tie_weights": False}])
def test_profond_bert_exports_to_transformers(kw, tmp_path):
    torch.manual_seed(0)
    model = MODELS.build("bert", vocab_size=50, d_model=D, num_heads=H, num_layers=L, d_ff=40, max_len=24, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, STD)
    model = _scramble_norms(model).eval()
    hf.write_hf_folder(tmp_path, *hf.profond_to_bert(model))
    theirs = transformers.BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids = _ids(2, 24, 50)
    with torch.no_grad():
        assert (theirs(ids).logits - model(ids)).abs().max() <= TOL
    # and back: the folder profond wrote (both biases of the head) imports to the same model
    args, state = hf.bert_to_profond(*hf.read_hf_folder(tmp_path))
    again = MODELS.build("bert", **args).eval()
    again.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert (again(ids) - model(ids)).abs().max() <= TOL


# -- what export refuses ------------------------------------------------------------------------
@pytest.mark.parametrize("name, kw, words", [
    ("gpt", {"pos": "rope"}, "model.pos=rope"),
    ("gpt", {"pos": "alibi"}, "model.pos=alibi"),
    ("gpt", {"pos": "sinusoidal"}, "model.pos=sinusoidal"),
    ("gpt", {"activation": "swiglu"}, "model.activation=swiglu"),
    ("gpt", {"norm": "rms"}, "model.norm=rms"),
    ("gpt", {"moe_experts": 2}, "model.moe_experts=2"),
    ("gpt", {"kv_groups": 2}, "model.kv_groups=2"),
    ("gpt", {"bias": False}, "model.bias=false"),
    ("gpt", {"attn_impl": "linear", "dropout": 0.0}, "model.attn_impl=linear"),
    ("bert", {"cls_token": True}, "model.cls_token=true"),
    ("bert", {"norm_first": True}, "model.norm_first=true"),
    ("bert", {"activation": "relu"}, "model.activation=relu"),
    ("bert", {"pos": "rope"}, "model.pos=rope"),
])
def test_export_refuses_what_gpt2_or_bert_cannot_express(name, kw, words):
    model = MODELS.build(name, vocab_size=20, d_model=16, num_heads=4, num_layers=1, max_len=8, **kw)
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        (hf.profond_to_gpt2 if name == "gpt" else hf.profond_to_bert)(model)
    with pytest.raises(ConfigError, match="not a"):
        (hf.profond_to_bert if name == "gpt" else hf.profond_to_gpt2)(model)


# -- bad input: exit 2, one line, nothing unpickled --------------------------------------------
class _Tripwire:
    """Unpickling this object creates ``path``: the proof that a file was unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _bad_folder(gpt2, tmp_path, case):
    folder = tmp_path / case
    shutil.copytree(gpt2[1], folder)
    cfg = json.loads((folder / "config.json").read_text())
    marker = tmp_path / "unpickled"
    if case == "no-config":
        (folder / "config.json").unlink()
    elif case == "llama":
        cfg["model_type"] = "llama"
    elif case == "pickle-only":
        (folder / "model.safetensors").unlink()
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Tripwire(marker)))
    elif case == "pickle-renamed":
        (folder / "model.safetensors").write_bytes(pickle.dumps(_Tripwire(marker)))
    elif case == "wider":
        cfg["n_embd"] = 2 * D
    elif case == "deeper":
        cfg["n_layer"] = L + 1
    (folder / "config.json").write_text(json.dumps(cfg)) if case != "no-config" else None
    return folder, marker


@pytest.mark.parametrize("case, words", [
    ("no-config", ["no config.json", "not a Hugging Face checkpoint"]),
    ("llama", ["model_type 'llama'", "GPT-2 or BERT"]),
    ("pickle-only", ["pytorch_model.bin", "pickle", "safe_serialization=True"]),
    ("pickle-renamed", ["not a valid safetensors file"]),
    ("wider", ["does not match config.json", "wte.weight is (61, 32), not (61, 64)"]),
    ("deeper", ["lacks h.2."]),
])
def test_bad_folders_exit_2_one_line_nothing_unpickled(gpt2, tmp_path, case, words):
    folder, marker = _bad_folder(gpt2, tmp_path, case)
    r = invoke("import-hf", folder, "--out", tmp_path / "runs", "--name", "x")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, r.output
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_resume_and_export_of_other_models_exit_2(gpt2_run, tmp_path):
    r = invoke("train", "--resume", gpt2_run, "-q")
    assert r.exit_code == 2 and "no training data" in r.output and "char-lm" in r.output, r.output
    from profond.train import train

    run = train(tiny_cfg(tmp_path, "train.epochs=1", "data.subset=64", "train.threads=1")).run_dir  # an mlp
    r = invoke("export-hf", run, tmp_path / "mlp-hf")
    assert r.exit_code == 2 and "cannot be written as GPT-2 or BERT" in r.output, r.output
    assert not (tmp_path / "mlp-hf").exists()


def test_existing_run_name_is_refused(gpt2, gpt2_run, tmp):
    before = sorted(p.name for p in gpt2_run.rglob("*"))
    r = invoke("import-hf", gpt2[1], "--out", tmp / "runs", "--name", "gpt2")
    assert r.exit_code == 2 and "already exists" in r.output, r.output
    assert sorted(p.name for p in gpt2_run.rglob("*")) == before
    r = invoke("import-hf", gpt2[1], "--out", tmp / "runs", "--name", "../escape")
    assert r.exit_code == 2 and "bad value for '--name'" in r.output, r.output


def test_help_has_examples():
    for cmd in ("import-hf", "export-hf"):
        r = invoke(cmd, "--help")
        assert r.exit_code == 0 and "Examples" in r.output and f"profond {cmd}" in r.output
