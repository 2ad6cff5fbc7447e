"""Attention of chapter 6 (profond.nn.attention): eqs. (6.2)–(6.8), masks, gradients."""

from __future__ import annotations

import pytest
import torch

from profond.errors import ConfigError
from profond.nn.attention import (
    ATTENTIONS,
    AdditiveAttention,
    ConcatAttention,
    DotAttention,
    GeneralAttention,
    length_mask,
    make_attention,
    masked_softmax,
)

torch.set_num_threads(1)

B, T, D = 3, 5, 4
LENGTHS = torch.tensor([5, 3, 1])


def _inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, D, generator=g, dtype=dtype)
    k = torch.randn(B, T, D, generator=g, dtype=dtype)
    v = torch.randn(B, T, 2, generator=g, dtype=dtype)
    return q, k, v


@pytest.mark.parametrize("name", ATTENTIONS)
def test_weights_are_a_distribution_over_valid_positions(name):
    torch.manual_seed(0)
    attn = make_attention(name, D, D, attn_size=6)
    q, k, v = _inputs()
    mask = length_mask(LENGTHS, T)
    ctx, w = attn(q, k, v, mask=mask)
    assert ctx.shape == (B, 2) and w.shape == (B, T)
    assert torch.allclose(w.sum(-1), torch.ones(B))                    # (6.5)
    assert (w >= 0).all()
    assert (w[~mask] == 0).all()                                       # exactly zero
    assert (w[mask] > 0).all()
    # context only depends on the valid values: junk in padded slots changes nothing
    v2 = v.masked_fill(~mask.unsqueeze(-1), 1e3)
    k2 = k.masked_fill(~mask.unsqueeze(-1), 7.0)
    ctx2, w2 = attn(q, k2, v2, mask=mask)
    assert torch.allclose(ctx, ctx2, atol=1e-6) and torch.allclose(w, w2, atol=1e-6)


def test_fully_masked_row_is_zero_not_nan():
    s = torch.randn(2, 4)
    mask = torch.tensor([[True, False, True, False], [False] * 4])
    w = masked_softmax(s, mask)
    assert torch.isfinite(w).all()
    assert torch.allclose(w[0].sum(), torch.tensor(1.0)) and (w[1] == 0).all()


def test_dot_equals_hand_computed_softmax_qk_v():
    q, k, v = _inputs()
    queries = torch.randn(B, 2, D)                                    # several decoder steps
    ctx, w = DotAttention(D, D)(queries, k, v)
    expected_w = torch.softmax(torch.einsum("bqd,btd->bqt", queries, k), dim=-1)
    assert torch.allclose(w, expected_w, atol=1e-6)
    assert torch.allclose(ctx, torch.einsum("bqt,btv->bqv", expected_w, v), atol=1e-6)
    # one query (B, d) gives the same as a block of one
    c1, w1 = DotAttention(D, D)(q, k, v)
    c2, w2 = DotAttention(D, D)(q.unsqueeze(1), k, v)
    assert torch.allclose(c1, c2[:, 0]) and torch.allclose(w1, w2[:, 0])
    # scaled: softmax(QKᵀ/√d) (6.9)
    _, ws = DotAttention(D, D, scaled=True)(queries, k, v)
    assert torch.allclose(ws, torch.softmax(torch.einsum("bqd,btd->bqt", queries, k) / D**0.5,
                                            -1), atol=1e-6)


def test_general_with_identity_equals_dot():
    q, k, v = _inputs()
    gen = GeneralAttention(D, D)
    mask = length_mask(LENGTHS, T)
    assert not torch.allclose(gen(q, k, v, mask)[1], DotAttention(D, D)(q, k, v, mask)[1])
    with torch.no_grad():
        gen.W_a.weight.copy_(torch.eye(D))
    for a, b in zip(gen(q, k, v, mask), DotAttention(D, D)(q, k, v, mask), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # general handles d_s != d_h, dot refuses it
    ctx, w = GeneralAttention(3, D)(torch.randn(B, 3), k)
    assert ctx.shape == (B, D) and w.shape == (B, T)
    with pytest.raises(ConfigError):
        DotAttention(3, D)


def _loop_softmax_context(e, mask, v):
    """Reference (6.3)–(6.4) with Python loops over the valid positions."""
    ctx = torch.zeros(B, v.shape[-1], dtype=v.dtype)
    w = torch.zeros(B, T, dtype=v.dtype)
    for b in range(B):
        valid = [j for j in range(T) if mask[b, j]]
        z = sum(torch.exp(e[b][j]) for j in valid)
        for j in valid:
            w[b, j] = torch.exp(e[b][j]) / z
            ctx[b] += w[b, j] * v[b, j]
    return ctx, w


def test_additive_matches_a_loop_over_positions():
    torch.manual_seed(1)
    attn = AdditiveAttention(3, D, attn_size=6)                       # d_s != d_h
    q = torch.randn(B, 3)
    _, k, v = _inputs()
    mask = length_mask(LENGTHS, T)
    W, U, va = attn.W_a.weight, attn.U_a.weight, attn.v_a
    e = [[va @ torch.tanh(W @ q[b] + U @ k[b, j]) for j in range(T)]  # (6.2)
         for b in range(B)]
    ctx_ref, w_ref = _loop_softmax_context(e, mask, v)
    ctx, w = attn(q, k, v, mask=mask)
    assert torch.allclose(w, w_ref, atol=1e-6) and torch.allclose(ctx, ctx_ref, atol=1e-6)


def test_concat_matches_a_loop_over_positions():
    torch.manual_seed(2)
    attn = ConcatAttention(3, D, attn_size=5)
    q = torch.randn(B, 3)
    _, k, v = _inputs()
    mask = length_mask(LENGTHS, T)
    W, va = attn.W_a.weight, attn.v_a
    e = [[va @ torch.tanh(W @ torch.cat([q[b], k[b, j]])) for j in range(T)]  # (6.8)
         for b in range(B)]
    ctx_ref, w_ref = _loop_softmax_context(e, mask, v)
    ctx, w = attn(q, k, v, mask=mask)
    assert torch.allclose(w, w_ref, atol=1e-6) and torch.allclose(ctx, ctx_ref, atol=1e-6)


def test_precomputed_key_projection_is_the_same():
    attn = make_attention("bahdanau", D, D)
    q, k, v = _inputs()
    mask = length_mask(LENGTHS, T)
    a = attn(q, k, v, mask)
    b = attn(q, k, v, mask, projected=attn.project_keys(k))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("name", ATTENTIONS)
def test_gradcheck_float64(name):
    torch.manual_seed(3)
    attn = make_attention(name, D, D, attn_size=3).double()
    q, k, v = _inputs(torch.float64)
    mask = length_mask(LENGTHS, T)
    q.requires_grad_(True)
    k.requires_grad_(True)
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q, k, v: attn(q, k, v, mask=mask), (q, k, v))
    # parameters get gradients too
    ctx, _ = attn(q, k, v, mask=mask)
    ctx.sum().backward()
    for p in attn.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_names_and_aliases():
    assert isinstance(make_attention("additive", D, D), AdditiveAttention)
    assert isinstance(make_attention("Luong-General", D, D), GeneralAttention)
    assert isinstance(make_attention("concat", D, D), ConcatAttention)
    with pytest.raises(ConfigError, match="luong-dot"):
        make_attention("scaled", D, D)
