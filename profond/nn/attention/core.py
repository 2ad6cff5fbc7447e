r"""Scaled dot-product attention and the causal mask, course §6.4 (eq. 6.9) and §6.10 (eq. 6.20).

Notation map (course symbol → variable in this package)::

    Q ∈ R^{n×d_k}          q       (B, H, Nq, D)    queries, one row per position
    K ∈ R^{m×d_k}          k       (B, H, Nk, D)    keys
    V ∈ R^{m×d_v}          v       (B, H, Nk, Dv)   values
    n, m                   Nq, Nk                   numbers of queries and keys
    d_k, d_v               D, Dv                    key and value sizes per head
    h                      H  (num_heads)           heads, eq. 6.13
    1/√d_k                 scale                    the scale factor of Théorème 6.3 (6.12)
    q_iᵀk_j / √d_k         scores[..., i, j]        (B, H, Nq, Nk)
    M_ij                   mask / causal            0 where allowed, −∞ where masked (6.20)
    α_ij = softmax_j(·)    weights[..., i, j]       (B, H, Nq, Nk), rows sum to 1
    Attention(Q, K, V)     out                      (B, H, Nq, Dv), eq. 6.9

``B`` is the batch. Every function also accepts H-less 3-D inputs ``(B, N, D)``: only the
last two dimensions are the sequence and feature ones.

Masks follow :func:`torch.nn.functional.scaled_dot_product_attention`: a **bool** mask is
``True`` where query ``i`` may attend key ``j``; a **float** mask is *added* to the scores
(``0`` allowed, ``-inf`` masked, any other value a bias). Either broadcasts to
``(B, H, Nq, Nk)``; a padding mask of valid keys ``(B, Nk)`` becomes ``mask[:, None, None, :]``.

A query row whose keys are all masked has no softmax (``0/0``): it gets zero weights and
a zero output, never NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["causal_mask", "scaled_dot_product", "naive_attention"]


def causal_mask(n_q: int, n_k: int, device: torch.device | str | None = None) -> Tensor:
    """``(n_q, n_k)`` bool mask, ``True`` where query ``i`` may attend key ``j``: ``j ≤ i + (n_k − n_q)``.

    Course §6.10, eq. 6.20 (the lower triangle ``j ≤ i`` when ``n_q = n_k``). The queries are
    aligned with the *last* keys, so the last query sees every key: a decoding step with a
    KV cache (``n_q = 1``, ``n_k`` = all tokens so far) sees the whole past. With
    ``n_q > n_k`` the first ``n_q − n_k`` queries see nothing (their rows are all False).
    """
    i = torch.arange(n_q, device=device)[:, None]  # (Nq, 1)
    j = torch.arange(n_k, device=device)[None, :]  # (1, Nk)
    return j <= i + (n_k - n_q)  # (Nq, Nk)  (6.20)


def scaled_dot_product(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    scale: float | None = None,
    return_weights: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""``softmax(QKᵀ/√d_k + M) V``, course §6.4, eq. 6.9, computed explicitly (the ``n × m`` matrix).

    ``q`` ``(B, H, Nq, D)``, ``k`` ``(B, H, Nk, D)``, ``v`` ``(B, H, Nk, Dv)`` (or 3-D without
    ``H``). ``mask``: bool (True = may attend) or float (added), broadcastable to
    ``(B, H, Nq, Nk)``. ``causal`` adds the mask of :func:`causal_mask` (§6.10, eq. 6.20).
    ``scale`` defaults to ``1/√D`` (Théorème 6.3). ``dropout_p`` drops attention weights
    (rescaling the kept ones by ``1/(1−p)``), as PyTorch's SDPA does: it is applied whenever
    ``dropout_p > 0``, so a module passes ``0`` in eval mode.

    Returns ``out`` ``(B, H, Nq, Dv)``, or ``(out, weights)`` with ``weights`` ``(B, H, Nq, Nk)``
    — the softmax *before* dropout, for attention maps — when ``return_weights``. Fully masked
    query rows give zero weights and zero output (and zero gradients), not NaN.
    """
    n_q, n_k = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Nq, Nk)  QKᵀ/√d_k  (6.9)
    allowed = None  # (B, H, Nq, Nk) bool, True = may attend
    if mask is not None:
        if mask.dtype == torch.bool:
            allowed = mask
        else:
            scores = scores + mask  # (B, H, Nq, Nk)  + M  (6.20), float masks
    if causal:
        cm = causal_mask(n_q, n_k, device=q.device)  # (Nq, Nk)
        allowed = cm if allowed is None else allowed & cm
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))  # M_ij = −∞ where masked (6.20)
    # a row of −∞ only has no softmax (0/0): give it finite scores, then zero weights
    dead = torch.isneginf(scores.amax(dim=-1, keepdim=True))  # (B, H, Nq, 1)
    scores = scores.masked_fill(dead, 0.0)
    weights = torch.softmax(scores, dim=-1).masked_fill(dead, 0.0)  # (B, H, Nq, Nk)  α  (6.9)
    attn = weights
    if dropout_p > 0.0:
        keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= dropout_p
        attn = weights * keep.to(weights.dtype) / (1.0 - dropout_p)  # (B, H, Nq, Nk)
    out = attn @ v  # (B, H, Nq, Dv)  (6.9)
    return (out, weights) if return_weights else out


#: the explicit ``n × m`` path (the ``"profond"`` impl of :func:`~profond.nn.attention.attend`)
naive_attention = scaled_dot_product

