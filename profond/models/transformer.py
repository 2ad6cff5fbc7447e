r"""Transformers (course ch. 7): encoder, decoder, encoder-decoder, GPT, BERT, ViT.

One body, :class:`TransformerBody`, shared by every model::

    x_0 = E[tokens] (+ [CLS]) + P + T[types]         embeddings, positions (§7.3), segments (BERT)
    x_0 = LN_emb(x_0)                                 BERT only (``embed_norm``)
    x_l = Block_l(x_{l-1})                            Post- (7.9) or Pre-Norm (7.10) blocks
    h   = LN_f(x_L)                                   Pre-Norm only (``final_norm``)

* ``transformer-classifier`` — encoder + [CLS] (a learned vector read first) or mean pooling
  + linear head (§7.6 fine-tuning), for the ``text-classifier`` method.
* ``gpt`` (§7.7, eq. 7.14) — causal Pre-Norm decoder, ``p(x_t | x_{<t}) = softmax(W_E h_{t-1})``
  with the head tied to the token embedding; returns a :class:`LMState` (one
  :class:`~profond.nn.attention.KVCache` per layer) so that generation projects only the new
  token (§6.10). For the ``char-lm`` method.
* ``bert`` (§7.6, def. 7.10, eq. 7.13) — Post-Norm encoder with embedding LayerNorm and segment
  embeddings, MLM head ``W_E^T GELU(W_t h) + b`` (tied); for the ``mlm`` method.
* ``transformer-seq2seq`` (§7.4) — encoder + causal decoder with cross-attention (def. 6.6);
  shares the greedy / beam decoders of :mod:`.seq2seq`; for the ``seq2seq`` method.
* ``vit`` (§7.5, def. 7.8, eq. 7.12) — ``p×p`` patches linearly embedded (a stride-``p`` conv),
  [CLS], learned positions, encoder, head on [CLS]; :meth:`ViT.attention_rollout`.

Initialisation: every ``Linear`` / ``Embedding`` weight ``N(0, 0.02²)``, biases 0, and the
residual output projections (``W^O``, ``W_2``) ``N(0, (0.02/√(2L))²)`` (GPT-2). With the
sinusoidal table, whose entries are of size 1, the token embeddings are ``N(0, 1/d)`` read as
``E·√d`` (Vaswani et al.), so that neither drowns the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Prob, Range, check_choice
from ..errors import ConfigError
from ..nn.attention import ATTN_IMPLS, KVCache, check_impl
from ..nn.layers import InShape
from ..nn.positions import RotaryEmbedding, alibi_bias, sinusoidal_positions
from ..nn.transformer import Block, FFNActivation, NormKind, make_norm
from ..registry import MODELS
from .rnn import VocabSize, valid_mask
from .seq2seq import Memory, Seq2Seq, Seq2SeqOutput

__all__ = ["BERT", "GPT", "LMState", "POSITION_KINDS", "TransformerBody", "TransformerClassifier",
           "TransformerSeq2Seq", "ViT", "init_transformer"]

PositionKind = Literal["learned", "sinusoidal", "rope", "alibi", "none"]
POSITION_KINDS: tuple[str, ...] = get_args(PositionKind)
Pool = Literal["cls", "mean"]
AttnImpl = Literal[ATTN_IMPLS]  # type: ignore[valid-type]
#: standard deviation of the weights at initialisation (GPT-2, BERT)
INIT_STD = 0.02


def init_transformer(model: nn.Module, num_layers: int) -> nn.Module:
    """GPT-2's initialisation: ``N(0, 0.02²)`` weights, zero biases, ``LN`` to (1, 0), and
    ``N(0, (0.02/√(2L))²)`` for the projections that write into the residual stream."""
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            std = INIT_STD / math.sqrt(2 * num_layers) if name.endswith(("out_proj", "fc2")) else INIT_STD
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
    for m in model.modules():
        if isinstance(m, TransformerBody) and m.tok_embedding is not None and m.pos == "sinusoidal":
            # Vaswani et al. §3.4: embeddings N(0, 1/d) read as E·√d, the scale of the fixed table
            nn.init.normal_(m.tok_embedding.weight, 0.0, m.d_model ** -0.5)
    for m in model.modules():
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            with torch.no_grad():
                m.weight[m.padding_idx].zero_()
    return model


class TransformerBody(nn.Module):
    r"""Embeddings + ``num_layers`` :class:`~profond.nn.transformer.Block` s (+ final norm).

    Modules: ``tok_embedding`` (``vocab_size`` > 0), ``cls`` (``cls_token``), ``pos_embedding``
    (learned) or the ``pos_table`` buffer (sinusoidal), ``type_embedding`` (``type_vocab`` > 0),
    ``embed_norm``, ``blocks``, ``final_norm`` (default: with Pre-Norm). ``max_len``: the longest
    input (tokens, [CLS] not counted, cached tokens counted).
    """

    def __init__(
        self, vocab_size: int, d_model: int = 128, num_heads: int = 4, num_layers: int = 2,
        d_ff: int | None = None, *, max_len: int = 256, pos: str = "learned", norm_first: bool = True,
        activation: str = "gelu", norm: str = "layer", norm_eps: float = 1e-5, dropout: float = 0.0,
        attn_dropout: float = 0.0, bias: bool = True, causal: bool = False, cross: bool = False,
        type_vocab: int = 0, embed_norm: bool = False, final_norm: bool | None = None,
        cls_token: bool = False, impl: str = "sdpa", kv_groups: int | None = None, moe_experts: int = 0,
        moe_top_k: int = 2, padding_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.pos = check_choice(pos, POSITION_KINDS, "pos")
        check_impl(impl)
        if d_model % num_heads:
            raise ConfigError(f"model.d_model={d_model} must be a multiple of model.num_heads={num_heads}.")
        if pos == "rope" and (d_model // num_heads) % 2:
            raise ConfigError(f"pos=rope rotates pairs: the head width d_model/num_heads = {d_model // num_heads} "
                              "must be even.")
        if pos == "alibi" and impl not in ("profond", "sdpa"):
            raise ConfigError(f"pos=alibi adds a bias to the scores: use attn_impl=sdpa or profond, not {impl}.")
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.d_model, self.num_heads, self.max_len, self.causal = d_model, num_heads, max_len, causal
        self.norm_first, self.cls_token = norm_first, cls_token
        #: √d with the sinusoidal table (its entries are of size 1; Vaswani et al. §3.4), else 1
        self.embed_scale = math.sqrt(d_model) if pos == "sinusoidal" else 1.0
        self.tok_embedding = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx) if vocab_size else None
        self.cls = nn.Parameter(torch.zeros(d_model)) if cls_token else None
        n_pos = max_len + int(cls_token)
        self.pos_embedding = nn.Embedding(n_pos, d_model) if pos == "learned" else None
        if pos == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_positions(n_pos, d_model), persistent=False)
        self.type_embedding = nn.Embedding(type_vocab, d_model) if type_vocab else None
        self.embed_norm = make_norm(norm, d_model, norm_eps) if embed_norm else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, d_ff, norm_first=norm_first, activation=activation, norm=norm,
                  norm_eps=norm_eps, dropout=dropout, attn_dropout=attn_dropout, bias=bias, cross=cross,
                  impl=impl, kv_groups=kv_groups, moe_experts=moe_experts, moe_top_k=moe_top_k)
            for _ in range(num_layers))
        if pos == "rope":
            rope = RotaryEmbedding(d_model // num_heads)
            for b in self.blocks:
                b.attn.rope = rope
        final_norm = norm_first if final_norm is None else final_norm
        self.final_norm = make_norm(norm, d_model, norm_eps) if final_norm else None

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]

    def embed(self, tokens: Tensor | None, *, embeds: Tensor | None = None, offset: int = 0,
              token_types: Tensor | None = None) -> Tensor:
        """``x_0`` ``(B, N, d)``: token (or given) embeddings, [CLS] first, + positions + segments."""
        x = self.tok_embedding(tokens) * self.embed_scale if embeds is None else embeds  # (B, T, d)
        b, t, _ = x.shape
        past = offset - int(self.cls_token) if offset else 0  # cached tokens, [CLS] not counted
        if past + t > self.max_len:
            raise ConfigError(f"a context of {past + t} tokens is longer than the model's "
                              f"model.max_len={self.max_len}: shorten the input (or train with a larger max_len).")
        if self.cls is not None and offset == 0:
            x = torch.cat([self.cls.expand(b, 1, -1).to(x.dtype), x], dim=1)  # (B, 1 + T, d)
        n = x.shape[1]
        start = offset  # a cache already holds [CLS] at position 0
        if self.pos_embedding is not None:
            x = x + self.pos_embedding.weight[start: start + n]  # learned P
        elif self.pos == "sinusoidal":
            x = x + self.pos_table[start: start + n].to(x.dtype)  # (7.4)-(7.5)
        if self.type_embedding is not None:
            if token_types is None:
                x = x + self.type_embedding.weight[0]
            else:
                if self.cls is not None and offset == 0:
                    token_types = F.pad(token_types, (1, 0))
                x = x + self.type_embedding(token_types)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        return self.drop(x)

    def attention_mask(self, lengths: Tensor | None, b: int, n: int, n_k: int, device: torch.device
                       ) -> Tensor | None:
        """The mask every block shares: padding ``(B, Nk)`` (True = valid key; [CLS] valid), and
        for ALiBi the additive ``(B|1, H, N, Nk)`` bias with ``-inf`` on the padding."""
        mask = None
        if lengths is not None:
            t = n - int(self.cls is not None and n_k == n)
            mask = valid_mask(torch.as_tensor(lengths, device=device), b, t, device)  # (B, T)
            if n_k == n and self.cls is not None:
                mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
            if bool(mask.all()):
                mask = None
        if self.pos == "alibi":
            bias = alibi_bias(self.num_heads, n, n_k, device)[None]  # (1, H, N, Nk)
            if mask is not None:
                bias = bias.masked_fill(~mask[:, None, None, :], float("-inf"))
            mask = bias
        return mask

    def forward(self, tokens: Tensor | None = None, lengths: Tensor | None = None, *,
                embeds: Tensor | None = None, token_types: Tensor | None = None,
                caches: list[KVCache] | None = None, memory: Tensor | None = None,
                memory_mask: Tensor | None = None, need_weights: bool = False
                ) -> tuple[Tensor, list[Tensor | None], list[Tensor | None]]:
        """``tokens`` ``(B, T)`` (or ``embeds`` ``(B, T, d)``), valid ``lengths`` ``(B,)`` →
        ``(h (B, N, d), self-attention weights per layer, cross weights per layer)``; ``N = T``
        (+1 with [CLS]). ``caches``: one KV cache per layer, extended by these tokens."""
        offset = 0 if not caches else caches[0].length
        if caches and lengths is not None:
            raise ConfigError("a KV cache reads unpadded sequences: pass lengths=None.")
        x = self.embed(tokens, embeds=embeds, offset=offset, token_types=token_types)
        b, n, _ = x.shape
        mask = self.attention_mask(lengths, b, n, offset + n, x.device)
        weights, cross = [], []
        for i, block in enumerate(self.blocks):
            x, w, cw = block(x, mask=mask, causal=self.causal, cache=caches[i] if caches else None,
                             memory=memory, memory_mask=memory_mask, need_weights=need_weights)
            weights.append(w)
            cross.append(cw)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, weights, cross

    def set_head_mask(self, layer: int, mask: Tensor | list[float]) -> None:
        """Multiply the outputs of layer ``layer``'s heads by ``mask`` ``(H,)`` (0 = pruned)."""
        if not 0 <= layer < len(self.blocks):
            raise ConfigError(f"layer {layer}: the model has {len(self.blocks)} layer(s), 0 to {len(self.blocks) - 1}.")
        self.blocks[layer].set_head_mask(mask)

    @torch.no_grad()
    def attention_maps(self, tokens: Tensor | None = None, *, embeds: Tensor | None = None) -> dict[str, Tensor]:
        """``{"layer l": (H, N, N)}``: softmax weights (eq. 6.9) of every layer over one input."""
        was = self.training
        self.eval()
        try:
            _, weights, _ = self(tokens, embeds=embeds, need_weights=True)
        finally:
            self.train(was)
        return {f"layer {i}": w[0].float().cpu() for i, w in enumerate(weights)}


# ----------------------------------------------------------------------------------------
# encoder classifier (§7.6 fine-tuning)


class TransformerClassifier(nn.Module):
    """``forward(tokens (B, T), lengths (B,) | None) -> logits (B, num_classes)``: body + pooling
    ([CLS] output, or the mean of the valid positions) + ``head``."""

    def __init__(self, vocab_size: int, num_classes: int, *, pool: str = "cls", cls_id: int | None = None,
                 **body: Any) -> None:
        super().__init__()
        self.pool = check_choice(pool, get_args(Pool), "pool")
        if cls_id is not None and not 0 <= cls_id < vocab_size:
            raise ConfigError(f"model.cls_id={cls_id} is not a token id (0 to {vocab_size - 1}).")
        self.cls_id = cls_id if pool == "cls" else None
        self.body = TransformerBody(vocab_size, cls_token=pool == "cls" and cls_id is None, **body)
        self.head = nn.Linear(self.body.d_model, num_classes)
        self.max_len = self.body.max_len
        init_transformer(self, len(self.body.blocks))

    def _with_cls(self, tokens: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Prepend the ``cls_id`` token (BERT's [CLS], a vocabulary token) when one is set."""
        if self.cls_id is None:
            return tokens, lengths
        col = tokens.new_full((tokens.shape[0], 1), self.cls_id)
        return torch.cat([col, tokens], 1), None if lengths is None else torch.as_tensor(lengths) + 1

    def encode(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        tokens, lengths = self._with_cls(tokens, lengths)
        h, _, _ = self.body(tokens, lengths)  # (B, N, d)
        if self.pool == "cls":
            return h[:, 0]
        if lengths is None:
            return h.mean(1)
        m = valid_mask(torch.as_tensor(lengths, device=h.device), h.shape[0], h.shape[1], h.device)
        m = m.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp_min(1)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.encode(tokens, lengths))

    def set_head_mask(self, layer: int, mask: Tensor | list[float]) -> None:
        self.body.set_head_mask(layer, mask)

    def attention_maps(self, tokens: Tensor, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """``{"layer l": (H, N, N)}`` over one text (``[CLS]`` first with ``pool="cls"``)."""
        tokens = tokens.reshape(1, -1)
        n = tokens.shape[1] if lengths is None else int(torch.as_tensor(lengths).reshape(-1)[0])
        tokens, _ = self._with_cls(tokens[:, : max(n, 1)], None)
        return self.body.attention_maps(tokens)


# ----------------------------------------------------------------------------------------
# GPT (§7.7)


@dataclass
class LMState:
    """What a :class:`GPT` carries from one call to the next while generating: the KV cache of
    every layer and the tokens read so far ``(B, N)`` (to start again when the cache is full)."""

    caches: list[KVCache]
    tokens: Tensor
    refills: int = field(default=0)

    @property
    def length(self) -> int:
        return self.caches[0].length if self.caches else 0


class GPT(nn.Module):
    r"""Causal Pre-Norm decoder LM (§7.7, eq. 7.14): ``forward(idx (B, T), state) -> (logits
    (B, T, V), state)``.

    ``state`` None: a fresh sequence; in eval mode (or with ``use_cache``) the returned
    :class:`LMState` holds the KV caches, and ``model(next (B, 1), state)`` continues it by
    projecting the new token only. When the cache would exceed ``max_len``, the model reads the
    last ``max_len // 2`` tokens again (a sliding context) and continues from there.
    ``stateful = False``: a training window never carries state to the next one.
    """

    stateful = False

    def __init__(self, vocab_size: int, *, tie_weights: bool = True, **body: Any) -> None:
        super().__init__()
        self.body = TransformerBody(vocab_size, causal=True, **body)
        self.lm_head = nn.Linear(self.body.d_model, vocab_size, bias=False)
        init_transformer(self, len(self.body.blocks))
        if tie_weights:
            self.lm_head.weight = self.body.tok_embedding.weight  # W_E shared (weight tying)
        self.max_len = self.body.max_len

    def forward(self, idx: Tensor, state: LMState | None = None, *, use_cache: bool | None = None
                ) -> tuple[Tensor, LMState | None]:
        use_cache = (not self.training or state is not None) if use_cache is None else use_cache
        t = idx.shape[1]
        if state is not None and state.length + t > self.max_len:  # full: slide the context
            keep = state.tokens[:, -(self.max_len // 2):]
            if keep.shape[1] + t > self.max_len:
                raise ConfigError(f"{t} new tokens do not fit a context of {self.max_len}.")
            logits, new = self(torch.cat([keep, idx], 1), None, use_cache=True)
            new.refills = state.refills + 1
            return logits[:, -t:], new
        caches = (state.caches if state is not None else self.body.new_caches()) if use_cache else None
        h, _, _ = self.body(idx, caches=caches)  # (B, T, d)
        logits = self.lm_head(h)  # (B, T, V)  (7.14)
        if not use_cache:
            return logits, None
        seen = idx if state is None else torch.cat([state.tokens, idx], 1)
        return logits, LMState(caches, seen[:, -self.max_len:], 0 if state is None else state.refills)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameters ``N`` (Kaplan et al.'s count for eq. 7.16: without the embeddings)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.body.tok_embedding.weight.numel()
            if self.body.pos_embedding is not None:
                n -= self.body.pos_embedding.weight.numel()
        return n


# ----------------------------------------------------------------------------------------
# BERT (§7.6)


class BERT(nn.Module):
    r"""Post-Norm encoder with an MLM head (def. 7.10, eq. 7.13): ``forward(tokens (B, T),
    lengths, token_types) -> logits (B, N, V)``, ``N = T`` (+1 with ``cls_token``).

    MLM head (BERT's): ``mlm_decoder(LN(GELU(mlm_transform h)))`` with ``mlm_decoder.weight``
    tied to the token embedding and its own bias.
    """

    def __init__(self, vocab_size: int, *, tie_weights: bool = True, **body: Any) -> None:
        super().__init__()
        body.setdefault("norm_first", False)
        body.setdefault("embed_norm", True)
        body.setdefault("type_vocab", 2)
        body.setdefault("norm_eps", 1e-12)
        self.body = TransformerBody(vocab_size, **body)
        d = self.body.d_model
        self.mlm_transform = nn.Linear(d, d)
        self.mlm_norm = nn.LayerNorm(d, eps=body["norm_eps"])
        self.mlm_decoder = nn.Linear(d, vocab_size)
        init_transformer(self, len(self.body.blocks))
        if tie_weights:
            self.mlm_decoder.weight = self.body.tok_embedding.weight
        self.max_len = self.body.max_len

    def forward(self, tokens: Tensor, lengths: Tensor | None = None, token_types: Tensor | None = None) -> Tensor:
        h, _, _ = self.body(tokens, lengths, token_types=token_types)  # (B, N, d)
        return self.mlm_decoder(self.mlm_norm(F.gelu(self.mlm_transform(h))))  # (7.13)


# ----------------------------------------------------------------------------------------
# encoder-decoder (§7.4)


class TransformerSeq2Seq(nn.Module):
    r"""Encoder + causal decoder with cross-attention (§7.4): ``forward(src (B, S), src_lengths,
    tgt_in (B, T)) -> Seq2SeqOutput(logits (B, T, V), attention (B, T, S))``, the attention
    being the last layer's cross-attention averaged over its heads.

    Modules: ``encoder``, ``decoder`` (:class:`TransformerBody`), ``out``. The greedy and beam
    decoders are those of :class:`~.seq2seq.Seq2Seq`; the decoder state is the prefix read so
    far ``(B, t)`` (each step reads it again: outputs are short).
    """

    supports_scheduled_sampling = False

    def __init__(self, src_vocab: int, tgt_vocab: int, *, num_layers: int = 2, dec_layers: int | None = None,
                 padding_idx: int = 0, **body: Any) -> None:
        super().__init__()
        self.padding_idx = padding_idx
        self.encoder = TransformerBody(src_vocab, num_layers=num_layers, padding_idx=padding_idx, **body)
        self.decoder = TransformerBody(tgt_vocab, num_layers=dec_layers or num_layers, causal=True, cross=True,
                                       padding_idx=padding_idx, **body)
        self.out = nn.Linear(self.encoder.d_model, tgt_vocab)
        init_transformer(self, num_layers + (dec_layers or num_layers))

    def encode(self, src: Tensor, src_lengths: Tensor | None = None) -> tuple[Memory, Tensor]:
        b, s = src.shape
        h, _, _ = self.encoder(src, src_lengths)  # (B, S, d)
        mask = valid_mask(None if src_lengths is None else torch.as_tensor(src_lengths, device=src.device),
                          b, s, src.device)
        return Memory(h, mask, None), src.new_zeros(b, 0)

    def _decode(self, prefix: Tensor, memory: Memory, need_weights: bool) -> tuple[Tensor, Tensor | None]:
        h, _, cross = self.decoder(prefix, memory=memory.keys, memory_mask=memory.mask, need_weights=need_weights)
        attn = cross[-1].mean(1) if need_weights else None  # (B, T, S)
        return self.out(h), attn

    def forward(self, src: Tensor, src_lengths: Tensor | None, tgt_in: Tensor, teacher_forcing: float = 1.0,
                generator: torch.Generator | None = None) -> Seq2SeqOutput:
        if teacher_forcing != 1.0:
            raise ConfigError("transformer-seq2seq trains with plain teacher forcing only: set "
                              "method.teacher_forcing_start=1 and method.teacher_forcing_end=1.")
        memory, _ = self.encode(src, src_lengths)
        logits, attn = self._decode(tgt_in, memory, need_weights=not self.training)
        return Seq2SeqOutput(logits, attn)

    def step(self, y_prev: Tensor, memory: Memory, state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One decoding step: ``(logits (B, V), prefix (B, t+1), cross-attention (B, S))``."""
        prefix = torch.cat([state, y_prev[:, None]], 1)
        logits, attn = self._decode(prefix, memory, need_weights=True)
        return logits[:, -1], prefix, attn[:, -1]

    @staticmethod
    def index_state(state: Tensor, idx: Tensor) -> Tensor:
        return state.index_select(0, idx)

    greedy_decode = Seq2Seq.greedy_decode
    beam_search = Seq2Seq.beam_search
    _settled = staticmethod(Seq2Seq._settled)
    log_prob = Seq2Seq.log_prob


# ----------------------------------------------------------------------------------------
# Vision Transformer (§7.5)


class ViT(nn.Module):
    r"""``forward(x (B, C, H, W)) -> logits (B, num_classes)`` (§7.5, def. 7.8, eq. 7.12)::

        z_0 = [x_cls; x_p^1 E; …; x_p^N E] + E_pos      N = HW / p² patches  (7.12)
        z_L = encoder(z_0);   y = head(LN(z_L^0))

    ``patch_embed`` is a ``p × p`` conv of stride ``p``: the same linear map ``E`` on every
    flattened patch. :meth:`attention_rollout` gives the [CLS] token's attention over the patches.
    """

    def __init__(self, in_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, *, patch: int = 7,
                 **body: Any) -> None:
        super().__init__()
        c, h, w = in_shape
        if h % patch or w % patch:
            raise ConfigError(f"model.patch={patch} must divide the image size {h}×{w}.")
        self.grid = (h // patch, w // patch)
        d = body.get("d_model", 128)
        self.patch_embed = nn.Conv2d(c, d, patch, stride=patch)  # x_p E  (7.12)
        body.setdefault("pos", "learned")
        self.body = TransformerBody(0, cls_token=True, max_len=self.grid[0] * self.grid[1], **body)
        self.head = nn.Linear(d, num_classes)
        init_transformer(self, len(self.body.blocks))
        nn.init.normal_(self.body.cls, 0.0, INIT_STD)

    def patches(self, x: Tensor) -> Tensor:
        return self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, d)

    def forward(self, x: Tensor) -> Tensor:
        h, _, _ = self.body(embeds=self.patches(x))  # (B, 1 + N, d)
        return self.head(h[:, 0])

    @torch.no_grad()
    def attention_rollout(self, x: Tensor) -> Tensor:
        """Attention rollout (Abnar & Zuidema 2020): ``R = Π_l norm(½ Ā_l + ½ I)`` with ``Ā_l`` the
        head-averaged weights of layer ``l``; returns the [CLS] row over the patches, ``(B, h, w)``
        (rows of ``R`` sum to 1, so each map sums to at most 1)."""
        was = self.training
        self.eval()
        try:
            _, weights, _ = self.body(embeds=self.patches(x), need_weights=True)
        finally:
            self.train(was)
        n = weights[0].shape[-1]
        eye = torch.eye(n, device=x.device)
        r = eye.expand(x.shape[0], n, n)
        for w in weights:
            a = 0.5 * w.float().mean(1) + 0.5 * eye  # (B, N, N)
            r = (a / a.sum(-1, keepdim=True)) @ r
        return r[:, 0, 1:].reshape(x.shape[0], *self.grid)


# ----------------------------------------------------------------------------------------
# builders


def _body_kw(d_model: int, num_heads: int, num_layers: int, d_ff: int | None, max_len: int, pos: str,
             norm_first: bool, activation: str, norm: str, norm_eps: float, dropout: float, attn_dropout: float,
             bias: bool, attn_impl: str, kv_groups: int | None, moe_experts: int, moe_top_k: int) -> dict[str, Any]:
    return {"d_model": d_model, "num_heads": num_heads, "num_layers": num_layers, "d_ff": d_ff,
            "max_len": max_len, "pos": pos, "norm_first": norm_first, "activation": activation, "norm": norm,
            "norm_eps": norm_eps, "dropout": dropout, "attn_dropout": attn_dropout, "bias": bias,
            "impl": attn_impl, "kv_groups": kv_groups, "moe_experts": moe_experts, "moe_top_k": moe_top_k}


DFF = Annotated[NonNegInt | None, "None: 4·d_model"]
Eps = Annotated[float, Range(0.0, 1.0, lo_open=True)]
Experts = Annotated[int, Range(0, 64), "0: a plain FFN; E >= 2: mixture of E experts"]
_BODY_DOC = (
    "``d_model`` width, ``num_heads`` heads (eq. 6.13), ``num_layers`` blocks, ``d_ff`` FFN width (eq. 7.8, "
    "default 4·d_model), ``max_len`` longest input, ``pos`` learned / sinusoidal (§7.3) / rope / alibi / none, "
    "``norm_first`` Pre-Norm (7.10) or Post-Norm (7.9), ``activation`` relu / gelu / gelu_tanh / swiglu, "
    "``norm`` layer / rms, ``attn_impl`` eq. 6.9's computation, ``kv_groups`` grouped-query attention, "
    "``moe_experts`` / ``moe_top_k`` a mixture-of-experts FFN (§7.10).")


@MODELS.register("transformer-classifier", tags=("text", "attention", "transformer", "method:text-classifier"),
                 help="Transformer encoder + [CLS] or mean pooling + linear head (§7.2, §7.6)")
def transformer_classifier(
    vocab_size: VocabSize = 1000, num_classes: Annotated[int, Range(2)] = 2, d_model: PosInt = 128,
    num_heads: PosInt = 4, num_layers: PosInt = 2, d_ff: DFF = None, max_len: PosInt = 256,
    pool: Pool = "cls", pos: PositionKind = "learned", norm_first: bool = True,
    activation: FFNActivation = "gelu", norm: NormKind = "layer", norm_eps: Eps = 1e-5, dropout: Prob = 0.1,
    attn_dropout: Prob = 0.0, bias: bool = True, attn_impl: AttnImpl = "sdpa", kv_groups: PosInt | None = None,
    moe_experts: Experts = 0, moe_top_k: PosInt = 2, embed_norm: bool = False,
    type_vocab: Annotated[int, Range(0, 16)] = 0, cls_id: Annotated[NonNegInt | None, "None: a learned [CLS] vector"] = None,
    padding_idx: NonNegInt = 0,
) -> nn.Module:
    """Text classifier ``tokens (B, T), lengths (B,) -> logits (B, num_classes)``. ``pool``: cls (a
    learned [CLS] vector read first) or mean; ``embed_norm`` / ``type_vocab``: BERT's embedding
    LayerNorm and segment table, to fine-tune a ``bert`` run (``model.init_from``); ``cls_id``: read
    this token id first as [CLS] (a ``bert`` run's ``<bos>``, id 2) instead of a learned vector."""
    return TransformerClassifier(
        vocab_size, num_classes, pool=pool, cls_id=cls_id, embed_norm=embed_norm, type_vocab=type_vocab, padding_idx=padding_idx,
        **_body_kw(d_model, num_heads, num_layers, d_ff, max_len, pos, norm_first, activation, norm, norm_eps,
                   dropout, attn_dropout, bias, attn_impl, kv_groups, moe_experts, moe_top_k))


@MODELS.register("gpt", tags=("text", "transformer", "generative", "method:char-lm"),
                 help="GPT: causal Pre-Norm Transformer LM with KV-cache generation (§7.7)")
def gpt(
    vocab_size: VocabSize = 128, d_model: PosInt = 128, num_heads: PosInt = 4, num_layers: PosInt = 4,
    d_ff: DFF = None, max_len: PosInt = 256, pos: PositionKind = "learned", activation: FFNActivation = "gelu_tanh",
    norm: NormKind = "layer", norm_eps: Eps = 1e-5, dropout: Prob = 0.0, attn_dropout: Prob = 0.0,
    bias: bool = True, tie_weights: bool = True, attn_impl: AttnImpl = "sdpa", kv_groups: PosInt | None = None,
    moe_experts: Experts = 0, moe_top_k: PosInt = 2,
) -> nn.Module:
    """Language model ``idx (B, T), state -> (logits (B, T, vocab_size), state)`` (eq. 7.14). GPT-2's
    layout (learned positions, tanh-GELU, final LayerNorm, tied head) by default."""
    return GPT(vocab_size, tie_weights=tie_weights,
               **_body_kw(d_model, num_heads, num_layers, d_ff, max_len, pos, True, activation, norm, norm_eps,
                          dropout, attn_dropout, bias, attn_impl, kv_groups, moe_experts, moe_top_k))


@MODELS.register("bert", tags=("text", "transformer", "method:mlm"),
                 help="BERT: Post-Norm Transformer encoder with a masked-LM head (§7.6)")
def bert(
    vocab_size: VocabSize = 1000, d_model: PosInt = 128, num_heads: PosInt = 4, num_layers: PosInt = 2,
    d_ff: DFF = None, max_len: PosInt = 256, pos: PositionKind = "learned", norm_first: bool = False,
    activation: FFNActivation = "gelu", norm_eps: Eps = 1e-12, dropout: Prob = 0.1, attn_dropout: Prob = 0.1,
    type_vocab: Annotated[int, Range(0, 16)] = 2, cls_token: bool = False, tie_weights: bool = True,
    attn_impl: AttnImpl = "sdpa",
) -> nn.Module:
    """Masked LM ``tokens (B, T), lengths -> logits (B, N, vocab_size)`` (eq. 7.13). As in BERT, [CLS] is a
    vocabulary token the ``mlm`` method puts first; ``cls_token`` adds a learned [CLS] vector instead."""
    return BERT(vocab_size, tie_weights=tie_weights, type_vocab=type_vocab, embed_norm=True, cls_token=cls_token,
                **_body_kw(d_model, num_heads, num_layers, d_ff, max_len, pos, norm_first, activation, "layer",
                           norm_eps, dropout, attn_dropout, True, attn_impl, None, 0, 2))


@MODELS.register("transformer-seq2seq", tags=("text", "transformer", "attention", "method:seq2seq"),
                 help="Transformer encoder-decoder with cross-attention (§7.4)")
def transformer_seq2seq(
    src_vocab: VocabSize = 32, tgt_vocab: NonNegInt = 0, d_model: PosInt = 128, num_heads: PosInt = 4,
    num_layers: PosInt = 2, dec_layers: NonNegInt = 0, d_ff: DFF = None, max_len: PosInt = 128,
    pos: PositionKind = "sinusoidal", norm_first: bool = True, activation: FFNActivation = "gelu",
    dropout: Prob = 0.1, padding_idx: NonNegInt = 0,
) -> nn.Module:
    """Seq2seq ``(src (B, S), src_lengths, tgt_in (B, T)) -> logits (B, T, tgt_vocab)``; ``num_layers``
    encoder blocks, ``dec_layers`` decoder blocks (0: as many); ``tgt_vocab`` 0: = ``src_vocab``."""
    return TransformerSeq2Seq(
        src_vocab, tgt_vocab or src_vocab, num_layers=num_layers, dec_layers=dec_layers or None,
        padding_idx=padding_idx, d_model=d_model, num_heads=num_heads, d_ff=d_ff, max_len=max_len, pos=pos,
        norm_first=norm_first, activation=activation, dropout=dropout)


@MODELS.register("vit", tags=("image", "transformer"),
                 help="Vision Transformer: patch embedding + [CLS] + learned positions + encoder (§7.5)")
def vit(
    in_shape: InShape = (1, 28, 28), num_classes: PosInt = 10, patch: PosInt = 7, d_model: PosInt = 64,
    num_heads: PosInt = 4, num_layers: PosInt = 4, d_ff: DFF = None, pos: PositionKind = "learned",
    norm_first: bool = True, activation: FFNActivation = "gelu", dropout: Prob = 0.0,
    attn_impl: AttnImpl = "sdpa",
) -> nn.Module:
    """Image classifier ``(B, C, H, W) -> logits``; ``patch`` p must divide H and W (N = HW/p² tokens)."""
    return ViT(tuple(in_shape), num_classes, patch=patch, d_model=d_model, num_heads=num_heads,
               num_layers=num_layers, d_ff=d_ff, pos=pos, norm_first=norm_first, activation=activation,
               dropout=dropout, impl=attn_impl)



