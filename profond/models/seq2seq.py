r"""Encoder–decoder (seq2seq) with or without attention, course §6.1–6.3 and exercise 6.1.

Equation numbers are those of the course, chapters 5–6 (eq. 5.22, eqs. 6.1–6.8).

Encoder: embedding → (Bi)LSTM / GRU / RNN over the source ``x_1 … x_S`` → the states
``h_j = [→h_j ; ←h_j]`` (eq. 5.22), of size ``d_m = D d_h`` (``D = 2`` if bidirectional).
The decoder has ``num_layers`` layers of size ``d_m`` and starts from the encoder's final
state, layer by layer: ``s_0 = [→h_S ; ←h_1]`` (for the LSTM the cells likewise).

Decoder step ``t`` reads the previous target token ``y_{t-1}`` (``<bos>`` first) and, by
``attention``:

* ``none`` — the fixed-context model of §6.1: the source reaches the decoder *only*
  through ``s_0``, i.e. through ``c = h_S`` (6.1) — the bottleneck.
  ``s_t = RNN([E y_{t-1}], s_{t-1})``, ``logits = W_o s_t``.
* ``bahdanau`` — eqs. (6.2)–(6.4) with the state *before* the update (Remarque 6.2):
  ``c_t = Attn(s_{t-1}, h)``, ``s_t = RNN([E y_{t-1}; c_t], s_{t-1})``,
  ``logits = W_o [s_t; c_t]``.
* ``luong-dot`` / ``luong-general`` / ``luong-concat`` — scores (6.6) / (6.7) / (6.8) with
  the state *after* the update: ``s_t = RNN([E y_{t-1}; h̃_{t-1}], s_{t-1})`` (Luong's
  input feeding, ``h̃_0 = 0``), ``c_t = Attn(s_t, h)``, ``h̃_t = tanh(W_c [c_t; s_t])``,
  ``logits = W_o h̃_t``.

Padded source positions (``src_lengths``) are masked: they get attention weight 0.

* :meth:`Seq2Seq.forward` — teacher forcing: the decoder reads the given target inputs;
  ``teacher_forcing = p < 1`` is scheduled sampling (Bengio et al. 2015): at each step
  and for each sequence, the model's own previous prediction replaces the true token
  with probability ``1 - p`` (coin flips from ``generator`` for reproducibility).
* :meth:`Seq2Seq.greedy_decode` — ``y_t = argmax p(y | y_{<t}, x)``.
* :meth:`Seq2Seq.beam_search` — keeps the ``beam`` best prefixes by ``Σ log p``; the
  final choice divides by the GNMT length penalty ``((5 + |y|) / 6)^α``.
* :meth:`Seq2Seq.log_prob` — ``log p(y | x) = Σ_t log p(y_t | y_{<t}, x)`` of given outputs.

Both decoders stop a sequence at ``<eos>`` (kept in the output) and pad the rest; they
return a :class:`Decoded` with the attention weights ``α_{t,j}`` for heatmaps
(exercise 6.1.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Prob
from ..errors import ConfigError
from ..nn.attention import Attention, canonical_attention, length_mask, make_attention
from ..registry import MODELS
from .rnn import Impl, RNNKind, State, VocabSize, _kind, _top_hidden, make_recurrent, run_recurrent

__all__ = ["Seq2Seq", "Seq2SeqOutput", "Decoded", "Memory", "seq2seq"]

#: (decoder RNN state, Luong's fed-back h̃_{t-1} or None)
DecoderState = tuple[State, Union[Tensor, None]]


class Seq2SeqOutput(NamedTuple):
    """Teacher-forced forward: ``logits`` ``(B, T, V)``, ``attention`` ``(B, T, S)`` or None."""

    logits: Tensor
    attention: Tensor | None


class Decoded(NamedTuple):
    """Decoder output, one hypothesis per source sequence.

    * ``tokens`` ``(B, L)`` — generated tokens (no ``<bos>``), ``<eos>`` included, then
      padding; ``L`` is the number of decoding steps run (``<= max_len``);
    * ``lengths`` ``(B,)`` — tokens up to and including ``<eos>`` (``L``-capped);
    * ``scores`` ``(B,)`` — ``Σ log p`` of those tokens (no length penalty);
    * ``attention`` ``(B, L, S)`` — ``α_{t,j}``, zero rows after the end; None without
      attention.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    attention: Tensor | None


@dataclass
class Memory:
    """What the decoder reads from the encoder: states ``h_j`` ``(B, S, d_m)``, the source
    ``mask`` ``(B, S)`` (True = valid) and the attention's precomputed key projections."""

    keys: Tensor
    mask: Tensor
    projected: Tensor | None

    def index(self, idx: Tensor) -> Memory:
        """Rows ``idx`` of the batch (beam search repeats each source ``beam`` times)."""
        return Memory(self.keys[idx], self.mask[idx],
                      None if self.projected is None else self.projected[idx])


def _index_state(state: DecoderState, idx: Tensor) -> DecoderState:
    """Batch rows ``idx`` of a decoder state (RNN states are ``(L, B, d)``, the feed ``(B, d)``)."""
    rnn_state, feed = state
    if isinstance(rnn_state, tuple):
        rnn_state = tuple(s.index_select(1, idx) for s in rnn_state)  # type: ignore[assignment]
    else:
        rnn_state = rnn_state.index_select(1, idx)
    return rnn_state, None if feed is None else feed.index_select(0, idx)


def _merge_directions(h_n: Tensor, directions: int) -> Tensor:
    """``(L·D, B, d_h)`` → ``(L, B, D·d_h)``: layer ``l``'s ``[→h ; ←h]`` (eq. 5.22)."""
    ld, batch, d = h_n.shape
    layers = ld // directions
    return (h_n.reshape(layers, directions, batch, d).permute(0, 2, 1, 3)
            .reshape(layers, batch, directions * d))


class Seq2Seq(nn.Module):
    """RNN encoder–decoder, with ``attention`` none / bahdanau / luong-{dot,general,concat}.

    See the module docstring for the equations. Modules: ``src_embedding``, ``encoder``,
    ``tgt_embedding``, ``decoder``, ``attention`` (None without), ``combine`` (Luong's
    ``W_c``), ``out`` (``W_o``).

    The decoders (:meth:`greedy_decode`, :meth:`beam_search`) only use :meth:`encode`,
    :meth:`step`, :meth:`index_state` and ``padding_idx``: another encoder-decoder with those
    (the Transformer of :mod:`.transformer`) shares them.
    """

    index_state = staticmethod(_index_state)

    def __init__(
        self, src_vocab: int, tgt_vocab: int, embed_dim: int = 64, hidden_size: int = 128,
        num_layers: int = 1, kind: str = "lstm", bidirectional: bool = True,
        attention: str = "bahdanau", attn_size: int | None = None, dropout: float = 0.0,
        padding_idx: int = 0, impl: str = "torch",
    ) -> None:
        super().__init__()
        self.kind = _kind(kind)
        self.attention_kind = canonical_attention(attention, allow_none=True)
        self.padding_idx = padding_idx
        self.num_directions = 2 if bidirectional else 1
        d_m = self.num_directions * hidden_size           # encoder states h_j
        self.memory_size = self.decoder_size = d_m        # decoder states s_t (dot: d_s = d_h)

        self.src_embedding = nn.Embedding(src_vocab, embed_dim, padding_idx=padding_idx)
        self.encoder = make_recurrent(kind, embed_dim, hidden_size, num_layers,
                                      bidirectional=bidirectional, dropout=dropout, impl=impl)
        self.tgt_embedding = nn.Embedding(tgt_vocab, embed_dim, padding_idx=padding_idx)
        self.drop = nn.Dropout(dropout)

        self.attention: Attention | None = None
        self.combine: nn.Linear | None = None
        extra_in, out_in = 0, d_m
        if self.attention_kind == "bahdanau":
            extra_in, out_in = d_m, 2 * d_m                # RNN reads c_t; W_o reads [s_t; c_t]
        elif self.attention_kind.startswith("luong"):
            extra_in = d_m                                 # input feeding of h̃_{t-1}
            self.combine = nn.Linear(2 * d_m, d_m)         # h̃_t = tanh(W_c [c_t; s_t])
        if self.attention_kind != "none":
            self.attention = make_attention(self.attention_kind, d_m, d_m, attn_size)
        self.decoder = make_recurrent(kind, embed_dim + extra_in, d_m, num_layers,
                                      dropout=dropout, impl=impl)
        self.out = nn.Linear(out_in, tgt_vocab)

    # -- encoder -----------------------------------------------------------------------

    def encode(self, src: Tensor, src_lengths: Tensor | None = None
               ) -> tuple[Memory, DecoderState]:
        """Run the encoder: the memory to attend over and the decoder's initial state."""
        batch, steps = src.shape
        keys, enc_state = run_recurrent(self.encoder, self.drop(self.src_embedding(src)),
                                        src_lengths)
        if src_lengths is None:
            mask = torch.ones(batch, steps, dtype=torch.bool, device=src.device)
        else:
            mask = length_mask(torch.as_tensor(src_lengths, device=src.device), steps)
        projected = None if self.attention is None else self.attention.project_keys(keys)
        if isinstance(enc_state, tuple):                   # LSTM: (h, c)
            s0: State = tuple(_merge_directions(s, self.num_directions) for s in enc_state)
        else:
            s0 = _merge_directions(enc_state, self.num_directions)
        feed = None
        if self.combine is not None:
            feed = keys.new_zeros(batch, self.decoder_size)   # h̃_0 = 0
        return Memory(keys, mask, projected), (s0, feed)

    # -- one decoder step --------------------------------------------------------------

    def step(self, y_prev: Tensor, memory: Memory, state: DecoderState
             ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoder step from the previous tokens ``y_prev`` ``(B,)``.

        Returns ``(logits (B, V), new state, attention weights (B, S) or None)``.
        """
        rnn_state, feed = state
        emb = self.drop(self.tgt_embedding(y_prev))                        # E y_{t-1}
        weights = None
        if self.attention_kind == "none":
            out, rnn_state = self.decoder(emb.unsqueeze(1), rnn_state)
            readout = out[:, 0]                                            # s_t
        elif self.attention_kind == "bahdanau":
            s_prev = _top_hidden(rnn_state)[-1]                            # s_{t-1}
            context, weights = self.attention(s_prev, memory.keys, mask=memory.mask,
                                              projected=memory.projected)  # (6.2)–(6.4)
            out, rnn_state = self.decoder(torch.cat([emb, context], -1).unsqueeze(1), rnn_state)
            readout = torch.cat([out[:, 0], context], -1)                  # [s_t; c_t]
        else:  # Luong
            out, rnn_state = self.decoder(torch.cat([emb, feed], -1).unsqueeze(1), rnn_state)
            s_t = out[:, 0]
            context, weights = self.attention(s_t, memory.keys, mask=memory.mask,
                                              projected=memory.projected)  # (6.6)–(6.8), (6.4)
            feed = torch.tanh(self.combine(torch.cat([context, s_t], -1)))  # h̃_t
            readout = feed
        return self.out(self.drop(readout)), (rnn_state, feed), weights

    # -- teacher forcing ---------------------------------------------------------------

    def forward(
        self, src: Tensor, src_lengths: Tensor | None, tgt_in: Tensor,
        teacher_forcing: float = 1.0, generator: torch.Generator | None = None,
    ) -> Seq2SeqOutput:
        """Logits ``(B, T, V)`` for the target inputs ``tgt_in`` ``(B, T)`` (``<bos> y_1 …``).

        ``teacher_forcing`` ``p``: probability of reading the true ``tgt_in[:, t]`` at step
        ``t > 0``; otherwise the argmax of the previous step's logits (scheduled sampling,
        no gradient through that choice). ``generator``: for the coin flips (on the
        device of ``src``). Padded target steps are computed too; mask them in the loss.
        """
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ConfigError(f"teacher_forcing={teacher_forcing!r} must be in [0, 1].")
        memory, state = self.encode(src, src_lengths)
        batch, steps = tgt_in.shape
        logits_all, weights_all = [], []
        y = tgt_in[:, 0]
        for t in range(steps):
            if t > 0:
                y = tgt_in[:, t]
                if teacher_forcing < 1.0:
                    own = torch.rand(batch, generator=generator, device=src.device)
                    y = torch.where(own >= teacher_forcing, logits_all[-1].argmax(-1), y)
            logits, state, weights = self.step(y, memory, state)
            logits_all.append(logits)
            weights_all.append(weights)
        attention = None if self.attention is None else torch.stack(weights_all, 1)
        return Seq2SeqOutput(torch.stack(logits_all, 1), attention)

    def log_prob(self, src: Tensor, src_lengths: Tensor | None, tokens: Tensor,
                 lengths: Tensor, bos: int) -> Tensor:
        """``log p(y | x) = Σ_{t < lengths} log p(y_t | y_{<t}, x)`` ``(B,)`` of the outputs
        ``tokens`` ``(B, L)`` (as returned by the decoders: no ``<bos>``)."""
        bos_col = torch.full_like(tokens[:, :1], bos)
        logits = self(src, src_lengths, torch.cat([bos_col, tokens[:, :-1]], 1)).logits
        logp = F.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        valid = length_mask(lengths.to(tokens.device), tokens.shape[1])
        return (logp * valid).sum(1)

    # -- decoding ----------------------------------------------------------------------

    @torch.no_grad()
    def greedy_decode(
        self, src: Tensor, src_lengths: Tensor | None = None, max_len: int = 50,
        bos: int = 2, eos: int = 3,
    ) -> Decoded:
        """Greedy decoding ``y_t = argmax_y p(y | y_{<t}, x)``, up to ``max_len`` tokens.

        A sequence stops at its first ``<eos>``; later positions hold ``padding_idx`` and
        zero attention rows. Stops early once every sequence has ended.
        """
        memory, state = self.encode(src, src_lengths)
        batch = src.shape[0]
        y = torch.full((batch,), bos, dtype=torch.long, device=src.device)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
        lengths = torch.zeros(batch, dtype=torch.long, device=src.device)
        scores = torch.zeros(batch, device=src.device)
        tokens, attn = [], []
        for _ in range(max_len):
            logits, state, weights = self.step(y, memory, state)
            logp = F.log_softmax(logits, -1)
            y = logp.argmax(-1)
            alive = ~finished
            scores += torch.where(alive, logp.gather(1, y[:, None]).squeeze(1), 0.0)
            lengths += alive.long()
            tokens.append(y.masked_fill(finished, self.padding_idx))
            if weights is not None:
                attn.append(weights * alive[:, None])
            finished |= y == eos
            if bool(finished.all()):
                break
        return Decoded(torch.stack(tokens, 1), lengths, scores,
                       torch.stack(attn, 1) if attn else None)

    @torch.no_grad()
    def beam_search(
        self, src: Tensor, src_lengths: Tensor | None = None, beam: int = 4,
        max_len: int = 50, bos: int = 2, eos: int = 3, length_penalty: float = 0.0,
    ) -> Decoded:
        """Beam search: keep the ``beam`` prefixes of highest ``Σ log p``, for every source.

        At each step every live prefix is extended by every token and the ``beam`` best of
        the ``beam × V`` candidates survive. A finished hypothesis (``<eos>`` emitted)
        stays in the beam with its score frozen (it can only be extended by padding, at
        cost 0), competing with the live ones. The search stops when all hypotheses have
        finished, after ``max_len`` steps, or (``α = 0`` only) as soon as a finished
        hypothesis beats every live one, which can only lose log-probability from then on.
        The hypothesis returned maximises
        ``Σ log p / ((5 + |y|) / 6)^α`` with ``α = length_penalty`` (Wu et al. 2016;
        ``α = 0``: the raw log-probability, which favours short outputs).

        ``beam=1`` is :meth:`greedy_decode`. A wider beam usually, not provably, finds a
        more probable sequence than greedy decoding: the greedy prefix can be pushed out
        of the beam by prefixes that later turn out worse.
        """
        if beam < 1:
            raise ConfigError(f"beam={beam} must be >= 1.")
        memory, state = self.encode(src, src_lengths)
        batch, k, dev = src.shape[0], beam, src.device
        rows = torch.arange(batch, device=dev).repeat_interleave(k)       # b·k + j -> b
        memory, state = memory.index(rows), self.index_state(state, rows)
        scores = torch.full((batch, k), float("-inf"), device=dev)
        scores[:, 0] = 0.0                     # one live prefix (<bos>) per source at first
        finished = torch.zeros(batch, k, dtype=torch.bool, device=dev)
        lengths = torch.zeros(batch, k, dtype=torch.long, device=dev)
        tokens = torch.zeros(batch, k, 0, dtype=torch.long, device=dev)
        attn: Tensor | None = None
        y = torch.full((batch * k,), bos, dtype=torch.long, device=dev)
        for _ in range(max_len):
            logits, state, weights = self.step(y, memory, state)
            vocab = logits.shape[-1]
            logp = F.log_softmax(logits, -1).view(batch, k, vocab)
            pad_only = torch.full((vocab,), float("-inf"), device=dev)
            pad_only[self.padding_idx] = 0.0
            logp = torch.where(finished.unsqueeze(-1), pad_only, logp)
            cand = (scores.unsqueeze(-1) + logp).view(batch, k * vocab)
            scores, flat = cand.topk(k, dim=-1)                            # (B, k)
            origin, tok = flat // vocab, flat % vocab
            was_finished = finished.gather(1, origin)
            tokens = torch.cat([tokens.gather(1, origin.unsqueeze(-1).expand_as(tokens)),
                                tok.unsqueeze(-1)], -1)
            lengths = lengths.gather(1, origin) + (~was_finished).long()
            finished = was_finished | (tok == eos)
            if weights is not None:
                w = weights.view(batch, k, -1).gather(
                    1, origin.unsqueeze(-1).expand(-1, -1, weights.shape[-1]))
                w = (w * (~was_finished).unsqueeze(-1)).unsqueeze(2)        # (B, k, 1, S)
                attn = w if attn is None else torch.cat(
                    [attn.gather(1, origin[:, :, None, None].expand_as(attn)), w], 2)
            parent = (torch.arange(batch, device=dev).unsqueeze(1) * k + origin).view(-1)
            state = self.index_state(state, parent)
            y = tok.view(-1)
            if bool(finished.all()) or (not length_penalty and self._settled(scores, finished)):
                break
        norm = scores
        if length_penalty:
            norm = scores / ((5.0 + lengths.float()) / 6.0) ** length_penalty
        best = norm.argmax(-1)                                             # (B,)
        pick = torch.arange(batch, device=dev)
        return Decoded(tokens[pick, best], lengths[pick, best], scores[pick, best],
                       None if attn is None else attn[pick, best])


    @staticmethod
    def _settled(scores: Tensor, finished: Tensor) -> bool:
        """True when, for every source, a finished hypothesis scores at least as high as
        every live one: log-probabilities only decrease, so (without length penalty)
        the live ones can no longer win."""
        neg_inf = torch.tensor(float("-inf"), device=scores.device)
        best_done = torch.where(finished, scores, neg_inf).amax(-1)
        best_live = torch.where(finished, neg_inf, scores).amax(-1)
        return bool(((best_done >= best_live) & (best_done > neg_inf)).all())


@MODELS.register("seq2seq", tags=("text", "rnn", "attention", "method:seq2seq"),
                 help="RNN encoder-decoder, attention none/bahdanau/luong-* (course §6.1-6.3)")
def seq2seq(
    src_vocab: VocabSize = 32, tgt_vocab: NonNegInt = 0, embed_dim: PosInt = 64,
    hidden_size: PosInt = 128, num_layers: PosInt = 1, kind: RNNKind = "lstm",
    bidirectional: bool = True, attention: str = "bahdanau", attn_size: NonNegInt = 0,
    dropout: Prob = 0.0, padding_idx: NonNegInt = 0, impl: Impl = "torch",
) -> nn.Module:
    """Seq2seq ``(src (B, S), src_lengths, tgt_in (B, T)) -> logits (B, T, tgt_vocab)``.

    ``tgt_vocab``: 0 = same as ``src_vocab``; ``kind``: lstm, gru, rnn; ``bidirectional``
    encoder (the decoder has ``D · hidden_size`` units); ``attention``: none (fixed
    context, §6.1), bahdanau (6.2–6.4), luong-dot (6.6), luong-general (6.7),
    luong-concat (6.8); ``attn_size``: d_a of bahdanau / luong-concat (0 = decoder size);
    ``impl``: torch or profond. Decoding: ``greedy_decode``, ``beam_search``.
    """
    return Seq2Seq(src_vocab, tgt_vocab or src_vocab, embed_dim, hidden_size, num_layers, kind,
                   bidirectional, attention, attn_size or None, dropout, padding_idx, impl)
