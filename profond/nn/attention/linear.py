"""Linear attention with the kernel φ(x) = ELU(x) + 1, course §6.12, eq. 6.21 and exercise 6.5.1
(Katharopoulos et al., 2020, "Transformers are RNNs").

softmax(q·k) is replaced by the positive kernel φ(q)·φ(k), and by associativity

    out_i = φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / (φ(q_i)ᵀ Σ_j φ(k_j) + eps)        (6.21)

costs O(n·d²) instead of O(n²·d): the (D, Dv) sum is shared by every query. Causal attention
uses prefix sums of φ(k_j) v_jᵀ; computed by chunks (the quadratic form inside a chunk of C
positions, a running (D, Dv) state between chunks), so memory stays O(n·C + (n/C)·d²) instead
of the O(n·d²) of a cumulative sum of every outer product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...errors import ConfigError

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def phi(x: torch.Tensor) -> torch.Tensor:
    """The feature map φ(x) = ELU(x) + 1 > 0 (course §6.12, exercise 6.5.1)."""
    return F.elu(x) + 1.0


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() < 2 or k.dim() != q.dim() or v.dim() != q.dim() or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ConfigError(f"linear attention wants q (.., Nq, D), k (.., Nk, D), v (.., Nk, Dv) with the same "
                          f"leading dims; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}.")


def linear_attention_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                              eps: float = 1e-6) -> torch.Tensor:
    """The same kernel attention in its O(n²) form, A = φ(Q) φ(K)ᵀ then (A V) / (A 1 + eps):
    the reference :func:`linear_attention` is tested against. ``causal``: query i sees key
    j <= i + (Nk - Nq), as ``causal_mask`` (course §6.10)."""
    _check(q, k, v)
    a = phi(q) @ phi(k).transpose(-2, -1)  # (B, H, Nq, Nk) kernel scores φ(q_i)·φ(k_j)
    if causal:
        n_q, n_k = q.shape[-2], k.shape[-2]
        keep = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(n_k - n_q)  # (6.20)
        a = a * keep
    return (a @ v) / (a.sum(-1, keepdim=True) + eps)  # (6.21), explicit


def _causal_equal(fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor, eps: float, chunk: int,
                  state: torch.Tensor | None, norm: torch.Tensor | None) -> torch.Tensor:
    """Causal linear attention with Nq = Nk = n, query i sees keys 0..i, plus an optional
    prefix (``state`` (.., D, Dv) = Σ φ(k) vᵀ, ``norm`` (.., D) = Σ φ(k)) every query sees."""
    *lead, n, d = fq.shape
    d_v = v.shape[-1]
    pad = (-n) % chunk
    if pad:  # zero features: padded keys add nothing, padded queries are cut off below
        fq, fk, v = F.pad(fq, (0, 0, 0, pad)), F.pad(fk, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    c = (n + pad) // chunk
    fq = fq.reshape(*lead, c, chunk, d)  # (B, H, c, C, D)
    fk = fk.reshape(*lead, c, chunk, d)
    v = v.reshape(*lead, c, chunk, d_v)  # (B, H, c, C, Dv)
    # inside a chunk: the explicit quadratic form, lower-triangular
    a = (fq @ fk.transpose(-2, -1)).tril()  # (B, H, c, C, C)
    num = a @ v  # (B, H, c, C, Dv)
    den = a.sum(-1)  # (B, H, c, C)
    # between chunks: exclusive prefix sums of the chunk states S_c = Σ_{j in c} φ(k_j) v_jᵀ
    kv = fk.transpose(-2, -1) @ v  # (B, H, c, D, Dv)
    z = fk.sum(-2)  # (B, H, c, D)
    s_prev = F.pad(kv.cumsum(-3), (0, 0, 0, 0, 1, 0))[..., :-1, :, :]  # (B, H, c, D, Dv) chunks before c
    z_prev = F.pad(z.cumsum(-2), (0, 0, 1, 0))[..., :-1, :]  # (B, H, c, D)
    if state is not None:
        s_prev = s_prev + state[..., None, :, :]
        z_prev = z_prev + norm[..., None, :]
    num = num + fq @ s_prev  # (B, H, c, C, Dv)
    den = den + (fq @ z_prev[..., :, None])[..., 0]  # (B, H, c, C)
    out = num / (den[..., None] + eps)  # (6.21)
    return out.reshape(*lead, c * chunk, d_v)[..., :n, :]


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     eps: float = 1e-6, *, chunk_size: int = 64) -> torch.Tensor:
    """Linear attention φ(Q)(φ(K)ᵀV) with φ = ELU + 1 (course §6.12, eq. 6.21), O(n·d²).

    q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv) -> (B, H, Nq, Dv) (3-D inputs work too).
    No 1/√d scale: the kernel replaces the softmax. ``causal``: query i sees keys
    j <= i + (Nk - Nq) (as ``causal_mask``), computed by chunks of ``chunk_size`` positions; a
    query that sees no key gets 0. Half/bfloat16 inputs are computed in float32 (the prefix
    sums would lose precision) and the result cast back.
    """
    _check(q, k, v)
    if int(chunk_size) < 1:
        raise ConfigError(f"linear_attention: chunk_size must be >= 1, got {chunk_size}.")
    dtype = q.dtype
    if dtype in _LOW_PRECISION:
        q, k, v = q.float(), k.float(), v.float()
    fq, fk = phi(q), phi(k)  # (B, H, Nq, D), (B, H, Nk, D)
    if not causal:
        kv = fk.transpose(-2, -1) @ v  # (B, H, D, Dv) Σ_j φ(k_j) v_jᵀ
        z = fk.sum(-2)  # (B, H, D) Σ_j φ(k_j)
        out = (fq @ kv) / ((fq @ z[..., :, None]) + eps)  # (6.21)
        return out.to(dtype)
    n_q, n_k = q.shape[-2], k.shape[-2]
    off = n_k - n_q
    if off >= 0:  # the first `off` keys are seen by every query: a shared prefix state
        state = fk[..., :off, :].transpose(-2, -1) @ v[..., :off, :]  # (B, H, D, Dv)
        norm = fk[..., :off, :].sum(-2)  # (B, H, D)
        out = _causal_equal(fq, fk[..., off:, :], v[..., off:, :], eps, int(chunk_size), state, norm)
    else:  # the first -off queries see no key (output 0), the others align with the keys
        seen = _causal_equal(fq[..., -off:, :], fk, v, eps, int(chunk_size), None, None)
        out = torch.cat([seen.new_zeros(*seen.shape[:-2], -off, seen.shape[-1]), seen], dim=-2)
    return out.to(dtype)
