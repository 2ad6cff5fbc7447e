"""Exact tiled attention with an online softmax (FlashAttention-2 style), course §6.12 "Flash
Attention" and exercise 6.5.3.

softmax(Q Kᵀ / √d) V (eq. 6.9) is computed one key/value block at a time: for every query row
we keep the running maximum m, the running normaliser l = Σ exp(s - m) and the running
un-normalised output; a new block rescales them by exp(m_old - m_new). The n x n matrix of
scores is never materialised, neither in forward nor in backward: the autograd Function stores
only the inputs, the output O and the log-sum-exp L = m + log l of every row, and the backward
recomputes each block's probabilities P = exp(S - L) from them (Dao, 2023).

Queries are split in blocks too (``q_block_size``, 8 key blocks' worth by default): on a GPU
every query block goes to its own thread block; on a CPU each block is one Python iteration, so
query blocks are taller than key blocks (fewer iterations) yet small enough for the tile of
scores, q_block x block, to stay in cache. Memory is O(n · d) plus one tile, never O(n²).
"""

from __future__ import annotations

import math

import torch

from ...errors import ConfigError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim():
        raise ConfigError(f"tiled_attention wants q, k, v of the same rank (B, H, N, D) or (B, N, D); got "
                          f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ConfigError(f"tiled_attention: shapes do not match: q {tuple(q.shape)} (.., Nq, D), k "
                          f"{tuple(k.shape)} (.., Nk, D), v {tuple(v.shape)} (.., Nk, Dv); expand grouped "
                          f"k/v heads to q's heads first.")
    if int(block_size) < 1:
        raise ConfigError(f"tiled_attention: block_size must be >= 1, got {block_size}.")


def _key_blocks(n_q: int, n_k: int, q0: int, n_rows: int, block: int, causal: bool):
    """Yield ``(j0, j1, lo, r)`` for the key blocks a query chunk [q0, q0 + n_rows) must visit.

    Causal (course §6.10, eq. 6.20, aligned at the end as ``causal_mask``): query i sees key j iff
    j <= i + (n_k - n_q). Rows of the chunk before ``lo`` see nothing of the block (skipped); rows
    ``lo .. lo + r`` see part of it (masked); the rest see all of it. Fully masked blocks
    are skipped: once a block starts after the chunk's last visible key, the loop stops."""
    off = n_k - n_q
    for j0 in range(0, n_k, block):
        j1 = min(j0 + block, n_k)
        if not causal:
            yield j0, j1, 0, 0
            continue
        lo = max(0, j0 - off - q0)  # first row of the chunk with key j0 visible
        if lo >= n_rows:
            return  # this block and all later ones are fully masked for the chunk
        full = max(lo, j1 - 1 - off - q0)  # first row that sees the whole block
        yield j0, j1, lo, min(full, n_rows) - lo


def _mask_rows(s: torch.Tensor, j0: int, row0: int, r: int, off: int) -> None:
    """Set to -inf, in place, the scores of keys j > i + off in the first ``r`` rows of ``s``
    (the only rows of the block that are partly masked); ``row0`` = absolute index of row 0."""
    if r <= 0:
        return
    i = torch.arange(row0, row0 + r, device=s.device)[:, None]
    j = torch.arange(j0, j0 + s.shape[-1], device=s.device)[None, :]
    s[..., :r, :].masked_fill_(j > i + off, float("-inf"))  # (6.20)


def _forward(q, k, v, causal, block, q_block):
    """O and L = logsumexp of every row's scores (rows that see no key: O = 0, L = +inf);
    3-D (BH, N, D) tensors, ``q`` already multiplied by the scale 1/√d."""
    bh, n_q, _ = q.shape
    n_k, d_v = k.shape[-2], v.shape[-1]
    off = n_k - n_q
    out = q.new_zeros(bh, n_q, d_v)  # (BH, Nq, Dv) running un-normalised output
    m = q.new_full((bh, n_q), float("-inf"))  # (BH, Nq) running max
    norm = q.new_zeros(bh, n_q)  # (BH, Nq) running normaliser l
    for q0 in range(0, n_q, q_block):
        q1 = min(q0 + q_block, n_q)
        for j0, j1, lo, r in _key_blocks(n_q, n_k, q0, q1 - q0, block, causal):
            a, b = q0 + lo, q1
            s = torch.bmm(q[:, a:b], k[:, j0:j1].transpose(1, 2))  # (BH, rows, bk) q·k/√d  (6.9)
            if causal:
                _mask_rows(s, j0, a, r, off)
            m_old = m[:, a:b]
            m_new = torch.maximum(m_old, s.amax(-1))  # every row here sees >= 1 key: finite
            alpha = (m_old - m_new).exp_()  # rescales what was accumulated so far
            p = s.sub_(m_new[..., None]).exp_()  # (BH, rows, bk) exp(s - m), in place
            norm[:, a:b].mul_(alpha).add_(p.sum(-1))  # l <- alpha l + Σ_j p
            out[:, a:b].mul_(alpha[..., None]).baddbmm_(p, v[:, j0:j1])  # O <- alpha O + P V
            m_old.copy_(m_new)
    seen = norm > 0
    safe = torch.where(seen, norm, torch.ones_like(norm))
    out = out.div_(safe[..., None])  # softmax normalisation
    lse = torch.where(seen, m + torch.log(safe), float("inf"))  # L = m + log l
    return out, lse


def _backward(q, k, v, out, lse, d_out, causal, block, q_block, scale):
    """FlashAttention-2 backward: P = exp(S - L) recomputed per block, D = rowsum(dO ∘ O),
    dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - D), dQ = dS K / √d, dK = dSᵀ Q / √d; 3-D tensors,
    ``q`` already scaled (so dK = dSᵀ (Q/√d)); dQ is with respect to the unscaled q."""
    n_q, n_k = q.shape[-2], k.shape[-2]
    off = n_k - n_q
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (d_out * out).sum(-1)  # (BH, Nq)
    for q0 in range(0, n_q, q_block):
        q1 = min(q0 + q_block, n_q)
        for j0, j1, lo, r in _key_blocks(n_q, n_k, q0, q1 - q0, block, causal):
            a, b = q0 + lo, q1
            qs, kb, vb, dos = q[:, a:b], k[:, j0:j1], v[:, j0:j1], d_out[:, a:b]
            s = torch.bmm(qs, kb.transpose(1, 2))  # (BH, rows, bk), q already scaled by 1/√d
            if causal:
                _mask_rows(s, j0, a, r, off)
            p = s.sub_(lse[:, a:b, None]).exp_()  # the block's softmax weights, recomputed
            dv[:, j0:j1].baddbmm_(p.transpose(1, 2), dos)  # dV += Pᵀ dO
            dp = torch.bmm(dos, vb.transpose(1, 2))  # (BH, rows, bk) dP = dO Vᵀ
            ds = dp.sub_(delta[:, a:b, None]).mul_(p)  # dS = P ∘ (dP - D), in place
            dq[:, a:b].baddbmm_(ds, kb)  # dQ += dS K
            dk[:, j0:j1].baddbmm_(ds.transpose(1, 2), qs)  # dK += dSᵀ Q/√d
    return dq.mul_(scale), dk, dv


class _TiledAttention(torch.autograd.Function):
    """Saves q, k, v, O and L only; backward recomputes the blocks."""

    @staticmethod
    def forward(ctx, q, k, v, causal, block, q_block, scale):
        shapes = (q.shape, k.shape, v.shape)
        flat = lambda t: t.reshape(-1, *t.shape[-2:])  # noqa: E731  (B, H, N, D) -> (BH, N, D)
        q_scaled = flat(q) * scale  # the 1/√d of eq. 6.9 applied once, not per block
        out, lse = _forward(q_scaled, flat(k), flat(v), causal, block, q_block)
        ctx.save_for_backward(q_scaled, flat(k), flat(v), out, lse)
        ctx.args, ctx.shapes = (causal, block, q_block, scale), shapes
        return out.reshape(*shapes[0][:-1], shapes[2][-1])

    @staticmethod
    def backward(ctx, d_out):
        q, k, v, out, lse = ctx.saved_tensors
        d_out = d_out.reshape(out.shape).contiguous()
        dq, dk, dv = _backward(q, k, v, out, lse, d_out, *ctx.args)
        sq, sk, sv = ctx.shapes
        return dq.reshape(sq), dk.reshape(sk), dv.reshape(sv), None, None, None, None


def tiled_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                    block_size: int = 128, scale: float | None = None, *,
                    q_block_size: int | None = None) -> torch.Tensor:
    """Exact softmax attention computed by blocks (course §6.12, eq. 6.9; exercise 6.5.3).

    q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv) -> (B, H, Nq, Dv); 3-D (B, N, D) works too.
    ``block_size`` keys per block; ``q_block_size`` queries per block (None: 8 x block_size). ``causal``: query i sees key j <= i + (Nk - Nq) (as ``causal_mask``); a query
    that sees no key gets a zero output. ``scale`` defaults to 1/√D. Half/bfloat16 inputs are
    computed in float32 and the result cast back.
    """
    _check(q, k, v, block_size)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    q_block = 8 * int(block_size) if q_block_size is None else int(q_block_size)
    if q_block < 1:
        raise ConfigError(f"tiled_attention: q_block_size must be >= 1 or None, got {q_block_size}.")
    dtype = q.dtype
    if dtype in _LOW_PRECISION:
        q, k, v = q.float(), k.float(), v.float()
    out = _TiledAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), bool(causal), int(block_size),
                                max(1, q_block), scale)
    return out.to(dtype)
