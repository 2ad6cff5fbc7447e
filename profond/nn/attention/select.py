r"""One selector for the attention computations of chapter 6: :func:`attend` and :data:`ATTN_IMPLS`.

Every layer (multi-head, grouped-query, differential attention) calls :func:`attend`, so that
one option (``impl``) swaps the computation of eq. 6.9 without touching the layer:

* ``profond`` — :func:`~.core.scaled_dot_product`, the explicit ``n × m`` matrix (course §6.4,
  eq. 6.9); the only one that also returns the weights.
* ``sdpa``    — :func:`torch.nn.functional.scaled_dot_product_attention` (fused kernels where
  available); with ``return_weights`` it falls back to ``profond`` (SDPA returns no weights).
* ``tiled``   — :func:`~.tiled.tiled_attention`, exact, online softmax by blocks (§6.12,
  Flash Attention): no ``n × m`` matrix in memory. No arbitrary mask.
* ``linear``  — :func:`~.linear.linear_attention`, ``φ(Q)(φ(K)ᵀV)`` (§6.12, eq. 6.21): another
  model, not the same function as softmax attention. No mask, no weights.
* ``local``   — :func:`~.local.local_attention`, a sliding window of ``window`` keys (§6.12,
  sparse attention), in ``O(n·w)``. No other mask.

Shapes: ``q`` ``(B, H, Nq, D)``, ``k`` ``(B, H, Nk, D)``, ``v`` ``(B, H, Nk, Dv)``; ``mask``
bool (True = may attend) or float (added), broadcastable to ``(B, H, Nq, Nk)``; ``causal``
aligns the queries with the last keys (:func:`~.core.causal_mask`), in every impl. An impl that cannot honour
an argument raises :class:`~profond.errors.ConfigError` naming one that can.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ConfigError
from .core import causal_mask, scaled_dot_product

__all__ = ["ATTN_IMPLS", "attend", "check_impl"]

#: the computations :func:`attend` dispatches to (the ``impl`` / ``attn_impl`` option)
ATTN_IMPLS: tuple[str, ...] = ("profond", "sdpa", "tiled", "linear", "local")


def check_impl(name: str) -> str:
    """``name`` if it is one of :data:`ATTN_IMPLS`, else a :class:`ConfigError` listing them."""
    if name not in ATTN_IMPLS:
        raise ConfigError(f"unknown attention impl {name!r}: choose one of {', '.join(ATTN_IMPLS)}.")
    return name


def _refuse(impl: str, what: str, use: str = "'profond' or 'sdpa'") -> None:
    raise ConfigError(f"attention impl {impl!r} does not support {what}: use impl={use}.")


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, dropout_p: float) -> Tensor:
    """PyTorch's SDPA with this package's conventions: causal aligned bottom-right (PyTorch's
    ``is_causal`` is top-left, the same only when ``Nq = Nk``) and zero output on fully masked
    rows (where SDPA may give NaN)."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    if causal and n_q == 1:  # one query, the last position: it sees every key
        causal = False
    if mask is None and (not causal or n_q == n_k):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
    if mask is not None and mask.dtype != torch.bool:  # float additive mask
        if causal:
            mask = mask.masked_fill(~causal_mask(n_q, n_k, device=q.device), float("-inf"))
        dead = torch.isneginf(mask).all(dim=-1, keepdim=True)  # (…, Nq, 1) rows with no key
        mask = mask.masked_fill(dead, 0.0)
    else:
        if causal:
            cm = causal_mask(n_q, n_k, device=q.device)  # (Nq, Nk)
            mask = cm if mask is None else mask & cm
        dead = ~mask.any(dim=-1, keepdim=True)  # (…, Nq, 1)
        mask = mask | dead  # any finite row; zeroed below
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, H, Nq, Dv)
    return out.masked_fill(dead, 0.0)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    impl: str = "sdpa",
    *,
    mask: Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
    window: int | None = None,
    stride: int | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of ``q`` over ``k, v`` computed by ``impl`` (one of :data:`ATTN_IMPLS`).

    Returns ``out`` ``(B, H, Nq, Dv)``, or ``(out, weights (B, H, Nq, Nk))`` with
    ``return_weights`` (impls ``profond``, ``sdpa``, ``tiled`` and ``local`` compute the weights
    with the explicit path, which gives the same output; ``linear`` has no softmax weights).
    ``window`` / ``stride`` are for ``local`` only. Helper B's impls are imported here, at
    call time.
    """
    check_impl(impl)
    n_q, n_k = q.shape[-2], k.shape[-2]
    if impl in ("tiled", "linear", "local"):
        if dropout_p > 0.0:
            _refuse(impl, "attention dropout")
        if mask is not None:
            _refuse(impl, "a mask" + (" (its window is the mask)" if impl == "local" else ""))
    if impl == "local" and window is None:
        raise ConfigError("attention impl 'local' needs a window (window=w keys, w >= 1).")

    if return_weights:
        if impl == "linear":
            _refuse(impl, "returning attention weights", "'profond'")
        if impl == "local":
            from .local import local_mask

            lm = local_mask(n_q, n_k, window, causal=causal, stride=stride, device=q.device)
            return scaled_dot_product(q, k, v, mask=lm, return_weights=True)
        return scaled_dot_product(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p, return_weights=True)

    if impl == "profond":
        return scaled_dot_product(q, k, v, mask=mask, causal=causal, dropout_p=dropout_p)
    if impl == "sdpa":
        return _sdpa(q, k, v, mask, causal, dropout_p)
    if impl == "tiled":
        from .tiled import tiled_attention

        return tiled_attention(q, k, v, causal=causal)
    if impl == "linear":
        from .linear import linear_attention

        return linear_attention(q, k, v, causal=causal)
    from .local import local_attention

    return local_attention(q, k, v, window, causal=causal, stride=stride)
