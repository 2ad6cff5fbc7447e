r"""Differential attention (Ye et al. 2024), course §6.12, eq. 6.23.

::

    DiffAttn(Q, K, V) = (softmax(Q₁K₁ᵀ/√d_k) − λ softmax(Q₂K₂ᵀ/√d_k)) V      (6.23)

Two softmax maps are subtracted so that the attention both give to irrelevant keys (the
"noise") cancels. Per head, ``[Q₁; Q₂] = X W^Q_i``, ``[K₁; K₂] = X W^K_i`` (each ``d_h``
columns) and ``V = X W^V_i`` (``2 d_h`` columns): ``h`` heads of ``2 d_h = d_model / h``.

λ is learnable, re-parameterised as in the paper so that it can cross zero::

    λ = exp(λ_q1 · λ_k1) − exp(λ_q2 · λ_k2) + λ_init,    λ_q1, λ_k1, λ_q2, λ_k2 ∈ R^{d_h}

with ``λ_init = 0.8 − 0.6·exp(−0.3·(depth − 1))`` for a layer at ``depth`` (1-based), or the
given ``lambda_init``. Each head is then normalised (RMSNorm over its ``2 d_h`` features,
``sub_norm``) and multiplied by ``1 − λ_init``, as in the paper; ``sub_norm=False`` gives
eq. 6.23 alone, followed by ``W^O``.

Since eq. 6.23 is linear in the two maps, ``DiffAttn = A₁V − λ A₂V``: each term is an ordinary
attention, computed by :func:`~.select.attend` with the chosen ``impl`` (dropout, when on,
drops each map's weights independently).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import ConfigError
from .multihead import KVCache, padding_to_attn_mask
from .select import attend, check_impl

__all__ = ["DifferentialAttention", "lambda_init_for_depth"]


def lambda_init_for_depth(depth: int) -> float:
    """``λ_init = 0.8 − 0.6·exp(−0.3·(depth − 1))`` for the layer at ``depth`` ≥ 1 (Ye et al. 2024)."""
    return 0.8 - 0.6 * math.exp(-0.3 * (depth - 1))


class DifferentialAttention(nn.Module):
    """Differential multi-head attention, course §6.12, eq. 6.23; same ``forward`` as
    :class:`~.multihead.MultiHeadAttention` (self / cross, masks, causal, KV cache, weights).

    ``num_heads`` heads, each with two query/key maps of ``d_h = d_model / (2·num_heads)`` and a
    value of ``2·d_h``. Parameters: the four ``d_model × d_model`` projections (no biases unless
    ``bias``), ``lambda_q1, lambda_k1, lambda_q2, lambda_k2`` ``(d_h,)`` and the sub-norm's
    ``(2 d_h,)`` gain. ``last_weights`` keeps the differential map ``A₁ − λA₂`` of the last call
    with ``need_weights=True``.
    """

    def __init__(self, d_model: int, num_heads: int, *, bias: bool = False, dropout: float = 0.0,
                 kdim: int | None = None, vdim: int | None = None, impl: str = "sdpa",
                 lambda_init: float | None = None, depth: int = 1, sub_norm: bool = True) -> None:
        super().__init__()
        if d_model < 2 or num_heads < 1 or d_model % (2 * num_heads):
            raise ConfigError(f"d_model={d_model} must be a positive multiple of 2·num_heads={2 * num_heads} "
                              "(two query/key maps per head).")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout} must be in [0, 1).")
        if depth < 1:
            raise ConfigError(f"depth={depth} must be >= 1 (1 = first layer).")
        check_impl(impl)
        if impl in ("linear", "local"):
            raise ConfigError(f"impl {impl!r} is not softmax attention, eq. 6.23 needs softmax maps: "
                              "use 'profond', 'sdpa' or 'tiled'.")
        if dropout > 0 and impl == "tiled":
            raise ConfigError("impl 'tiled' has no attention dropout: use dropout=0 or impl='sdpa'.")
        self.d_model, self.num_heads = d_model, num_heads
        self.d_head = d_model // (2 * num_heads)
        self.kdim = d_model if kdim is None else kdim
        self.vdim = d_model if vdim is None else vdim
        self.dropout, self.impl = dropout, impl
        self.lambda_init = lambda_init_for_depth(depth) if lambda_init is None else float(lambda_init)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # [Q₁; Q₂] per head
        self.k_proj = nn.Linear(self.kdim, d_model, bias=bias)  # [K₁; K₂] per head
        self.v_proj = nn.Linear(self.vdim, d_model, bias=bias)  # V, 2 d_h per head
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)  # W^O
        dh = self.d_head
        self.lambda_q1 = nn.Parameter(torch.randn(dh) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(dh) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(dh) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(dh) * 0.1)
        self.sub_norm = nn.RMSNorm(2 * dh, eps=1e-5) if sub_norm else None
        self.last_weights: Tensor | None = None

    def lam(self) -> Tensor:
        """``λ = exp(λ_q1·λ_k1) − exp(λ_q2·λ_k2) + λ_init`` (a 0-d tensor with gradients)."""
        return (torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
                - torch.exp(torch.dot(self.lambda_q2, self.lambda_k2)) + self.lambda_init)

    def kv_cache_floats_per_token(self) -> int:
        """Floats a :class:`KVCache` stores per token and layer: keys ``2·h·d_h`` + values ``2·h·d_h``."""
        return 4 * self.num_heads * self.d_head

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, *,
                mask: Tensor | None = None, causal: bool = False, cache: KVCache | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """As :meth:`MultiHeadAttention.forward`: ``query`` ``(B, Nq, d)``, ``key`` / ``value`` None
        (self-attention) or ``(B, Nk, kdim / vdim)``; returns ``(out (B, Nq, d), weights)`` with the
        differential map ``A₁ − λA₂`` ``(B, H, Nq, Nk)`` when ``need_weights``."""
        if key is None:
            key = query
        if value is None:
            value = key
        b, n_q, _ = query.shape
        n_k = key.shape[1]
        h, dh = self.num_heads, self.d_head
        q = self.q_proj(query).view(b, n_q, h, 2, dh)  # (B, Nq, H, 2, d_h)
        q1, q2 = q[:, :, :, 0].transpose(1, 2), q[:, :, :, 1].transpose(1, 2)  # (B, H, Nq, d_h) each
        k = self.k_proj(key).view(b, n_k, 2 * h, dh).transpose(1, 2)  # (B, 2H, Nk, d_h): K₁, K₂ interleaved
        v = self.v_proj(value).view(b, n_k, h, 2 * dh).transpose(1, 2)  # (B, H, Nk, 2 d_h)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, 2H, N, d_h), (B, H, N, 2 d_h)
        k1, k2 = k[:, 0::2], k[:, 1::2]  # (B, H, N, d_h) each
        lam = self.lam()  # λ, ()
        m = padding_to_attn_mask(mask)
        p = self.dropout if self.training else 0.0
        kw = dict(mask=m, causal=causal, dropout_p=p)
        if need_weights:
            o1, a1 = attend(q1, k1, v, self.impl, return_weights=True, **kw)  # (B, H, Nq, 2d_h), (B, H, Nq, N)
            o2, a2 = attend(q2, k2, v, self.impl, return_weights=True, **kw)
            weights = a1 - lam * a2  # (B, H, Nq, N)  the differential map of (6.23)
            self.last_weights = weights.detach()
        else:
            o1 = attend(q1, k1, v, self.impl, **kw)  # (B, H, Nq, 2 d_h)  softmax(Q₁K₁ᵀ/√d) V
            o2 = attend(q2, k2, v, self.impl, **kw)  # (B, H, Nq, 2 d_h)  softmax(Q₂K₂ᵀ/√d) V
            weights = None
        out = o1 - lam * o2  # (B, H, Nq, 2 d_h)  (6.23)
        if self.sub_norm is not None:
            out = self.sub_norm(out) * (1.0 - self.lambda_init)  # per-head RMSNorm, scaled (Ye et al.)
        out = out.transpose(1, 2).reshape(b, n_q, 2 * h * dh)  # (B, Nq, d)  Concat(heads)
        return self.out_proj(out), weights  # (B, Nq, d)
