r"""Attention of chapter 6 (§6.1–6.3): Bahdanau (additive) and Luong (dot, general, concat).

Equation numbers are those of the course, chapter 6 (§6.1–6.4, eqs. 6.1–6.9).
A decoder state ``s`` (the *query*) reads the encoder states ``h_1 … h_T`` (the *keys*,
which are also the *values* unless other values are given)::

    e_{t,j} = score(s_t, h_j)          (6.2), (6.6)–(6.8)   alignment scores
    α_{t,j} = softmax_j(e_{t,:})       (6.3)                attention weights
    c_t     = Σ_j α_{t,j} h_j          (6.4)                context vector

Scores (:data:`ATTENTIONS`):

* ``bahdanau`` (additive, 6.2): ``e = v_aᵀ tanh(W_a s + U_a h)``, ``W_a ∈ R^{d_a×d_s}``,
  ``U_a ∈ R^{d_a×d_h}``, ``v_a ∈ R^{d_a}``. Bahdanau feeds ``s_{t-1}``, the decoder state
  *before* its update (Remarque 6.2) — that is the decoder's business, not this module's.
* ``luong-dot`` (6.6): ``e = sᵀ h`` — no parameters, needs ``d_s = d_h``; ``scaled=True``
  divides by ``√d_h``, the scaled dot-product of §6.4 (6.9).
* ``luong-general`` (6.7): ``e = sᵀ W_a h``, ``W_a ∈ R^{d_s×d_h}`` (``d_s d_h`` parameters).
* ``luong-concat`` (6.8): ``e = v_aᵀ tanh(W_a [s; h])``, ``W_a ∈ R^{d_a×(d_s+d_h)}``.
  Splitting ``W_a = [W_s, W_h]`` by columns gives ``W_s s + W_h h``: the additive score
  with ``W_a, U_a`` read from one matrix.

Every score splits into a part that depends on the keys only (``U_a h``, ``W_a h``, …),
computed once per source sentence by :meth:`Attention.project_keys`, and a per-query
part, :meth:`Attention.score`. A decoder that attends at each of its ``T'`` steps passes
the projected keys back in (``projected=``) and pays the ``O(T d_h d_a)`` projection once.

Shapes: ``query`` ``(B, d_s)`` (one decoder step) or ``(B, T', d_s)`` (all steps at once);
``keys`` ``(B, T, d_h)``; ``values`` ``(B, T, d_v)`` (default: the keys). ``forward``
returns ``(context, weights)``: ``(B, d_v)`` and ``(B, T)``, or ``(B, T', d_v)`` and
``(B, T', T)``.

Padding: ``mask`` ``(B, T)`` is ``True`` at valid source positions (:func:`length_mask`
builds it from lengths). Masked positions get a weight of exactly 0 and the valid ones
sum to 1 (Théorème 6.1, eq. 6.5: ``c_t`` is a convex combination of the valid ``h_j``).
A row with no valid position gets all-zero weights and a zero context (no NaN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import ConfigError

__all__ = [
    "ATTENTIONS", "Attention", "AdditiveAttention", "DotAttention", "GeneralAttention",
    "ConcatAttention", "canonical_attention", "make_attention", "length_mask",
    "masked_softmax",
]

#: attention scores by name (the ``attention`` option of the ``seq2seq`` model)
ATTENTIONS: tuple[str, ...] = ("bahdanau", "luong-dot", "luong-general", "luong-concat")
_ALIASES = {"additive": "bahdanau", "dot": "luong-dot", "general": "luong-general",
            "concat": "luong-concat"}


def length_mask(lengths: Tensor | list[int], max_len: int | None = None) -> Tensor:
    """``(B, max_len)`` bool mask, ``True`` where ``j < lengths[b]`` (valid positions)."""
    lengths = torch.as_tensor(lengths)
    max_len = int(lengths.max()) if max_len is None else int(max_len)
    return torch.arange(max_len, device=lengths.device) < lengths.reshape(-1, 1)


def masked_softmax(scores: Tensor, mask: Tensor | None = None, dim: int = -1) -> Tensor:
    """``softmax`` over ``dim`` restricted to ``mask`` (True = valid), eq. (6.3).

    Masked scores are replaced by the dtype's most negative number (not ``-inf``, whose
    all-masked rows would give ``0/0``), so ``exp`` underflows to exactly 0; the result
    is multiplied by the mask so that an all-masked row is all zeros instead of uniform.
    """
    if mask is None:
        return torch.softmax(scores, dim=dim)
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim) * mask.to(scores.dtype)


class Attention(nn.Module):
    """Base class: ``forward`` = scores → masked softmax (6.3) → weighted sum (6.4).

    Subclasses implement :meth:`score` and, when part of the score depends on the keys
    only, :meth:`project_keys`.
    """

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__()
        if query_size < 1 or key_size < 1:
            raise ConfigError(f"query_size={query_size}, key_size={key_size} must be >= 1.")
        self.query_size = int(query_size)
        self.key_size = int(key_size)

    def project_keys(self, keys: Tensor) -> Tensor:
        """The query-independent part of the score, ``(B, T, ·)``; the keys themselves here."""
        return keys

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        """Scores ``e`` ``(B, T', T)`` from queries ``(B, T', d_s)`` and projected keys."""
        raise NotImplementedError

    def forward(
        self, query: Tensor, keys: Tensor, values: Tensor | None = None,
        mask: Tensor | None = None, projected: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(context, weights)`` — see the module docstring for the shapes.

        ``projected``: ``self.project_keys(keys)`` computed beforehand (decoding loops).
        """
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query                        # (B, T', d_s)
        if projected is None:
            projected = self.project_keys(keys)
        e = self.score(q, projected)                                       # (B, T', T)
        alpha = masked_softmax(e, None if mask is None else mask.unsqueeze(1))  # (6.3)
        context = alpha @ (keys if values is None else values)            # (6.4)
        if single:
            return context.squeeze(1), alpha.squeeze(1)
        return context, alpha


class AdditiveAttention(Attention):
    r"""Bahdanau's additive attention, eq. (6.2): ``e_{t,j} = v_aᵀ tanh(W_a s + U_a h_j)``.

    ``W_a`` (``d_a × d_s``), ``U_a`` (``d_a × d_h``) and ``v_a`` (``d_a``) are learnt;
    ``d_a`` (``attn_size``) defaults to ``d_h``. No biases, as in (6.2).
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int | None = None) -> None:
        super().__init__(query_size, key_size)
        self.attn_size = int(attn_size or key_size)
        self.W_a = nn.Linear(self.query_size, self.attn_size, bias=False)
        self.U_a = nn.Linear(self.key_size, self.attn_size, bias=False)
        self.v_a = nn.Parameter(torch.empty(self.attn_size))
        nn.init.uniform_(self.v_a, -1 / math.sqrt(self.attn_size), 1 / math.sqrt(self.attn_size))

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.U_a(keys)                                              # U_a h_j

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        # (B, T', 1, d_a) + (B, 1, T, d_a) -> tanh -> · v_a -> (B, T', T)
        return torch.tanh(self.W_a(query).unsqueeze(2) + projected.unsqueeze(1)) @ self.v_a


class DotAttention(Attention):
    r"""Luong's dot score, eq. (6.6): ``e_{t,j} = s_tᵀ h_j`` (needs ``d_s = d_h``).

    ``scaled=True`` divides by ``√d_h`` (the scaled dot-product of §6.4, eq. 6.9).
    With queries ``Q`` and keys ``K`` stacked by rows this is ``softmax(Q Kᵀ) V``.
    """

    def __init__(self, query_size: int, key_size: int, scaled: bool = False) -> None:
        super().__init__(query_size, key_size)
        if self.query_size != self.key_size:
            raise ConfigError(f"dot attention needs query_size == key_size, got "
                              f"{query_size} and {key_size}: use luong-general or bahdanau.")
        self.scaled = bool(scaled)

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        e = query @ projected.transpose(-1, -2)
        return e / math.sqrt(self.key_size) if self.scaled else e


class GeneralAttention(Attention):
    r"""Luong's general score, eq. (6.7): ``e_{t,j} = s_tᵀ W_a h_j``, ``W_a ∈ R^{d_s×d_h}``.

    ``W_a h_j`` is precomputed by :meth:`project_keys`; with ``W_a = I`` this is the dot
    score (6.6).
    """

    def __init__(self, query_size: int, key_size: int) -> None:
        super().__init__(query_size, key_size)
        self.W_a = nn.Linear(self.key_size, self.query_size, bias=False)  # weight: d_s × d_h

    def project_keys(self, keys: Tensor) -> Tensor:
        return self.W_a(keys)                                              # W_a h_j

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        return query @ projected.transpose(-1, -2)


class ConcatAttention(Attention):
    r"""Luong's concat score, eq. (6.8): ``e_{t,j} = v_aᵀ tanh(W_a [s_t; h_j])``.

    ``W_a`` is one ``d_a × (d_s + d_h)`` matrix; its first ``d_s`` columns multiply
    ``s_t`` and the last ``d_h`` columns ``h_j`` (precomputed by :meth:`project_keys`).
    """

    def __init__(self, query_size: int, key_size: int, attn_size: int | None = None) -> None:
        super().__init__(query_size, key_size)
        self.attn_size = int(attn_size or key_size)
        self.W_a = nn.Linear(self.query_size + self.key_size, self.attn_size, bias=False)
        self.v_a = nn.Parameter(torch.empty(self.attn_size))
        nn.init.uniform_(self.v_a, -1 / math.sqrt(self.attn_size), 1 / math.sqrt(self.attn_size))

    def project_keys(self, keys: Tensor) -> Tensor:
        return keys @ self.W_a.weight[:, self.query_size:].T              # W_h h_j

    def score(self, query: Tensor, projected: Tensor) -> Tensor:
        ws = query @ self.W_a.weight[:, : self.query_size].T               # W_s s_t
        return torch.tanh(ws.unsqueeze(2) + projected.unsqueeze(1)) @ self.v_a


def canonical_attention(name: str, allow_none: bool = False) -> str:
    """``"Luong-Dot"`` → ``"luong-dot"``, ``"additive"`` → ``"bahdanau"``; ConfigError if unknown."""
    key = str(name).strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    valid = (("none",) if allow_none else ()) + ATTENTIONS
    if key not in valid:
        raise ConfigError(f"attention={name!r} is not valid. Valid values: {', '.join(valid)}.")
    return key


def make_attention(
    name: str, query_size: int, key_size: int, attn_size: int | None = None,
) -> Attention:
    """An attention module by name (:data:`ATTENTIONS`, or ``additive``/``dot``/``general``/
    ``concat``); ``attn_size`` (``d_a``) is used by ``bahdanau`` and ``luong-concat``."""
    kind = canonical_attention(name)
    if kind == "bahdanau":
        return AdditiveAttention(query_size, key_size, attn_size)
    if kind == "luong-dot":
        return DotAttention(query_size, key_size)
    if kind == "luong-general":
        return GeneralAttention(query_size, key_size)
    return ConcatAttention(query_size, key_size, attn_size)
