r"""Multi-head attention, self and cross (course §6.5–6.6), multi-query / grouped-query (§6.12) and a KV cache.

::

    head_i = Attention(Q W^Q_i, K W^K_{γ(i)}, V W^V_{γ(i)})       (6.13), (6.22)
    MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O             (6.14)

``γ(i) = ⌊i / (h/g)⌋`` maps head ``i`` to its key/value group: ``g = h`` is plain multi-head
attention (6.13), ``g = 1`` multi-query attention (6.22, one ``W^K``, ``W^V`` for all heads),
``1 < g < h`` grouped-query attention (consecutive heads share a group, as in Llama 2).

Self-attention (def. 6.5, eqs. 6.16–6.18): ``Q, K, V`` all come from ``X`` (``key = value =
None``). Cross-attention (def. 6.6, eq. 6.19): ``Q`` from the decoder, ``K, V`` from the encoder
(``key``, ``value`` given; their sizes ``kdim``, ``vdim`` may differ from ``d_model``).

Shapes: ``d`` = ``d_model``, ``h`` heads of ``d_h = d/h``, ``g`` groups. The projections
``q_proj`` ``d → d`` (the ``h`` matrices ``W^Q_i`` side by side), ``k_proj`` ``kdim → g·d_h``,
``v_proj`` ``vdim → g·d_h``, ``out_proj`` ``d → d`` (``W^O``): without biases and with
``g = h``, ``4·d²`` parameters whatever ``h`` (remark 6.10).

Decoding one token at a time (§6.10), the keys and values of past tokens do not change:
:class:`KVCache` keeps them, ``(B, g, N, d_h)`` each, so a step projects only the new token.
Its size per token and layer is ``2·g·d_h`` floats (:meth:`MultiHeadAttention.kv_cache_floats_per_token`):
``h/g`` times less than multi-head attention, the point of MQA / GQA.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .select import attend, check_impl

__all__ = ["KVCache", "MultiHeadAttention", "padding_to_attn_mask"]


class KVCache:
    """Keys and values of the tokens seen so far, for one attention layer: ``k``, ``v``
    ``(B, G, N, D)`` (``G`` key/value heads, ``N`` tokens). :meth:`append` concatenates the new
    tokens' ``(B, G, n, D)`` along ``N`` and returns everything."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached tokens ``N``."""
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add ``k``, ``v`` ``(B, G, n, D)``; return the whole ``(B, G, N + n, D)`` keys and values."""
        if self.k is None:
            self.k, self.v = k, v
        else:
            self.k = torch.cat([self.k, k], dim=-2)  # (B, G, N + n, D)
            self.v = torch.cat([self.v, v], dim=-2)  # (B, G, N + n, Dv)
        return self.k, self.v

    def reset(self) -> None:
        """Forget every token (a new sequence)."""
        self.k = self.v = None


def padding_to_attn_mask(mask: Tensor | None) -> Tensor | None:
    """A ``(B, Nk)`` padding mask (True = valid key) as ``(B, 1, 1, Nk)``; other masks unchanged
    (they already broadcast to ``(B, H, Nq, Nk)``)."""
    if mask is not None and mask.dim() == 2:
        return mask[:, None, None, :]  # (B, 1, 1, Nk)
    return mask


def repeat_kv(x: Tensor, repeats: int) -> Tensor:
    """``(B, G, N, D)`` → ``(B, G·repeats, N, D)``, each group repeated for its ``h/g`` heads (6.22)."""
    if repeats == 1:
        return x
    b, g, n, d = x.shape
    return x[:, :, None].expand(b, g, repeats, n, d).reshape(b, g * repeats, n, d)


class MultiHeadAttention(nn.Module):
    """Multi-head (``kv_groups=None``), grouped-query (``kv_groups=g``) or multi-query (``g = 1``)
    attention, course §6.5, eqs. 6.13–6.14, and §6.12, eq. 6.22.

    ``bias`` adds biases to the four projections; ``dropout`` drops attention weights in
    training; ``impl`` picks the computation of eq. 6.9 (:data:`~.select.ATTN_IMPLS`, ``window``
    for ``local``). The weights of the last call with ``need_weights=True`` stay in
    ``last_weights`` ``(B, H, Nq, Nk)`` for attention maps.
    """

    def __init__(self, d_model: int, num_heads: int, *, kv_groups: int | None = None, bias: bool = False,
                 dropout: float = 0.0, kdim: int | None = None, vdim: int | None = None,
                 impl: str = "sdpa", window: int | None = None) -> None:
        super().__init__()
        if d_model < 1 or num_heads < 1 or d_model % num_heads:
            raise ConfigError(f"d_model={d_model} must be a positive multiple of num_heads={num_heads}.")
        g = num_heads if kv_groups is None else kv_groups
        if g < 1 or num_heads % g:
            raise ConfigError(f"kv_groups={kv_groups} must divide num_heads={num_heads} "
                              f"(1 = multi-query, {num_heads} = multi-head).")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout} must be in [0, 1).")
        check_impl(impl)
        if dropout > 0 and impl in ("tiled", "linear", "local"):
            raise ConfigError(f"attention impl {impl!r} has no attention dropout: use dropout=0 "
                              "or impl='profond' / 'sdpa'.")
        if impl == "local" and window is None:
            raise ConfigError("impl='local' needs window=w (keys per query).")
        self.d_model, self.num_heads, self.kv_groups = d_model, num_heads, g
        self.d_head = d_model // num_heads
        self.kdim = d_model if kdim is None else kdim
        self.vdim = d_model if vdim is None else vdim
        self.dropout, self.impl, self.window = dropout, impl, window
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # [W^Q_1 … W^Q_h]  (6.13), (6.16)
        self.k_proj = nn.Linear(self.kdim, g * self.d_head, bias=bias)  # [W^K_1 … W^K_g]  (6.17), (6.22)
        self.v_proj = nn.Linear(self.vdim, g * self.d_head, bias=bias)  # [W^V_1 … W^V_g]  (6.18), (6.22)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O  (6.14)
        self.last_weights: Tensor | None = None
        #: a :class:`~profond.nn.positions.RotaryEmbedding` applied to the queries and keys of
        #: self-attention (RoPE, §7.10), or None; a Transformer model sets it
        self.rope: nn.Module | None = None

    def kv_cache_floats_per_token(self) -> int:
        """Floats a :class:`KVCache` stores per token (and layer): ``2·g·d_h`` (keys + values)."""
        return 2 * self.kv_groups * self.d_head

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                mask: Tensor | None = None, causal: bool = False, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``query`` ``(B, Nq, d)``; ``key`` ``(B, Nk, kdim)`` and ``value`` ``(B, Nk, vdim)``, both None
        for self-attention (def. 6.5), else cross-attention (def. 6.6; ``value`` None → ``key``).

        ``mask``: ``(B, Nk)`` bool padding mask (True = valid key), or bool / float broadcastable to
        ``(B, H, Nq, Nk)`` (True = may attend); with a ``cache``, ``Nk`` counts every cached key.
        ``causal``: query ``i`` sees the keys up to its own position, the queries being the last
        ``Nq`` positions (§6.10). ``cache``: the new keys / values are appended to it and the
        queries attend to all of them (incremental decoding). Returns ``(out (B, Nq, d), weights
        (B, H, Nq, Nk) or None)``.
        """
        if key is None:
            key = query  # self-attention  (6.16)–(6.18)
        if value is None:
            value = key
        b, n_q, _ = query.shape
        n_k = key.shape[1]
        h, g, dh = self.num_heads, self.kv_groups, self.d_head
        q = self.q_proj(query).view(b, n_q, h, dh).transpose(1, 2)  # (B, H, Nq, d_h)  Q W^Q_i  (6.13)
        k = self.k_proj(key).view(b, n_k, g, dh).transpose(1, 2)  # (B, G, Nk, d_h)  K W^K  (6.22)
        v = self.v_proj(value).view(b, n_k, g, dh).transpose(1, 2)  # (B, G, Nk, d_h)  V W^V  (6.22)
        if self.rope is not None:  # RoPE: the new tokens sit after the cached ones
            offset = 0 if cache is None else cache.length
            q, k = self.rope(q, offset + n_k - n_q), self.rope(k, offset)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, G, N_past + Nk, d_h)
        k, v = repeat_kv(k, h // g), repeat_kv(v, h // g)  # (B, H, N, d_h), head i reads group γ(i)
        res = attend(q, k, v, self.impl, mask=padding_to_attn_mask(mask), causal=causal,
                     dropout_p=self.dropout if self.training else 0.0, window=self.window,
                     return_weights=need_weights)
        weights = None
        if need_weights:
            res, weights = res  # (B, H, Nq, Dh), (B, H, Nq, N)
            self.last_weights = weights.detach()
        out = res.transpose(1, 2).reshape(b, n_q, h * dh)  # (B, Nq, d)  Concat(head_1 … head_h)
        return self.out_proj(out), weights  # (B, Nq, d)  · W^O  (6.14)

    @torch.no_grad()
    def load_from_torch(self, m: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of PyTorch's :class:`torch.nn.MultiheadAttention` ``m`` (same ``d_model``,
        heads, ``kdim``, ``vdim``, biases; ``g = h``; no ``add_bias_kv``). Returns ``self``."""
        if (m.embed_dim, m.num_heads, m.kdim, m.vdim) != (self.d_model, self.num_heads, self.kdim, self.vdim):
            raise ConfigError(f"cannot copy nn.MultiheadAttention(embed_dim={m.embed_dim}, num_heads={m.num_heads}, "
                              f"kdim={m.kdim}, vdim={m.vdim}) into d_model={self.d_model}, "
                              f"num_heads={self.num_heads}, kdim={self.kdim}, vdim={self.vdim}: build them alike.")
        if self.kv_groups != self.num_heads:
            raise ConfigError("load_from_torch needs kv_groups=None (plain multi-head attention).")
        if m.bias_k is not None:
            raise ConfigError("nn.MultiheadAttention(add_bias_kv=True) has no equivalent here: build it without.")
        has_bias = m.in_proj_bias is not None
        if has_bias != (self.q_proj.bias is not None):
            raise ConfigError(f"bias mismatch: nn.MultiheadAttention bias={has_bias}, this module "
                              f"bias={self.q_proj.bias is not None}: build them alike.")
        if m._qkv_same_embed_dim:
            wq, wk, wv = m.in_proj_weight.chunk(3)  # each (d, d)
        else:
            wq, wk, wv = m.q_proj_weight, m.k_proj_weight, m.v_proj_weight
        for lin, w in ((self.q_proj, wq), (self.k_proj, wk), (self.v_proj, wv)):
            lin.weight.copy_(w)
        self.out_proj.weight.copy_(m.out_proj.weight)
        if has_bias:
            for lin, bb in zip((self.q_proj, self.k_proj, self.v_proj), m.in_proj_bias.chunk(3), strict=True):
                lin.bias.copy_(bb)
            self.out_proj.bias.copy_(m.out_proj.bias)
        return self
