"""Transformer building blocks (course ch. 7): positions (§7.3, def. 7.3, theorem 7.4; RoPE and
ALiBi of §7.10), the block against PyTorch's encoder / decoder layers (§7.4, eqs. 7.8–7.10), the
parameter count of exercise 7.3, RMSNorm, SwiGLU and the mixture of experts (§7.10)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from profond.errors import ConfigError
from profond.models.transformer import TransformerBody
from profond.nn.attention import KVCache, MultiHeadAttention
from profond.nn.positions import (
    RotaryEmbedding,
    alibi_bias,
    alibi_slopes,
    sinusoidal_positions,
    sinusoidal_shift,
)
from profond.nn.transformer import (
    Block,
    FeedForward,
    MoEFeedForward,
    RMSNorm,
    block_parameters,
    make_norm,
    moe_loss,
)

torch.set_num_threads(1)


def _x(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _pe64(positions, d):
    """Eqs. 7.4–7.5 written out in float64: ``PE(pos, 2i) = sin(pos / 10000^{2i/d})``,
    ``PE(pos, 2i+1) = cos(pos / 10000^{2i/d})``."""
    pos = torch.as_tensor(positions, dtype=torch.float64)[:, None]  # (P, 1)
    two_i = torch.arange(0, d, 2, dtype=torch.float64)  # 2i
    angle = pos / 10000.0 ** (two_i / d)  # (P, d/2)
    pe = torch.empty(len(pos), d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = angle.sin(), angle.cos()
    return pe


# -- sinusoidal positions (course §7.3, def. 7.3, theorem 7.4) -------------------------------------

def test_sinusoidal_table_entries_by_hand():
    d = 6
    pe = sinusoidal_positions(50, d)
    assert pe.shape == (50, d)
    for pos, i in [(0, 0), (1, 0), (3, 1), (17, 2), (49, 1)]:
        w = 10000.0 ** (-2 * i / d)
        assert pe[pos, 2 * i].item() == pytest.approx(math.sin(pos * w), abs=1e-6)  # (7.4)
        assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(pos * w), abs=1e-6)  # (7.5)
    # row 0: sin 0 = 0, cos 0 = 1
    assert torch.equal(pe[0, 0::2], torch.zeros(3)) and torch.equal(pe[0, 1::2], torch.ones(3))
    # the whole table, d = 64, against the float64 formula (the table is stored in float32)
    torch.testing.assert_close(sinusoidal_positions(300, 64).double(), _pe64(range(300), 64), atol=1e-6, rtol=0)


@pytest.mark.parametrize("d", [2, 8, 64])
def test_theorem_7_4_shift_matrix_maps_pe_pos_to_pe_pos_plus_k(d):
    # course §7.3, theorem 7.4, eq. 7.6: PE_{pos+k} = M_k PE_pos for every pos, in float64
    pos = torch.arange(0, 500, 7)
    pe = _pe64(range(0, 600), d)
    for k in [0, 1, 2, 5, 13, 50, 99]:
        m = sinusoidal_shift(k, d)
        assert m.dtype == torch.float64 and m.shape == (d, d)
        torch.testing.assert_close(pe[pos] @ m.T, pe[pos + k], atol=1e-10, rtol=0)
    # with the module's own (float32) table
    table = sinusoidal_positions(200, d).double()
    torch.testing.assert_close(table[:150] @ sinusoidal_shift(37, d).T, table[37:187], atol=2e-6, rtol=0)


def test_theorem_7_4_shift_matrix_does_not_depend_on_pos():
    # solve M from two disjoint sets of d positions: both solutions are sinusoidal_shift(k)
    d, k = 8, 11
    for start in (0, 40, 333):
        a = _pe64(range(start, start + 5 * d, 5), d)  # (d, d) full rank: PE_pos as rows
        b = _pe64(range(start + k, start + k + 5 * d, 5), d)
        m = torch.linalg.solve(a, b).T  # a M^T = b
        torch.testing.assert_close(m, sinusoidal_shift(k, d), atol=1e-8, rtol=0)


def test_shift_matrices_are_rotations_that_compose():
    d = 16
    m3, m5 = sinusoidal_shift(3, d), sinusoidal_shift(5, d)
    torch.testing.assert_close(m3 @ m3.T, torch.eye(d, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(m3 @ m5, sinusoidal_shift(8, d), atol=1e-12, rtol=0)
    torch.testing.assert_close(sinusoidal_shift(0, d), torch.eye(d, dtype=torch.float64))
    with pytest.raises(ValueError, match="even"):
        sinusoidal_shift(1, 7)


# -- RoPE (§7.10) ------------------------------------------------------------------------------------

def _rot(rope, v, m):
    """``R_m v`` for one vector ``v`` ``(d_h,)`` at position ``m``."""
    return rope(v.view(1, 1, 1, -1), offset=m).view(-1)


def test_rope_rotates_each_pair_by_m_theta_i():
    dh, m = 8, 7
    rope = RotaryEmbedding(dh)
    v = _x(dh, dtype=torch.float64)
    out = _rot(rope, v, m)
    for i in range(dh // 2):
        a = m * 10000.0 ** (-2 * i / dh)
        x1, x2 = v[2 * i].item(), v[2 * i + 1].item()
        assert out[2 * i].item() == pytest.approx(x1 * math.cos(a) - x2 * math.sin(a), abs=1e-6)
        assert out[2 * i + 1].item() == pytest.approx(x1 * math.sin(a) + x2 * math.cos(a), abs=1e-6)
    torch.testing.assert_close(_rot(rope, v, 0), v)  # R_0 = I
    assert not any(True for _ in rope.parameters())


def test_rope_score_depends_only_on_relative_position_and_keeps_norms():
    dh = 16
    rope = RotaryEmbedding(dh)
    q, k = _x(dh, seed=1, dtype=torch.float64), _x(dh, seed=2, dtype=torch.float64)
    for m, n in [(0, 0), (5, 2), (2, 5), (30, 1), (7, 7)]:
        ref = _rot(rope, q, m) @ _rot(rope, k, n)
        for s in (1, 9, 100, 1000):
            # the angles m θ_i are computed in float32 (whatever the dtype of q): 1e-4 at m ~ 1000
            assert (_rot(rope, q, m + s) @ _rot(rope, k, n + s)).item() == pytest.approx(ref.item(), abs=1e-4)
    # it does depend on m - n (else it would carry no position)
    assert abs((_rot(rope, q, 3) @ _rot(rope, k, 0)) - (_rot(rope, q, 0) @ _rot(rope, k, 0))) > 1e-3
    x = _x(2, 3, 40, dh)
    torch.testing.assert_close(rope(x, offset=5).norm(dim=-1), x.norm(dim=-1))
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(5)


@pytest.mark.parametrize("kv_groups", [None, 2])
def test_mha_with_rope_and_kv_cache_equals_the_full_causal_pass(kv_groups):
    torch.manual_seed(0)
    d, h, n = 32, 4, 9
    mha = MultiHeadAttention(d, h, kv_groups=kv_groups, bias=True).eval()
    mha.rope = RotaryEmbedding(d // h)
    x = _x(2, n, d)
    full, _ = mha(x, causal=True)
    cache = KVCache()
    steps = [mha(x[:, t: t + 1], causal=True, cache=cache)[0] for t in range(n)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    # a prompt of 4 tokens at once, then one by one: the offsets of RoPE follow the cache
    cache = KVCache()
    chunks = [mha(x[:, :4], causal=True, cache=cache)[0]]
    chunks += [mha(x[:, t: t + 1], causal=True, cache=cache)[0] for t in range(4, n)]
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == n
    # without RoPE the same layer gives another function (the rotation is really applied)
    mha.rope = None
    assert not torch.allclose(mha(x, causal=True)[0], full, atol=1e-4)


# -- ALiBi (§7.10) -----------------------------------------------------------------------------------

def test_alibi_slopes_are_geometric():
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0 ** -(2 * i) for i in range(1, 5)]))
    # H = 6 is not a power of two: those of 4 heads, then every other one of 8 heads
    torch.testing.assert_close(alibi_slopes(6), torch.tensor([2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8,
                                                              2.0 ** -1, 2.0 ** -3]))


@pytest.mark.parametrize("nq,nk", [(5, 5), (1, 7), (3, 8)])
def test_alibi_bias_values(nq, nk):
    h = 4
    bias = alibi_bias(h, nq, nk)
    s = alibi_slopes(h)
    assert bias.shape == (h, nq, nk)
    for hh in range(h):
        for i in range(nq):
            qpos = nk - nq + i  # the queries are the last nq positions
            for j in range(nk):
                assert bias[hh, i, j].item() == pytest.approx(-s[hh].item() * abs(qpos - j), abs=1e-7)
    # zero on the query's own position
    assert torch.equal(bias[:, torch.arange(nq), torch.arange(nk - nq, nk)], torch.zeros(h, nq))


# -- the block against PyTorch (§7.4, eqs. 7.8–7.10) -----------------------------------------------

def _randomise(module, seed=0):
    """Give every parameter (PyTorch zeroes biases, ones the LayerNorm weights) a random value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _copy_lin(dst, src):
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)


def _copy_norm(dst, src):
    dst.weight.copy_(src.weight)
    dst.bias.copy_(src.bias)


@torch.no_grad()
def _load_encoder_layer(block, ref):
    block.attn.load_from_torch(ref.self_attn)
    _copy_lin(block.ffn.fc1, ref.linear1)
    _copy_lin(block.ffn.fc2, ref.linear2)
    _copy_norm(block.norm1, ref.norm1)
    _copy_norm(block.norm2, ref.norm2)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("impl", ["profond", "sdpa"])
def test_block_equals_torch_encoder_layer(norm_first, activation, impl):
    d, h, d_ff, b, n = 16, 4, 40, 3, 7
    ref = nn.TransformerEncoderLayer(d, h, d_ff, dropout=0.0, batch_first=True, norm_first=norm_first,
                                     activation=activation)
    _randomise(ref)
    ref.train()  # no fast path: the plain math for every position, padded ones included
    block = Block(d, h, d_ff, norm_first=norm_first, activation=activation, impl=impl)
    _load_encoder_layer(block, ref)
    x = _x(b, n, d, seed=3)
    out, w, cw = block(x)
    assert w is None and cw is None
    torch.testing.assert_close(out, ref(x), atol=1e-5, rtol=1e-5)
    # a padding mask: PyTorch's is True at PAD, ours True at the valid keys
    lengths = torch.tensor([7, 4, 1])
    valid = torch.arange(n)[None] < lengths[:, None]  # (B, N)
    out, _, _ = block(x, mask=valid)
    expect = ref(x, src_key_padding_mask=~valid)
    torch.testing.assert_close(out[valid], expect[valid], atol=1e-5, rtol=1e-5)
    # the mask matters: the shorter sequences change
    assert not torch.allclose(out[1, :4], block(x)[0][1, :4], atol=1e-4)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("impl", ["profond", "sdpa"])
def test_cross_block_equals_torch_decoder_layer(norm_first, activation, impl):
    d, h, d_ff, b, t, s = 16, 2, 24, 2, 6, 5
    ref = nn.TransformerDecoderLayer(d, h, d_ff, dropout=0.0, batch_first=True, norm_first=norm_first,
                                     activation=activation)
    _randomise(ref, seed=1)
    ref.train()
    block = Block(d, h, d_ff, norm_first=norm_first, activation=activation, cross=True, impl=impl)
    with torch.no_grad():
        block.attn.load_from_torch(ref.self_attn)
        block.cross_attn.load_from_torch(ref.multihead_attn)
        _copy_lin(block.ffn.fc1, ref.linear1)
        _copy_lin(block.ffn.fc2, ref.linear2)
        _copy_norm(block.norm1, ref.norm1)
        _copy_norm(block.norm_cross, ref.norm2)
        _copy_norm(block.norm2, ref.norm3)
    x, mem = _x(b, t, d, seed=4), _x(b, s, d, seed=5)
    causal = nn.Transformer.generate_square_subsequent_mask(t)  # -inf above the diagonal
    out, w, cw = block(x, causal=True, memory=mem, need_weights=True)
    torch.testing.assert_close(out, ref(x, mem, tgt_mask=causal, tgt_is_causal=True), atol=1e-5, rtol=1e-5)
    assert torch.all(w.triu(1) == 0)  # causal self-attention
    assert cw.shape == (b, h, t, s)
    # with a source padding mask
    mem_valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out, _, cw = block(x, causal=True, memory=mem, memory_mask=mem_valid, need_weights=True)
    expect = ref(x, mem, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~mem_valid)
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
    assert torch.all(cw[1, :, :, 3:] == 0)


# -- parameter count (exercise 7.3) ------------------------------------------------------------------

def _numel(m):
    return sum(p.numel() for p in m.parameters())


def test_block_parameters_plain_formula():
    # course §7.11, exercise 7.3: 4d² attention + 2·d·d_ff FFN + 4d LayerNorms, + biases 4d + d_ff + d
    for d, h, d_ff in [(16, 4, 64), (32, 2, 48), (64, 8, 256)]:
        closed = 4 * d * d + 2 * d * d_ff + 4 * d + (4 * d + d_ff + d)
        assert block_parameters(d, d_ff) == closed == _numel(Block(d, h, d_ff))
        assert block_parameters(d, d_ff, bias=False) == 4 * d * d + 2 * d * d_ff + 4 * d
        assert _numel(Block(d, h, d_ff, bias=False)) == 4 * d * d + 2 * d * d_ff + 4 * d


@pytest.mark.parametrize("d,h,d_ff", [(16, 4, 24), (24, 6, 64)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu_tanh", "swiglu"])
@pytest.mark.parametrize("norm", ["layer", "rms"])
@pytest.mark.parametrize("cross,kv_groups,moe", [(False, None, 0), (True, None, 0), (False, 2, 0),
                                                 (False, 1, 3), (True, 2, 4)])
def test_block_parameters_equals_the_modules(d, h, d_ff, bias, activation, norm, cross, kv_groups, moe):
    block = Block(d, h, d_ff, bias=bias, activation=activation, norm=norm, cross=cross, kv_groups=kv_groups,
                  moe_experts=moe)
    assert block_parameters(d, d_ff, bias=bias, activation=activation, norm=norm, cross=cross, num_heads=h,
                            kv_groups=kv_groups, moe_experts=moe) == _numel(block)


# -- RMSNorm, FFN, SwiGLU (§7.10, eq. 7.8) -------------------------------------------------------------

def test_rmsnorm_by_hand():
    d, eps = 10, 1e-6
    norm = RMSNorm(d, eps)
    with torch.no_grad():
        norm.weight.copy_(_x(d, seed=1))
    x = _x(3, 4, d, seed=2) * 5 + 2
    expect = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) * norm.weight
    torch.testing.assert_close(norm(x), expect)
    assert _numel(norm) == d and _numel(make_norm("layer", d)) == 2 * d
    # no centring: a constant vector c·1 becomes sign(c)·γ
    torch.testing.assert_close(norm(torch.full((d,), 3.0)), norm.weight, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="norm"):
        make_norm("batch", d)


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh", "swiglu"])
def test_feedforward_by_hand(activation):
    d, d_ff = 8, 20
    ffn = FeedForward(d, d_ff, activation)
    _randomise(ffn, seed=2)
    x = _x(2, 5, d, seed=3)
    w1, b1, w2, b2 = ffn.fc1.weight, ffn.fc1.bias, ffn.fc2.weight, ffn.fc2.bias
    pre = x @ w1.T + b1  # W_1 x + b_1  (7.8)
    if activation == "swiglu":
        gate = x @ ffn.fc_gate.weight.T + ffn.fc_gate.bias
        hid = gate * torch.sigmoid(gate) * pre  # SiLU(W_g x) ⊙ W_1 x
    else:
        assert ffn.fc_gate is None
        hid = {"relu": pre.clamp_min(0),
               "gelu": 0.5 * pre * (1 + torch.erf(pre / math.sqrt(2))),
               "gelu_tanh": 0.5 * pre * (1 + torch.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
               }[activation]
    torch.testing.assert_close(ffn(x), hid @ w2.T + b2, atol=1e-5, rtol=1e-5)


# -- mixture of experts (§7.10) -----------------------------------------------------------------------

def _moe(e=4, k=2, d=8, d_ff=12, seed=0):
    torch.manual_seed(seed)
    moe = MoEFeedForward(d, d_ff, e, k)
    _randomise(moe, seed=seed)
    return moe


def test_moe_with_identical_experts_and_top_k_all_is_one_expert():
    moe = _moe(e=3, k=3)
    with torch.no_grad():
        for ex in moe.experts[1:]:
            ex.load_state_dict(moe.experts[0].state_dict())
    x = _x(2, 6, 8, seed=1)
    torch.testing.assert_close(moe(x), moe.experts[0](x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_moe_routing_by_hand(k):
    e, d = 4, 8
    moe = _moe(e=e, k=k, d=d)
    x = _x(3, 5, d, seed=2)
    out = moe(x)
    flat = x.reshape(-1, d)
    expect = torch.zeros_like(flat)
    for t in range(flat.shape[0]):
        r = flat[t] @ moe.router.weight.T  # (E,) router logits
        top = r.argsort(descending=True)[:k]
        # k = 1: the router's probability (Switch); k > 1: softmax over the chosen experts (Mixtral)
        gates = torch.softmax(r, 0)[top] if k == 1 else torch.softmax(r[top], 0)
        for g, ex in zip(gates, top.tolist(), strict=True):
            expect[t] += g * moe.experts[ex](flat[t])
    torch.testing.assert_close(out.reshape(-1, d), expect, atol=1e-5, rtol=1e-5)
    assert moe.load.shape == (e,) and moe.load.sum().item() == pytest.approx(1.0)


def test_moe_aux_loss_is_one_for_a_uniform_router_and_larger_when_collapsed():
    e = 4
    moe = _moe(e=e, k=2)
    x = _x(4, 8, 8, seed=3)
    with torch.no_grad():
        moe.router.weight.zero_()  # every logit 0: P_e = 1/E; topk breaks the ties (f not uniform)
    moe(x)
    # E · Σ f_e P_e = Σ f_e = 1 whatever the tie-breaking
    assert moe.aux_loss.item() == pytest.approx(1.0, abs=1e-6)
    # a router that always prefers expert 0 (then 1): f = (1/2, 1/2, 0, 0), P ≈ (1, 0, 0, 0)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0, 0], moe.router.weight[1, 0] = 50.0, 25.0
    xs = x.clone()
    xs[..., 0] = 1.0
    moe(xs)
    assert torch.equal(moe.load, torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert moe.aux_loss.item() == pytest.approx(e * 0.5, rel=1e-4)  # > 1
    # top-1, collapsed on one expert: E
    moe1 = _moe(e=e, k=1)
    with torch.no_grad():
        moe1.router.weight.zero_()
        moe1.router.weight[2, 0] = 50.0
    moe1(xs)
    assert moe1.aux_loss.item() == pytest.approx(e, rel=1e-4)


@pytest.mark.parametrize("k", [1, 2])
def test_moe_gradient_reaches_router_and_experts(k):
    moe = _moe(e=4, k=k)
    x = _x(2, 10, 8, seed=4)
    out = moe(x)
    (out.pow(2).mean() + 0.1 * moe.aux_loss).backward()
    assert moe.router.weight.grad is not None and moe.router.weight.grad.abs().sum() > 0
    used = moe.load > 0
    for ex, u in zip(moe.experts, used.tolist(), strict=True):
        g = ex.fc1.weight.grad
        assert (g is not None and g.abs().sum() > 0) == u
    # the output alone (no aux loss) already trains the router through the gates (k = 1: p_e, Switch)
    moe.zero_grad()
    moe(x).pow(2).mean().backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_moe_bad_config_and_moe_loss_sums_over_blocks():
    with pytest.raises(ConfigError, match="top_k"):
        MoEFeedForward(8, 8, 1)
    with pytest.raises(ConfigError, match="top_k"):
        MoEFeedForward(8, 8, 4, top_k=5)
    torch.manual_seed(0)
    body = TransformerBody(20, 16, 2, 3, 24, max_len=16, moe_experts=4, moe_top_k=2)
    assert moe_loss(body) == 0.0  # nothing yet
    body(torch.randint(0, 20, (2, 9)))
    losses = [b.ffn.aux_loss for b in body.blocks]
    assert all(ls is not None and ls.item() > 0 for ls in losses)
    total = moe_loss(body)
    torch.testing.assert_close(total, sum(losses))
    assert total.requires_grad
    assert moe_loss(TransformerBody(20, 16, 2, 1)) == 0.0
