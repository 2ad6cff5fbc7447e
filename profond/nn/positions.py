r"""Position information for attention (course §7.3, def. 7.3, theorem 7.4; §7.10).

Self-attention is permutation-equivariant (prop. 6.7): without positions it reads a bag of
tokens. Four ways to tell it where each token is:

* **sinusoidal** (def. 7.3) — a fixed table added to the embeddings::

      PE(pos, 2i)   = sin(pos / 10000^{2i/d})            (7.4)
      PE(pos, 2i+1) = cos(pos / 10000^{2i/d})            (7.5)

  Theorem 7.4: for every offset ``k`` there is a fixed linear map ``M_k`` (block-diagonal,
  one 2×2 rotation by ``ω_i k`` per frequency ``ω_i = 10000^{-2i/d}``) with
  ``PE_{pos+k} = M_k PE_pos`` whatever ``pos`` (:func:`sinusoidal_shift`);
* **learned** — an ``nn.Embedding(max_len, d)`` table (BERT, GPT-2; in the models);
* **RoPE** (Su et al. 2021, §7.10) — rotates each pair ``(q_{2i}, q_{2i+1})`` of a query /
  key at position ``m`` by the angle ``m θ_i``: ``⟨R_m q, R_n k⟩`` depends on ``m - n`` only
  (:class:`RotaryEmbedding`);
* **ALiBi** (Press et al. 2022, §7.10) — no embedding; head ``h`` adds ``-s_h (i - j)`` to the
  score of query ``i`` on key ``j ≤ i``, slopes ``s_h = 2^{-8h/H}`` (:func:`alibi_bias`).

Notation: ``d`` model width, ``d_h`` head width, ``H`` heads, ``θ_i = base^{-2i/d_h}``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["RotaryEmbedding", "alibi_bias", "alibi_slopes", "sinusoidal_positions", "sinusoidal_shift"]


def _frequencies(d: int, base: float = 10000.0) -> Tensor:
    """``ω_i = base^{-2i/d}`` for ``i = 0 … ⌈d/2⌉-1``, float64."""
    return torch.exp(-math.log(base) * torch.arange(0, d, 2, dtype=torch.float64) / d)


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """The ``(n, d)`` sinusoidal position encoding, course §7.3, eqs. 7.4–7.5."""
    pos = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # (n, 1)
    freq = _frequencies(d)  # (⌈d/2⌉,)
    pe = torch.zeros(n, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)  # (7.4)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])  # (7.5)
    return pe.float()


def sinusoidal_shift(k: int, d: int) -> Tensor:
    """``M_k`` ``(d, d)`` of theorem 7.4: ``PE_{pos+k} = M_k PE_pos`` for every ``pos`` (``d`` even).

    ``sin(ω(p+k)) = sin(ωp)cos(ωk) + cos(ωp)sin(ωk)`` and ``cos(ω(p+k)) = cos(ωp)cos(ωk) -
    sin(ωp)sin(ωk)``: each (sin, cos) pair turns by the rotation ``[[c, s], [-s, c]]``,
    ``c = cos(ω_i k)``, ``s = sin(ω_i k)``, which does not depend on ``pos``.
    """
    if d % 2:
        raise ValueError(f"theorem 7.4 pairs the dimensions: d={d} must be even.")
    m = torch.zeros(d, d, dtype=torch.float64)
    for i, w in enumerate(_frequencies(d).tolist()):
        c, s = math.cos(w * k), math.sin(w * k)
        m[2 * i, 2 * i], m[2 * i, 2 * i + 1] = c, s  # sin row
        m[2 * i + 1, 2 * i], m[2 * i + 1, 2 * i + 1] = -s, c  # cos row
    return m


class RotaryEmbedding(nn.Module):
    """RoPE on ``(B, H, N, d_h)`` queries / keys: pair ``(x_{2i}, x_{2i+1})`` of the token at
    position ``m`` turns by ``m θ_i``, ``θ_i = base^{-2i/d_h}``.

    ``forward(x, offset)``: the ``N`` tokens sit at positions ``offset … offset+N-1`` (a KV cache
    holds the ``offset`` earlier ones, already rotated). No parameter.
    """

    def __init__(self, d_head: int, base: float = 10000.0) -> None:
        super().__init__()
        if d_head % 2:
            raise ValueError(f"RoPE rotates pairs of dimensions: the head width {d_head} must be even.")
        self.d_head, self.base = d_head, base
        self.register_buffer("theta", _frequencies(d_head, base).float(), persistent=False)  # (d_h/2,)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        n = x.shape[-2]
        pos = torch.arange(offset, offset + n, device=x.device, dtype=torch.float32)
        angle = pos[:, None] * self.theta.to(x.device)[None]  # (N, d_h/2)  m θ_i
        cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]  # (…, N, d_h/2)
        out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # R_m (x_{2i}, x_{2i+1})
        return out.flatten(-2)


def alibi_slopes(num_heads: int) -> Tensor:
    """``s_h = 2^{-8h/H}``, ``h = 1 … H`` (Press et al.'s geometric slopes; for ``H`` not a power
    of two, those of the next power of two, interleaved as in their code)."""
    def pow2(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        s = pow2(num_heads)
    else:
        p = 2 ** math.floor(math.log2(num_heads))
        s = pow2(p) + pow2(2 * p)[0::2][: num_heads - p]
    return torch.tensor(s)


def alibi_bias(num_heads: int, n_q: int, n_k: int, device: torch.device | str | None = None) -> Tensor:
    """``(H, Nq, Nk)`` float bias ``-s_h (i - j)`` for query ``i`` (the last ``Nq`` of the ``Nk``
    positions) and key ``j``; keys after the query get ``-s_h (j - i)`` too (symmetric, for an
    encoder); a causal mask removes them in a decoder."""
    i = torch.arange(n_k - n_q, n_k, device=device)[:, None]
    j = torch.arange(n_k, device=device)[None, :]
    dist = (i - j).abs().float()  # (Nq, Nk)
    return -alibi_slopes(num_heads).to(device)[:, None, None] * dist  # (H, Nq, Nk)
