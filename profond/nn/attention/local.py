"""Local (sliding-window) and strided sparse attention, course §6.12 "Attention creuse" and
exercise 6.5.2 (Child et al., 2019, "Sparse Transformers"; Beltagy et al., 2020, Longformer).

Query i, at position p = i + (Nk - Nq) among the keys (aligned at the end, as ``causal_mask``),
attends key j when, with δ = p - j,

* window: |δ| < w (or 0 <= δ < w when causal);
* stride s (optional, added to the window): δ ≡ 0 (mod s) (δ >= 0 when causal), Child et al.'s
  strided pattern: every s-th position, wherever it lies.

The window part is computed by blocks of queries, each against the keys its block can reach
(w - 1 on each side): O(n·w·d) operations and O(n·w) memory, never the n x n matrix. The strided
part groups the queries by their residue p mod s: each group attends densely to the keys of the
same residue, gathered (O(n²/s) in all). The two parts have disjoint keys and are merged through
their log-sum-exp, which gives exactly the softmax over their union.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...errors import ConfigError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check_pattern(window: int, stride: int | None) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"local attention: window must be an integer >= 1 (|i - j| < window), got {window!r}.")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise ConfigError(f"local attention: stride must be None or an integer >= 1, got {stride!r}.")


def _allowed(delta: torch.Tensor, window: int, causal: bool, stride: int | None) -> torch.Tensor:
    """The local pattern as a function of δ = position of the query - position of the key."""
    ok = (delta >= 0) & (delta < window) if causal else delta.abs() < window
    if stride is not None:
        strided = delta.remainder(stride) == 0
        ok = ok | (strided & (delta >= 0) if causal else strided)
    return ok


def local_mask(n_q: int, n_k: int, window: int, causal: bool = False, stride: int | None = None,
               device=None) -> torch.Tensor:
    """Bool (n_q, n_k), True where query i may attend key j (the convention of SDPA's bool
    ``attn_mask``): |δ| < window (causal: 0 <= δ < window), plus δ ≡ 0 mod ``stride`` when given,
    with δ = i + (n_k - n_q) - j (course §6.12)."""
    _check_pattern(window, stride)
    p = torch.arange(n_q, device=device)[:, None] + (n_k - n_q)  # (Nq, 1) query positions
    j = torch.arange(n_k, device=device)[None, :]  # (1, Nk)
    return _allowed(p - j, window, causal, stride)


def _partial(s: torch.Tensor, drop: torch.Tensor, v: torch.Tensor):
    """Un-normalised softmax pieces of one part from its fresh scores ``s`` (overwritten) and the
    pairs to ``drop``: (row max m, Σ exp(s - m), Σ exp(s - m) v); a row with no key gives 0s."""
    s = s.masked_fill_(drop, float("-inf"))
    m = s.detach().amax(-1, keepdim=True)  # a constant shift: the softmax does not depend on it
    m = m.masked_fill_(torch.isinf(m), 0.0)
    e = s.sub_(m).exp_()  # masked keys: exp(-inf) = 0
    return m[..., 0], e.sum(-1), e @ v


def _window_part(q, k, v, window, causal):
    """Blocks of b = w queries against the b + 2(w - 1) keys they can reach (b + w - 1 causal).
    Cost O(n·w·d) for n queries, memory O(n·w)."""
    *lead, n_q, d = q.shape
    n_k, d_v = k.shape[-2], v.shape[-1]
    off = n_k - n_q
    b = max(1, min(window, n_q))  # queries per block (no need for more rows than queries)
    left, right = window - 1, (0 if causal else window - 1)
    span = b + left + right
    pad = (-n_q) % b
    nb = (n_q + pad) // b
    qb = F.pad(q, (0, 0, 0, pad)).reshape(*lead, nb, b, d)  # (B, H, nb, b, D)
    start = torch.arange(nb, device=q.device) * b + off - left  # (nb,) first key each block reaches
    kpos = start[:, None] + torch.arange(span, device=q.device)  # (nb, span) key positions
    idx = kpos.clamp(0, max(n_k - 1, 0)).reshape(-1)  # (nb·span,)
    kb = k.index_select(-2, idx).reshape(*lead, nb, span, d)  # (B, H, nb, span, D)
    vb = v.index_select(-2, idx).reshape(*lead, nb, span, d_v)  # (B, H, nb, span, Dv)
    # δ = query position - key position = t + left - u for row t, slot u: the same in every block
    delta = torch.arange(b, device=q.device)[:, None] + left - torch.arange(span, device=q.device)  # (b, span)
    out_win = (delta < 0) | (delta >= window) if causal else delta.abs() >= window
    drop = out_win | ((kpos < 0) | (kpos >= n_k))[:, None, :]  # (nb, b, span); clamped copies are no keys
    s = qb @ kb.transpose(-2, -1)  # (B, H, nb, b, span) q·k/√d  (6.9), banded
    m, den, num = _partial(s, drop, vb)
    n = nb * b
    return (m.reshape(*lead, n)[..., :n_q], den.reshape(*lead, n)[..., :n_q],
            num.reshape(*lead, n, d_v)[..., :n_q, :])


def _stride_part(q, k, v, window, causal, stride):
    """Queries grouped by residue r = p mod s, each group against the keys j ≡ r (mod s) that
    lie outside the window (those inside belong to the window part)."""
    *lead, n_q, d = q.shape
    n_k, d_v = k.shape[-2], v.shape[-1]
    off = n_k - n_q
    dev = q.device
    # residue-major grids: slot (r, t) holds position base + r + t·s (queries), r + t·s (keys)
    base = (min(off, 0) // stride) * stride  # <= the first query position, ≡ 0 (mod s)
    t_q = -(-(off + n_q - base) // stride)
    t_k = -(-n_k // stride)
    grid_q = base + torch.arange(stride, device=dev)[:, None] + stride * torch.arange(t_q, device=dev)  # (s, Tq)
    grid_k = torch.arange(stride, device=dev)[:, None] + stride * torch.arange(t_k, device=dev)  # (s, Tk)
    q_in, k_in = (grid_q >= off) & (grid_q < off + n_q), grid_k < n_k
    qi = (grid_q - off).clamp(0, max(n_q - 1, 0)).reshape(-1)
    ki = grid_k.clamp(0, max(n_k - 1, 0)).reshape(-1)
    qg = q.index_select(-2, qi).reshape(*lead, stride, t_q, d)  # (B, H, s, Tq, D)
    kg = k.index_select(-2, ki).reshape(*lead, stride, t_k, d)  # (B, H, s, Tk, D)
    vg = v.index_select(-2, ki).reshape(*lead, stride, t_k, d_v)  # (B, H, s, Tk, Dv)
    delta = grid_q[:, :, None] - grid_k[:, None, :]  # (s, Tq, Tk), all ≡ 0 (mod s)
    keep = (delta.abs() >= window) & k_in[:, None, :] & q_in[:, :, None]
    if causal:
        keep = keep & (delta >= 0)
    sc = qg @ kg.transpose(-2, -1)  # (B, H, s, Tq, Tk) q·k/√d  (6.9)
    m, den, num = _partial(sc, ~keep, vg)
    # back to query order: the slot of query i
    valid = q_in.reshape(-1)
    slot = torch.empty(n_q, dtype=torch.long, device=dev)
    slot[grid_q.reshape(-1)[valid] - off] = torch.arange(valid.numel(), device=dev)[valid]
    return (m.reshape(*lead, -1).index_select(-1, slot), den.reshape(*lead, -1).index_select(-1, slot),
            num.reshape(*lead, -1, d_v).index_select(-2, slot))


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, causal: bool = False,
                    stride: int | None = None, scale: float | None = None) -> torch.Tensor:
    """Softmax attention restricted to :func:`local_mask` (course §6.12, exercise 6.5.2), O(n·w·d)
    for the window part (O(n²·d/s) more with a stride), equal to scaled dot-product attention
    with ``attn_mask=local_mask(Nq, Nk, window, causal, stride)``.

    q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv) -> (B, H, Nq, Dv) (3-D inputs work too);
    a query with no allowed key gets 0. ``scale`` defaults to 1/√D. Half/bfloat16 inputs are
    computed in float32 and the result cast back.
    """
    _check_pattern(window, stride)
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim() or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ConfigError(f"local_attention wants q (.., Nq, D), k (.., Nk, D), v (.., Nk, Dv) with the same "
                          f"leading dims; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    dtype = q.dtype
    if dtype in _LOW_PRECISION:
        q, k, v = q.float(), k.float(), v.float()
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q = q * scale  # (6.9): the 1/√d once, on the queries
    m, den, num = _window_part(q, k, v, window, causal)
    if stride is not None:
        m2, den2, num2 = _stride_part(q, k, v, window, causal, stride)
        top = torch.maximum(m, m2)  # disjoint key sets: merge the two softmax pieces
        c1, c2 = torch.exp(m - top), torch.exp(m2 - top)
        den = c1 * den + c2 * den2
        num = c1[..., None] * num + c2[..., None] * num2
    out = num / den.clamp_min(torch.finfo(den.dtype).tiny)[..., None]  # rows with no key: 0 / tiny = 0
    return out.to(dtype)
