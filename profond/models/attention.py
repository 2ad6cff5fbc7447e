r"""A self-attention text classifier (course ch. 6): ``attn-classifier``.

The attention counterpart of ``rnn-classifier`` (:mod:`.rnn`), trained by the same
``text-classifier`` method on the same data::

    x_0 = E[tokens] + P                          token embeddings + positions (learned, or §7.3 sinusoidal)
    x   = x + MHA(LN(x), mask)                   Pre-Norm self-attention (def. 6.5, eqs. 6.13–6.18; eq. 7.10)
    x   = x + FFN(LN(x))                         FFN(x) = W_2 GELU(W_1 x), d_ff units (0: none)
    z   = pool(LN(x))                            [CLS] token, or mean / max over the valid positions
    logits = W z + b

* The padding mask (``lengths``) keeps every query off the padding keys, so appending
  padding changes nothing. ``attn_impl`` picks the computation of eq. 6.9
  (:data:`~profond.nn.attention.ATTN_IMPLS`); ``tiled``, ``linear`` and ``local`` take no
  padding mask, so a padded batch is run one group of equal lengths at a time, unpadded
  (the same result, more calls).
* :meth:`AttnClassifier.attention_maps` returns each layer's weights ``softmax(QKᵀ/√d_k)``
  (eq. 6.9) over one text, for ``profond attention``.
* :meth:`AttnClassifier.set_head_mask` switches heads off (head pruning): head ``i``'s
  output is multiplied by ``mask[i]`` before ``W^O`` (eq. 6.14).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, get_args

import torch
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Prob, Range, check_choice
from ..errors import ConfigError
from ..nn.attention import MultiHeadAttention, check_impl
from ..registry import MODELS
from .rnn import VocabSize, valid_mask

__all__ = ["ATTN_POOLS", "POSITIONS", "AttnBlock", "AttnClassifier", "sinusoidal_positions"]

#: how the classifier turns the ``(B, T, d)`` outputs into one vector
AttnPool = Literal["cls", "mean", "max"]
ATTN_POOLS: tuple[str, ...] = get_args(AttnPool)
#: position encodings
Positions = Literal["learned", "sinusoidal"]
POSITIONS: tuple[str, ...] = get_args(Positions)
#: impls of eq. 6.9 that take no padding mask (and no attention dropout)
_MASKLESS = ("tiled", "linear", "local")


def sinusoidal_positions(n: int, d: int) -> Tensor:
    """The ``(n, d)`` sinusoidal position encoding, course §7.3, eqs. 7.4–7.5:
    ``PE(pos, 2i) = sin(pos / 10000^{2i/d})``, ``PE(pos, 2i+1) = cos(pos / 10000^{2i/d})``."""
    pos = torch.arange(n, dtype=torch.float64).unsqueeze(1)  # (n, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)  # (⌈d/2⌉,)
    pe = torch.zeros(n, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)  # (7.4)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])  # (7.5)
    return pe.float()


class AttnBlock(nn.Module):
    """One Pre-Norm encoder block (course eq. 7.10): ``x + MHA(LN(x))`` then, when
    ``d_ff > 0``, ``x + FFN(LN(x))`` with ``FFN = Linear → GELU → Dropout → Linear``.

    ``head_mask`` ``(H,)`` (a buffer, ones by default) multiplies each head's output before
    ``W^O`` (eq. 6.14), through a forward pre-hook on ``attn.out_proj``: a 0 prunes the head.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, dropout: float = 0.0, bias: bool = True,
                 impl: str = "sdpa", window: int | None = None, kv_groups: int | None = None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = MultiHeadAttention(d_model, num_heads, kv_groups=kv_groups, bias=bias,
                                       dropout=0.0 if impl in _MASKLESS else dropout, impl=impl, window=window)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("head_mask", torch.ones(num_heads))
        self.attn.out_proj.register_forward_pre_hook(self._mask_heads)
        if d_ff > 0:
            self.ln2 = nn.LayerNorm(d_model)
            self.ffn = nn.Sequential(nn.Linear(d_model, d_ff, bias=bias), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(d_ff, d_model, bias=bias), nn.Dropout(dropout))
        else:
            self.ln2 = self.ffn = None

    def _mask_heads(self, _module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """``Concat(m_1 head_1, …, m_h head_h)``: the input of ``W^O`` with each head scaled by its mask."""
        (heads,) = args  # (B, N, H·d_h)
        b, n, _ = heads.shape
        h = self.head_mask.numel()
        scaled = heads.view(b, n, h, -1) * self.head_mask.to(heads.dtype)[:, None]  # (B, N, H, d_h)
        return (scaled.view(b, n, -1),)

    def forward(self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        """``x`` ``(B, N, d)``, ``mask`` ``(B, N)`` True at valid positions → ``(x, weights (B, H, N, N) or None)``."""
        a, weights = self.attn(self.ln1(x), mask=mask, need_weights=need_weights)  # self-attention (6.16)–(6.18)
        x = x + self.drop(a)  # Pre-Norm residual  (7.10)
        if self.ffn is not None:
            x = x + self.ffn(self.ln2(x))  # (7.10)
        return x, weights


class AttnClassifier(nn.Module):
    r"""Embedding + positions → ``num_layers`` Pre-Norm self-attention blocks → LN → pooling → head.

    ``forward(tokens (B, T), lengths (B,) | None) -> logits (B, num_classes)``; without
    ``lengths`` every position counts. ``pool="cls"`` prepends a learned ``[CLS]`` token (at
    position 0) and classifies its output; ``"mean"`` / ``"max"`` pool the valid positions.
    Modules: ``embedding``, ``pos_embedding`` (learned only), ``cls`` (cls only), ``blocks``,
    ``norm``, ``head``.
    """

    def __init__(
        self, vocab_size: int, num_classes: int = 2, d_model: int = 256, num_heads: int = 4,
        num_layers: int = 1, d_ff: int | None = None, dropout: float = 0.0, pool: str = "mean",
        pos: str = "learned", max_len: int = 512, attn_impl: str = "sdpa", window: int | None = None,
        kv_groups: int | None = None, bias: bool = True, padding_idx: int | None = 0,
    ) -> None:
        super().__init__()
        self.pool = check_choice(pool, ATTN_POOLS, "pool")
        self.pos = check_choice(pos, POSITIONS, "pos")
        self.attn_impl = check_impl(attn_impl)
        if attn_impl == "local" and window is None:
            raise ConfigError("model.attn_impl=local needs model.window (keys each query sees, e.g. 16).")
        if d_model % num_heads:
            raise ConfigError(f"model.d_model={d_model} must be a multiple of model.num_heads={num_heads}.")
        d_ff = 2 * d_model if d_ff is None else d_ff
        self.d_model, self.num_heads, self.max_len = d_model, num_heads, max_len
        n_pos = max_len + (self.pool == "cls")
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        if self.pos == "learned":
            self.pos_embedding = nn.Embedding(n_pos, d_model)
        else:
            self.register_buffer("pos_table", sinusoidal_positions(n_pos, d_model), persistent=False)
        if self.pool == "cls":
            self.cls = nn.Parameter(torch.randn(d_model))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            AttnBlock(d_model, num_heads, d_ff, dropout=dropout, bias=bias, impl=attn_impl, window=window,
                      kv_groups=kv_groups) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)

    # -- head pruning -------------------------------------------------------------------------
    def set_head_mask(self, layer: int, mask: Tensor | list[float]) -> None:
        """Multiply the outputs of layer ``layer``'s heads by ``mask`` ``(H,)`` (0 = pruned, 1 = kept)."""
        if not 0 <= layer < len(self.blocks):
            raise ConfigError(f"layer {layer}: the model has {len(self.blocks)} attention layer(s), "
                              f"0 to {len(self.blocks) - 1}.")
        buf = self.blocks[layer].head_mask
        mask = torch.as_tensor(mask, dtype=buf.dtype, device=buf.device)
        if mask.shape != buf.shape:
            raise ConfigError(f"head mask of shape {tuple(mask.shape)}: layer {layer} has {buf.numel()} heads, "
                              f"pass ({buf.numel()},).")
        buf.copy_(mask)

    # -- forward ------------------------------------------------------------------------------
    def _embed(self, tokens: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``x_0`` ``(B, N, d)`` (``N = T``, or ``T + 1`` with ``[CLS]`` first) and the ``(B, N)``
        mask of valid positions (None when every position is valid)."""
        b, t = tokens.shape
        if t > self.max_len:
            raise ConfigError(f"a text of {t} tokens is longer than model.max_len={self.max_len}: raise "
                              f"model.max_len or lower method.max_len.")
        x = self.embedding(tokens)  # (B, T, d)
        mask = None if lengths is None else valid_mask(lengths, b, t, tokens.device)  # (B, T)
        if self.pool == "cls":
            x = torch.cat([self.cls.expand(b, 1, -1).to(x.dtype), x], dim=1)  # (B, T + 1, d)
            if mask is not None:
                mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        n = x.shape[1]
        p = self.pos_embedding.weight[:n] if self.pos == "learned" else self.pos_table[:n]  # (N, d)
        return self.drop(x + p), mask

    def _pooled(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """``(B, N, d)`` → ``(B, d)``: the ``[CLS]`` output, or mean / max over the valid positions."""
        x = self.norm(x)
        if self.pool == "cls":
            return x[:, 0]
        if mask is None:
            return x.mean(1) if self.pool == "mean" else x.amax(1)
        m = mask.unsqueeze(-1)  # (B, N, 1)
        if self.pool == "mean":
            return (x * m).sum(1) / m.sum(1).clamp_min(1)
        return x.masked_fill(~m, float("-inf")).amax(1)

    def _encode_masked(self, tokens: Tensor, lengths: Tensor | None) -> Tensor:
        x, mask = self._embed(tokens, lengths)
        if mask is not None and bool(mask.all()):
            mask = None  # no padding: the unmasked (fastest) path of every impl
        for block in self.blocks:
            x, _ = block(x, mask)
        return self._pooled(x, mask)

    def encode(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled representation ``(B, d_model)``, before the head.

        With an impl that takes no mask (tiled, linear, local) and padding in the batch, each
        group of texts of equal length is encoded alone without its padding.
        """
        if lengths is None or self.attn_impl not in _MASKLESS:
            return self._encode_masked(tokens, lengths)
        lengths = torch.as_tensor(lengths, device=tokens.device)
        out = tokens.new_empty(tokens.shape[0], self.d_model, dtype=self.head.weight.dtype)
        for n in lengths.unique().tolist():
            idx = (lengths == n).nonzero().squeeze(1)
            out[idx] = self._encode_masked(tokens[idx, : max(int(n), 1)], None).to(out.dtype)
        return out

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.encode(tokens, lengths))

    # -- attention maps -----------------------------------------------------------------------
    @torch.no_grad()
    def attention_maps(self, tokens: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """``{"layer l": weights (H, N, N)}``, the weights of eq. 6.9 of every layer over one text.

        ``tokens`` ``(1, T)`` (or ``(T,)``); ``N`` = the valid tokens (``lengths[0]``, default
        ``T``), plus the ``[CLS]`` token first with ``pool="cls"``. Each row sums to 1; the
        weights are those of the softmax even for pruned heads. ``sdpa``, ``tiled`` and
        ``local`` compute them by the explicit path (same outputs); ``linear`` has none.
        """
        if self.attn_impl == "linear":
            raise ConfigError("this model uses linear attention (model.attn_impl=linear, eq. 6.21): it computes "
                              "no softmax weights, so it has no attention maps.")
        tokens = tokens.reshape(1, -1)
        n = tokens.shape[1] if lengths is None else int(torch.as_tensor(lengths).reshape(-1)[0])
        tokens = tokens[:, : max(n, 1)]
        was_training = self.training
        self.eval()
        try:
            x, _ = self._embed(tokens, None)
            maps = {}
            for i, block in enumerate(self.blocks):
                x, w = block(x, None, need_weights=True)
                maps[f"layer {i}"] = w[0].float().cpu()  # (H, N, N)
        finally:
            self.train(was_training)
        return maps


@MODELS.register("attn-classifier", tags=("text", "attention", "method:text-classifier"),
                 help="embedding + positions + Pre-Norm self-attention blocks + pooling + linear head (ch. 6)")
def attn_classifier(
    vocab_size: VocabSize = 1000, num_classes: Annotated[int, Range(2)] = 2, d_model: PosInt = 256,
    num_heads: PosInt = 4, num_layers: PosInt = 1,
    d_ff: Annotated[NonNegInt | None, "None: 2·d_model; 0: no FFN, attention only"] = None,
    dropout: Prob = 0.0, pool: AttnPool = "mean", pos: Positions = "learned", max_len: PosInt = 512,
    attn_impl: str = "sdpa", window: PosInt | None = None, kv_groups: PosInt | None = None,
    bias: bool = True, padding_idx: NonNegInt = 0,
) -> nn.Module:
    """Text classifier ``tokens (B, T), lengths (B,) -> logits (B, num_classes)`` with self-attention.

    ``d_model`` split into ``num_heads`` heads (eqs. 6.13–6.14); ``num_layers`` Pre-Norm
    blocks; ``d_ff``: FFN width (default ``2·d_model``, 0 = attention only); ``pool``: cls
    (a prepended [CLS] token), mean or max over the valid positions; ``pos``: learned or
    sinusoidal (§7.3); ``max_len``: longest text read; ``attn_impl``: profond, sdpa, tiled,
    linear, local (eq. 6.9 computed by :func:`~profond.nn.attention.attend`); ``window``: keys
    per query for local; ``kv_groups``: grouped-query attention (eq. 6.22, 1 = multi-query);
    ``bias``: biases of the attention and FFN projections. Attention parameters per layer:
    ``4·d_model²`` without biases (remark 6.10).
    """
    return AttnClassifier(vocab_size, num_classes, d_model, num_heads, num_layers, d_ff, dropout, pool, pos,
                          max_len, attn_impl, window, kv_groups, bias, padding_idx)
