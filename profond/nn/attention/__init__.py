"""Attention of chapter 6: recurrent (Bahdanau / Luong, §6.1–6.3, :mod:`.recurrent`), scaled
dot-product (§6.4, :mod:`.core`), multi-head / grouped-query with a KV cache (§6.5–6.6, §6.12,
:mod:`.multihead`), differential (§6.12, :mod:`.differential`), and the efficient variants of
§6.12 — tiled (:mod:`.tiled`), linear (:mod:`.linear`), local (:mod:`.local`) — behind one
selector, :func:`attend` (:mod:`.select`)."""

from .core import causal_mask, naive_attention, scaled_dot_product
from .differential import DifferentialAttention, lambda_init_for_depth
from .linear import linear_attention, linear_attention_explicit
from .local import local_attention, local_mask
from .multihead import KVCache, MultiHeadAttention, padding_to_attn_mask, repeat_kv
from .recurrent import (
    ATTENTIONS,
    AdditiveAttention,
    Attention,
    ConcatAttention,
    DotAttention,
    GeneralAttention,
    canonical_attention,
    length_mask,
    make_attention,
    masked_softmax,
)
from .select import ATTN_IMPLS, attend, check_impl
from .tiled import tiled_attention

__all__ = [
    # recurrent (§6.1–6.3)
    "ATTENTIONS", "Attention", "AdditiveAttention", "DotAttention", "GeneralAttention",
    "ConcatAttention", "canonical_attention", "make_attention", "length_mask", "masked_softmax",
    # scaled dot-product (§6.4, §6.10)
    "causal_mask", "scaled_dot_product", "naive_attention",
    # selector
    "ATTN_IMPLS", "attend", "check_impl",
    # multi-head, grouped-query, KV cache (§6.5–6.6, §6.12)
    "KVCache", "MultiHeadAttention", "padding_to_attn_mask", "repeat_kv",
    # differential (§6.12, eq. 6.23)
    "DifferentialAttention", "lambda_init_for_depth",
    # efficient variants (§6.12)
    "tiled_attention", "linear_attention", "linear_attention_explicit", "local_attention", "local_mask",
]
