"""The self-attention text classifier ``attn-classifier`` (profond.models.attention, course ch. 6):
it learns a real task, its impls agree, padding changes nothing, its parameter count is the
course's 4·d² per layer (remark 6.10), head pruning, attention maps, sinusoidal positions."""

from __future__ import annotations

import math

import pytest
import torch

from profond.config import resolve
from profond.contract import Callback
from profond.errors import ConfigError
from profond.models.attention import AttnClassifier, sinusoidal_positions
from profond.registry import MODELS
from profond.train import train
from tests.test_text_methods import needs_fortunes

V, C = 40, 3


def _model(seed: int = 0, **kw) -> AttnClassifier:
    torch.manual_seed(seed)
    args = {"vocab_size": V, "num_classes": C, "d_model": 32, "num_heads": 4, "num_layers": 2, **kw}
    return MODELS.build("attn-classifier", **args).eval()


def _batch(seed: int = 1, lengths=(9, 6, 1, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    tokens = torch.randint(1, V, (len(lengths), int(lengths.max())), generator=g)
    tokens[torch.arange(tokens.shape[1]) >= lengths[:, None]] = 0  # padding id 0
    return tokens, lengths


# -- a real task -----------------------------------------------------------------------------
class _Keep(Callback):
    def on_train_end(self, loop):
        self.method = loop.method


LANG = ["model.name=attn-classifier", "data.name=fortune-languages", "method.dataset={max_per_class: 100}",
        "model.d_model=32", "model.num_heads=4", "model.pool=mean", "method.max_len=64", "method.baseline=false",
        "data.batch_size=32", "optim.lr=0.01", "train.epochs=3", "train.threads=1", "train.quiet=true",
        "train.device=cpu"]


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    torch.set_num_threads(1)
    keep = _Keep()
    res = train(resolve(overrides=[*LANG, f"out={tmp_path_factory.mktemp('attn')}", "name=run"]), callbacks=[keep])
    return res, keep.method


@needs_fortunes
def test_language_id_beats_the_majority_class_by_far(lang):
    res, method = lang
    y = method.data.labels("test")
    majority = float(torch.bincount(y).max()) / len(y)
    assert res.summary["final"]["test_accuracy"] > majority + 0.25, (res.summary["final"], majority)


@needs_fortunes
def test_trained_model_maps_are_softmax_rows(lang):
    _, method = lang
    model = method.nets["model"]
    ids = method.tokenizer.encode("Das ist ein kleiner Test.")
    maps = model.attention_maps(torch.tensor([ids]))
    assert list(maps) == ["layer 0"]
    w = maps["layer 0"]
    assert w.shape == (4, len(ids), len(ids))
    torch.testing.assert_close(w.sum(-1), torch.ones(4, len(ids)))
    assert (w >= 0).all()


# -- the impls agree ---------------------------------------------------------------------------
@pytest.mark.parametrize("impl", ["sdpa", "tiled"])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_impls_compute_the_same_logits_and_gradients(impl, pool):
    ref, other = _model(pool=pool, attn_impl="profond"), _model(seed=5, pool=pool, attn_impl=impl)
    other.load_state_dict(ref.state_dict())
    tokens, lengths = _batch()
    out_ref, out = ref(tokens, lengths), other(tokens, lengths)
    torch.testing.assert_close(out, out_ref, atol=1e-5, rtol=1e-5)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    for (name, p), q in zip(ref.named_parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


# -- padding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["cls", "mean", "max"])
@pytest.mark.parametrize("impl", ["profond", "sdpa", "tiled"])
def test_padding_changes_nothing(pool, impl):
    model = _model(pool=pool, attn_impl=impl)
    tokens, lengths = _batch()
    logits = model(tokens, lengths)
    padded = torch.cat([tokens, torch.zeros(len(lengths), 5, dtype=tokens.dtype)], dim=1)
    torch.testing.assert_close(model(padded, lengths), logits, atol=1e-5, rtol=1e-5)
    for b, n in enumerate(lengths.tolist()):  # each text alone, unpadded
        torch.testing.assert_close(model(tokens[b : b + 1, :n]), logits[b : b + 1], atol=1e-5, rtol=1e-5)


def test_without_the_mask_padding_would_change_the_logits():
    """The test above can fail: reading the padding as tokens changes the output."""
    model = _model(pool="mean")
    tokens, lengths = _batch()
    padded = torch.cat([tokens, torch.zeros(len(lengths), 5, dtype=tokens.dtype)], dim=1)
    assert not torch.allclose(model(padded), model(tokens), atol=1e-3)


# -- parameters (remark 6.10) ----------------------------------------------------------------
@pytest.mark.parametrize("pool, num_layers", [("mean", 1), ("mean", 3), ("cls", 2)])
def test_parameter_count_is_4_d_squared_per_layer(pool, num_layers):
    d, max_len = 32, 50
    counts = set()
    for h in (1, 2, 4, 8):
        m = _model(d_model=d, num_heads=h, num_layers=num_layers, d_ff=0, bias=False, pool=pool, max_len=max_len)
        for block in m.blocks:
            assert sum(p.numel() for p in block.attn.parameters()) == 4 * d * d  # whatever h
        counts.add(sum(p.numel() for p in m.parameters()))
    cls = pool == "cls"
    embeddings = V * d + (max_len + cls) * d + cls * d  # tokens, learned positions, [CLS]
    norms = (num_layers + 1) * 2 * d  # LN before each attention, final LN
    head = d * C + C
    assert counts == {num_layers * 4 * d * d + embeddings + norms + head}


def test_ffn_and_grouped_query_parameters():
    d = 32
    m = _model(d_model=d, num_heads=4, num_layers=1, d_ff=48, bias=False, kv_groups=1)
    block = m.blocks[0]
    assert sum(p.numel() for p in block.attn.parameters()) == 2 * d * d + 2 * d * (d // 4)  # eq. 6.22, g = 1
    assert sum(p.numel() for p in block.ffn.parameters()) == 2 * d * 48
    assert _model(d_model=d).blocks[0].ffn[0].out_features == 2 * d  # default d_ff = 2·d_model


# -- head pruning -----------------------------------------------------------------------------
def test_head_mask_equals_zeroing_the_heads_columns_of_w_o():
    model = _model(num_layers=2, d_ff=16)
    ref = _model(num_layers=2, d_ff=16)
    tokens, lengths = _batch()
    model.set_head_mask(1, [1.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        w = ref.blocks[1].attn.out_proj.weight  # (d, H·d_h)
        w.view(32, 4, 8)[:, [1, 3]] = 0.0
    torch.testing.assert_close(model(tokens, lengths), ref(tokens, lengths), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(model(tokens, lengths), _model(num_layers=2, d_ff=16)(tokens, lengths))
    assert model.blocks[1].head_mask.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert "blocks.1.head_mask" in model.state_dict()
    with pytest.raises(ConfigError, match="4 heads"):
        model.set_head_mask(0, [1.0, 0.0])
    with pytest.raises(ConfigError, match="0 to 1"):
        model.set_head_mask(2, [1.0] * 4)


# -- attention maps ---------------------------------------------------------------------------
def test_attention_maps_are_the_layers_weights():
    model = _model(pool="cls", attn_impl="sdpa")
    tokens, lengths = _batch(lengths=(7,))
    maps = model.attention_maps(tokens, lengths)
    assert list(maps) == ["layer 0", "layer 1"]
    x, _ = model._embed(tokens, None)
    for i, block in enumerate(model.blocks):
        _, w = block.attn(block.ln1(x), need_weights=True)
        torch.testing.assert_close(maps[f"layer {i}"], w[0])
        assert maps[f"layer {i}"].shape == (4, 8, 8)  # [CLS] + 7 tokens
        x, _ = block(x)
    # padding in the given tokens is cut off
    padded = torch.cat([tokens, torch.zeros(1, 3, dtype=tokens.dtype)], dim=1)
    torch.testing.assert_close(model.attention_maps(padded, lengths)["layer 1"], maps["layer 1"])
    with pytest.raises(ConfigError, match="linear"):
        _model(attn_impl="linear").attention_maps(tokens)


# -- positions and options --------------------------------------------------------------------
def test_sinusoidal_positions_follow_eqs_7_4_and_7_5():
    pe = sinusoidal_positions(20, 16)
    for pos, i in ((0, 0), (3, 1), (11, 5), (19, 7)):
        angle = pos / 10000 ** (2 * i / 16)
        assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    model = _model(pos="sinusoidal", max_len=20)
    assert not any("pos" in name for name, _ in model.named_parameters())
    tokens, lengths = _batch()
    assert model(tokens, lengths).shape == (4, C)


@pytest.mark.parametrize("kw, words", [
    ({"attn_impl": "flash"}, ["'flash'", "profond", "sdpa", "tiled", "linear", "local"]),
    ({"attn_impl": "local"}, ["model.window"]),
    ({"d_model": 30, "num_heads": 4}, ["multiple of model.num_heads"]),
    ({"pool": "last"}, ["model.pool", "cls"]),
    ({"d_ff": -1}, ["model.d_ff"]),
])
def test_bad_options_are_config_errors(kw, words):
    with pytest.raises(ConfigError) as e:
        _model(**kw)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_text_longer_than_max_len_is_a_config_error():
    model = _model(max_len=8)
    tokens, lengths = _batch()
    with pytest.raises(ConfigError, match="max_len"):
        model(tokens, lengths)
