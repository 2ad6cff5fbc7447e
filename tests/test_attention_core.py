"""Scaled dot-product attention (course §6.4, eq. 6.9), the causal mask (§6.10, eq. 6.20) and the
``attend`` selector, against ``torch.nn.functional.scaled_dot_product_attention``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from profond.errors import ConfigError
from profond.nn.attention import (
    ATTN_IMPLS,
    attend,
    causal_mask,
    check_impl,
    naive_attention,
    scaled_dot_product,
)

torch.set_num_threads(1)


def _qkv(b, h, n_q, n_k, d, dv, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype).requires_grad_()  # noqa: E731
    return mk(b, h, n_q, d), mk(b, h, n_k, d), mk(b, h, n_k, dv)


# -- causal mask (§6.10) -----------------------------------------------------------------------

def test_causal_mask_is_the_lower_triangle_aligned_on_the_last_keys():
    assert torch.equal(causal_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())
    assert causal_mask(1, 6).all()  # a KV-cache step sees every past key
    m = causal_mask(2, 5)  # the last 2 queries of a 5-token sequence
    assert torch.equal(m, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))
    assert not causal_mask(5, 3)[:2].any() and causal_mask(5, 3)[2:].equal(torch.ones(3, 3, dtype=torch.bool).tril())


# -- equality with PyTorch's SDPA (hypothesis) ---------------------------------------------------

def _mask(kind, b, h, n_q, n_k, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "padding":  # (B, 1, 1, Nk), some batch rows with no valid key at all
        return torch.rand(b, 1, 1, n_k, generator=g) > 0.4
    if kind == "full":
        return torch.rand(b, h, n_q, n_k, generator=g) > 0.5
    # float additive: a bias plus -inf holes
    bias = torch.randn(b, 1, n_q, n_k, generator=g)
    return bias.masked_fill(torch.rand(b, 1, n_q, n_k, generator=g) > 0.6, float("-inf"))


def _reference(q, k, v, mask, causal):
    """F.sdpa with the same mask (causal made explicit, bottom-right); rows without any key are
    given one so that SDPA stays finite there, and ``valid`` tells which rows to compare."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    if mask is None or mask.dtype == torch.bool:
        allowed = torch.ones(n_q, n_k, dtype=torch.bool) if mask is None else mask
        if causal:
            allowed = allowed & causal_mask(n_q, n_k)
        valid = allowed.any(-1, keepdim=True)
        attn_mask = allowed | ~valid
    else:
        attn_mask = mask if not causal else mask.masked_fill(~causal_mask(n_q, n_k), float("-inf"))
        valid = ~torch.isneginf(attn_mask).all(-1, keepdim=True)
        attn_mask = attn_mask.masked_fill(~valid, 0.0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), valid


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), n_q=st.integers(1, 7), n_k=st.integers(1, 7),
       d=st.integers(1, 6), dv=st.integers(1, 5), kind=st.sampled_from(["none", "padding", "full", "float"]),
       causal=st.booleans(), double=st.booleans(), seed=st.integers(0, 10_000))
def test_scaled_dot_product_equals_torch_sdpa_values_and_gradients(b, h, n_q, n_k, d, dv, kind, causal,
                                                                   double, seed):
    dtype = torch.float64 if double else torch.float32
    tol = dict(atol=1e-10, rtol=1e-9) if double else dict(atol=1e-5, rtol=1e-4)
    q, k, v = _qkv(b, h, n_q, n_k, d, dv, dtype, seed)
    mask = _mask(kind, b, h, n_q, n_k, seed)
    mask = mask.to(dtype) if mask is not None and mask.dtype != torch.bool else mask
    out = scaled_dot_product(q, k, v, mask=mask, causal=causal)
    ref, valid = _reference(q, k, v, mask, causal)
    valid = valid.expand(out.shape[:-1] + (1,))  # (B, H, Nq, 1)
    assert out.shape == (b, h, n_q, dv) and torch.isfinite(out).all()
    torch.testing.assert_close(torch.where(valid, out, 0.0), torch.where(valid, ref, 0.0), **tol)
    assert (out[~valid.squeeze(-1)] == 0).all()  # a fully masked query gives zeros, not NaN
    # gradients of the same loss (zero weight on the rows SDPA leaves undefined)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype) * valid
    gs = torch.autograd.grad((out * w).sum(), (q, k, v))
    gr = torch.autograd.grad((ref * w).sum(), (q, k, v))
    for a, r in zip(gs, gr, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, r, **tol)


def test_unmasked_and_is_causal_match_sdpa_exactly_on_square_inputs():
    q, k, v = _qkv(2, 4, 9, 9, 8, 8)
    for causal in (False, True):
        torch.testing.assert_close(scaled_dot_product(q, k, v, causal=causal),
                                   F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=1e-6, rtol=1e-5)


def test_three_d_inputs_without_heads():
    q, k, v = (t[:, 0] for t in _qkv(3, 1, 4, 6, 5, 2))  # (B, N, D)
    out = scaled_dot_product(q, k, v, causal=True)
    assert out.shape == (3, 4, 2)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(4, 6)))


def test_scale_argument_and_naive_alias():
    q, k, v = _qkv(1, 2, 3, 4, 5, 5)
    torch.testing.assert_close(scaled_dot_product(q, k, v, scale=0.3),
                               F.scaled_dot_product_attention(q, k, v, scale=0.3))
    assert naive_attention is scaled_dot_product


# -- weights, masks, NaN-free rows ---------------------------------------------------------------

def test_returned_weights_are_the_masked_softmax_and_give_the_output():
    q, k, v = _qkv(2, 2, 5, 6, 4, 3)
    pad = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)[:, None, None]  # batch 1: no key
    out, w = scaled_dot_product(q, k, v, mask=pad, causal=True, return_weights=True)
    assert w.shape == (2, 2, 5, 6)
    allowed = pad & causal_mask(5, 6)
    assert (w[~allowed.expand_as(w)] == 0).all()  # masked keys get exactly 0 (6.20)
    torch.testing.assert_close(w[0].sum(-1), torch.ones(2, 5))  # valid rows sum to 1
    assert (w[1] == 0).all() and (out[1] == 0).all()
    torch.testing.assert_close(out, w @ v)


def test_float_mask_of_zeros_and_minus_inf_equals_the_bool_mask():
    q, k, v = _qkv(2, 3, 4, 5, 6, 2)
    allowed = torch.rand(2, 1, 4, 5, generator=torch.Generator().manual_seed(3)) > 0.3
    fmask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))
    torch.testing.assert_close(scaled_dot_product(q, k, v, mask=fmask), scaled_dot_product(q, k, v, mask=allowed))


def test_gradcheck_float64_with_a_fully_masked_row():
    q, k, v = _qkv(1, 2, 3, 4, 3, 2, torch.float64)
    mask = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product(q, k, v, mask=mask, causal=True), (q, k, v))
    out = scaled_dot_product(q, k, v, mask=mask)
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


# -- dropout -------------------------------------------------------------------------------------

def test_dropout_zero_is_exact_and_dropout_keeps_the_expected_output():
    q, k, v = (t.detach() for t in _qkv(1, 1, 3, 4, 2, 2))
    ref = scaled_dot_product(q, k, v)
    assert torch.equal(scaled_dot_product(q, k, v, dropout_p=0.0), ref)
    n = 4000  # many independent draws at once: the batch repeats the same problem
    qs, ks, vs = (t.expand(n, *t.shape[1:]) for t in (q, k, v))
    g = torch.Generator().manual_seed(0)
    out, w = scaled_dot_product(qs, ks, vs, dropout_p=0.3, generator=g, return_weights=True)
    torch.testing.assert_close(w[0], scaled_dot_product(q, k, v, return_weights=True)[1][0])  # weights pre-dropout
    torch.testing.assert_close(out.mean(0), ref[0], atol=0.05, rtol=0)  # E[dropout(α)/(1-p)] = α
    assert (out.std(0) > 0.01).all()  # it did drop
    torch.manual_seed(0)
    out_sdpa = attend(qs, ks, vs, "sdpa", dropout_p=0.3)  # SDPA's dropout: same statistics
    torch.testing.assert_close(out_sdpa.mean(0), ref[0], atol=0.05, rtol=0)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(scaled_dot_product(q, k, v, dropout_p=0.5, generator=g1),
                       scaled_dot_product(q, k, v, dropout_p=0.5, generator=g2))


# -- the selector --------------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind", ["none", "padding", "full", "float"])
def test_attend_profond_and_sdpa_agree(kind, causal):
    q, k, v = _qkv(2, 2, 5, 7, 4, 3)
    mask = _mask(kind, 2, 2, 5, 7, seed=1)
    a = attend(q, k, v, "profond", mask=mask, causal=causal)
    s = attend(q, k, v, "sdpa", mask=mask, causal=causal)
    assert torch.isfinite(s).all()
    torch.testing.assert_close(a, s, atol=1e-6, rtol=1e-5)
    out, w = attend(q, k, v, "sdpa", mask=mask, causal=causal, return_weights=True)  # falls back to profond
    torch.testing.assert_close(out, a)
    torch.testing.assert_close(out, w @ v)


def test_check_impl_lists_the_valid_names():
    assert ATTN_IMPLS == ("profond", "sdpa", "tiled", "linear", "local")
    for name in ATTN_IMPLS:
        assert check_impl(name) == name
    with pytest.raises(ConfigError) as e:
        check_impl("flash")
    assert "'flash'" in str(e.value) and all(n in str(e.value) for n in ATTN_IMPLS)
    q, k, v = _qkv(1, 1, 2, 2, 2, 2)
    with pytest.raises(ConfigError, match="profond"):
        attend(q, k, v, "nope")


def test_impls_refuse_what_they_cannot_honour_with_the_fix():
    q, k, v = _qkv(1, 1, 3, 4, 2, 2)
    mask = torch.ones(3, 4, dtype=torch.bool)
    for impl in ("tiled", "linear", "local"):
        with pytest.raises(ConfigError, match="'profond' or 'sdpa'"):
            attend(q, k, v, impl, mask=mask, window=2)
        with pytest.raises(ConfigError, match="dropout"):
            attend(q, k, v, impl, dropout_p=0.1, window=2)
    with pytest.raises(ConfigError, match="window"):
        attend(q, k, v, "local")
    with pytest.raises(ConfigError, match="weights"):
        attend(q, k, v, "linear", return_weights=True)


@pytest.mark.parametrize("n_q,n_k", [(6, 6), (1, 6), (3, 6), (6, 4)])
def test_every_softmax_impl_aligns_causal_on_the_last_keys(n_q, n_k):
    """profond, sdpa, tiled and local (with a window covering everything) give one causal
    attention, also when Nq != Nk (a KV-cache step, a chunk after a prompt)."""
    q, k, v = _qkv(2, 2, n_q, n_k, 4, 3)
    ref = attend(q, k, v, "profond", causal=True)
    for impl in ("sdpa", "tiled", "local"):
        torch.testing.assert_close(attend(q, k, v, impl, causal=True, window=n_k + n_q), ref, atol=1e-6, rtol=1e-5)
    out = attend(q, k, v, "linear", causal=True)
    assert out.shape == ref.shape and torch.isfinite(out).all()
