r"""Recurrent models of chapter 5: text classifier, character language model, forecaster.

Equation and section numbers are those of the course, chapter 5 (§5.3, §5.8; eqs. 5.1–5.19).
Models are plain ``nn.Module``s: they know nothing of training or data loading.

* ``rnn-classifier`` (:class:`RNNClassifier`) — the §5.8 sentiment model: embedding →
  (Bi)LSTM / GRU / RNN → pooling → linear head. ``lengths`` makes the output independent
  of the padding.
* ``char-lm`` (:class:`CharLM`) — embedding → LSTM / GRU → linear to the vocabulary; it
  returns its state so that text is generated one character at a time (:meth:`CharLM.generate`).
* ``rnn-forecaster`` (:class:`RNNForecaster`) — LSTM / GRU over a window of a real-valued
  series → the next value, or the next ``horizon`` values at once (direct strategy);
  :meth:`RNNForecaster.recursive` feeds its one-step forecasts back (recursive strategy).

Every model takes ``kind`` (``rnn``, ``lstm``, ``gru``) and ``impl``:

* ``"torch"`` (default) — ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``, fast (cuDNN on GPU);
* ``"profond"`` — :class:`profond.nn.rnn.Recurrent`, the course's equations written out
  (5.1), (5.9)–(5.14), (5.16)–(5.19), with gate traces (``return_trace=True`` on
  ``model.rnn``). Same weight layout: :func:`copy_weights` copies a model of one ``impl``
  into the other and both then compute the same outputs.

All recurrent layers are ``batch_first``: tokens are ``(B, T)``, series ``(B, T, d)``.
Helpers shared with :mod:`.seq2seq`: :func:`make_recurrent`, :func:`run_recurrent`,
:func:`copy_weights`.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..base.coerce import NonNegInt, PosInt, Prob, Range, check_choice
from ..errors import ConfigError
from ..nn.rnn import Recurrent, copy_from_torch, copy_to_torch
from ..registry import MODELS

__all__ = [
    "IMPLS", "RNN_KINDS", "POOLS", "State", "make_recurrent", "run_recurrent", "copy_weights",
    "valid_mask", "RNNClassifier", "CharLM", "RNNForecaster", "GATES", "trace_gates",
]

#: implementations of the recurrent layers
Impl = Literal["torch", "profond"]
IMPLS: tuple[str, ...] = get_args(Impl)
#: recurrent families
RNNKind = Literal["rnn", "lstm", "gru"]
RNN_KINDS: tuple[str, ...] = get_args(RNNKind)
#: how the classifier turns the ``(B, T, D d_h)`` outputs into one vector
Pool = Literal["last", "mean", "max"]
POOLS: tuple[str, ...] = get_args(Pool)
#: a vocabulary size
VocabSize = Annotated[int, Range(2)]

#: ``h`` (RNN, GRU) or ``(h, c)`` (LSTM), each ``(num_layers · D, B, d_h)``
State = Union[Tensor, tuple[Tensor, Tensor]]

_TORCH_RNN = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _kind(kind: str) -> str:
    return check_choice(kind, RNN_KINDS, "kind")


def _impl(impl: str) -> str:
    return check_choice(impl, IMPLS, "impl")


# ----------------------------------------------------------------------------------------
# shared helpers


def make_recurrent(
    kind: str, input_size: int, hidden_size: int, num_layers: int = 1, *,
    bidirectional: bool = False, dropout: float = 0.0, impl: str = "torch",
) -> nn.Module:
    """A ``batch_first`` recurrent layer: ``nn.RNN/LSTM/GRU`` (``impl="torch"``) or our
    :class:`~profond.nn.rnn.Recurrent` (``impl="profond"``), same arguments and outputs.

    ``dropout`` acts between stacked layers only (none when ``num_layers == 1``).
    """
    kind, impl = _kind(kind), _impl(impl)
    dropout = dropout if num_layers > 1 else 0.0
    if impl == "torch":
        return _TORCH_RNN[kind](input_size, hidden_size, num_layers, batch_first=True,
                                dropout=dropout, bidirectional=bidirectional)
    return Recurrent(kind, input_size, hidden_size, num_layers, batch_first=True,
                     dropout=dropout, bidirectional=bidirectional)


def run_recurrent(
    rnn: nn.Module, x: Tensor, lengths: Tensor | None = None, state: State | None = None,
) -> tuple[Tensor, State]:
    """Run ``rnn`` (from :func:`make_recurrent`) on ``x`` ``(B, T, d)``.

    With ``lengths``, steps ``t >= lengths[b]`` are padding: they output zeros and leave
    the state alone, so the final state is the one at each sequence's last valid step —
    ``nn.*`` through ``pack_padded_sequence``, :class:`Recurrent` through its masking.
    Returns ``(output (B, T, D d_h), final state)``.
    """
    if lengths is None:
        return rnn(x, state)
    if isinstance(rnn, Recurrent):
        return rnn(x, state, lengths=lengths)
    packed = pack_padded_sequence(x, torch.as_tensor(lengths).cpu(), batch_first=True,
                                  enforce_sorted=False)
    out, state = rnn(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, state


def _recurrent_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (Recurrent, nn.RNNBase))}


#: the gates :func:`trace_gates` returns per kind: LSTM forget / input / output (eqs. 5.9,
#: 5.10, 5.13), GRU reset / update (eqs. 5.16, 5.17, in the course's convention)
GATES: dict[str, tuple[str, ...]] = {"lstm": ("f", "i", "o"), "gru": ("r", "z")}


@torch.no_grad()
def trace_gates(model: nn.Module, tokens: Tensor, layer: int = 0) -> dict[str, Tensor]:
    """Gate activations of a token model's recurrent layer over one sequence (exercise 5.4.2).

    ``model`` has an ``embedding`` and an ``rnn`` of kind ``lstm`` or ``gru``
    (:class:`RNNClassifier`, :class:`CharLM`); ``tokens`` is ``(T,)`` or ``(1, T)``. An
    ``nn.LSTM`` / ``nn.GRU`` is copied into our :class:`~profond.nn.rnn.Recurrent` (same
    function, see :func:`copy_weights`), which records every gate at every step. Returns
    ``{gate: (T, d_h)}`` for :data:`GATES` of layer ``layer`` (0 = the one reading the
    embeddings), forward direction, plus ``"h"``.
    """
    rnn = model.rnn
    kind = model.kind
    if kind not in GATES:
        raise ConfigError(f"a {kind!r} layer has no gates; gate traces need kind lstm or gru.")
    if not 0 <= layer < rnn.num_layers:
        raise ConfigError(f"layer {layer}: the model has {rnn.num_layers} recurrent layer(s), 0 to "
                          f"{rnn.num_layers - 1}.")
    if not isinstance(rnn, Recurrent):
        ours = Recurrent(kind, rnn.input_size, rnn.hidden_size, rnn.num_layers, batch_first=True,
                         bidirectional=rnn.bidirectional).to(next(rnn.parameters()).device)
        rnn = copy_from_torch(ours, rnn)
    was_training = rnn.training
    rnn.eval()
    try:
        x = model.embedding(tokens.reshape(1, -1))
        traces = rnn(x, return_trace=True)[-1]
    finally:
        rnn.train(was_training)
    trace = next(t for t in traces if t.layer == layer and not t.reverse)
    return {g: trace.values[g][0].detach().cpu() for g in (*GATES[kind], "h")}


@torch.no_grad()
def copy_weights(dst: nn.Module, src: nn.Module) -> nn.Module:
    """Copy every weight of ``src`` into ``dst``, two models that differ only by ``impl``.

    Recurrent layers go through :func:`~profond.nn.rnn.copy_from_torch` /
    :func:`~profond.nn.rnn.copy_to_torch` (PyTorch's stacked gate layout ↔ our per-gate
    weights); every other parameter and buffer is copied by name. Returns ``dst``.
    """
    dst_rnns, src_rnns = _recurrent_modules(dst), _recurrent_modules(src)
    if dst_rnns.keys() != src_rnns.keys():
        raise ValueError(f"recurrent layers differ: {sorted(dst_rnns)} vs {sorted(src_rnns)}")
    for name, d in dst_rnns.items():
        s = src_rnns[name]
        if isinstance(d, Recurrent) and isinstance(s, Recurrent):
            d.load_state_dict(s.state_dict())
        elif isinstance(d, Recurrent):
            copy_from_torch(d, s)
        elif isinstance(s, Recurrent):
            copy_to_torch(s, d)
        else:
            d.load_state_dict(s.state_dict())

    def inside_rnn(key: str) -> bool:
        return any(key.startswith(p + ".") for p in dst_rnns)

    src_state = src.state_dict()
    for key, value in dst.state_dict().items():
        if not inside_rnn(key):
            value.copy_(src_state[key])
    return dst


def valid_mask(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    """``(B, T)`` bool, ``True`` at the valid steps ``t < lengths[b]`` (all if ``None``)."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    return torch.arange(steps, device=device) < lengths.reshape(-1, 1)


def _top_hidden(state: State) -> Tensor:
    """``h`` of a state (``(h, c)`` for the LSTM)."""
    return state[0] if isinstance(state, tuple) else state


# ----------------------------------------------------------------------------------------
# text classification (§5.8, §5.9)


class RNNClassifier(nn.Module):
    r"""Embedding → (Bi)RNN encoder → pooling → head, the §5.8 ``SentimentLSTM``.

    * ``pool="last"`` — the last layer's final state: ``h_T`` for one direction,
      ``[→h_T ; ←h_1]`` for two (eq. 5.22, ``torch.cat([h_n[-2], h_n[-1]])`` in §5.8);
      with ``lengths``, ``T`` is each sequence's own last valid step.
    * ``pool="mean"`` / ``"max"`` — mean / max of the outputs ``[→h_t ; ←h_t]`` over the
      valid steps.
    * head: ``Dropout → Linear`` (§5.9's ``FlexibleRNN``), or with ``head_hidden > 0``
      ``Dropout → Linear → ReLU → Dropout → Linear`` (§5.8's classifier, 128 units).

    ``forward(tokens (B, T), lengths (B,) | None) -> logits (B, num_classes)``; without
    ``lengths`` every step counts. Modules: ``embedding``, ``rnn``, ``head``.
    """

    def __init__(
        self, vocab_size: int, num_classes: int = 2, embed_dim: int = 128,
        hidden_size: int = 128, num_layers: int = 1, kind: str = "lstm",
        bidirectional: bool = True, pool: str = "last", dropout: float = 0.0,
        head_hidden: int = 0, padding_idx: int | None = 0, impl: str = "torch",
    ) -> None:
        super().__init__()
        self.kind, self.impl = _kind(kind), _impl(impl)
        self.pool = check_choice(pool, POOLS, "pool")
        self.num_directions = 2 if bidirectional else 1
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
        self.rnn = make_recurrent(kind, embed_dim, hidden_size, num_layers,
                                  bidirectional=bidirectional, dropout=dropout, impl=impl)
        features = self.num_directions * hidden_size
        if head_hidden > 0:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, head_hidden),
                                      nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(head_hidden, num_classes))
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    def encode(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The pooled sequence representation ``(B, D d_h)``, before the head."""
        out, state = run_recurrent(self.rnn, self.embedding(tokens), lengths)
        if self.pool == "last":
            h_n = _top_hidden(state)                                 # (L·D, B, d_h)
            return torch.cat(list(h_n[-self.num_directions:]), dim=-1)
        mask = valid_mask(lengths, *tokens.shape, device=tokens.device).unsqueeze(-1)
        if self.pool == "mean":
            return (out * mask).sum(1) / mask.sum(1).clamp_min(1)
        return out.masked_fill(~mask, float("-inf")).amax(1)

    def forward(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.encode(tokens, lengths))


@MODELS.register("rnn-classifier", tags=("text", "rnn", "method:text-classifier"),
                 help="embedding + (Bi)LSTM/GRU/RNN + pooling + linear head (course §5.8, §5.9)")
def rnn_classifier(
    vocab_size: VocabSize = 1000, num_classes: Annotated[int, Range(2)] = 2,
    embed_dim: PosInt = 128, hidden_size: PosInt = 128, num_layers: PosInt = 1,
    kind: RNNKind = "lstm", bidirectional: bool = True, pool: Pool = "last",
    dropout: Prob = 0.0, head_hidden: NonNegInt = 0, padding_idx: NonNegInt = 0,
    impl: Impl = "torch",
) -> nn.Module:
    """Text classifier ``tokens (B, T), lengths (B,) -> logits (B, num_classes)``.

    ``kind``: lstm, gru, rnn; ``pool``: last (final states, §5.8), mean, max (over the
    valid steps); ``dropout``: between stacked layers and before the head;
    ``head_hidden``: 0 for one Linear (§5.9), 128 for §5.8's two-layer head;
    ``impl``: torch (nn.LSTM, ...) or profond (nn.rnn.Recurrent, gate traces).
    The §5.8 model is ``embed_dim=128, hidden_size=256, num_layers=2, dropout=0.3,
    head_hidden=128``: 2 561 410 parameters for ``vocab_size=1000`` (the 1 447 170 printed
    in §5.8 does not match its own layers).
    """
    return RNNClassifier(vocab_size, num_classes, embed_dim, hidden_size, num_layers, kind,
                         bidirectional, pool, dropout, head_hidden, padding_idx, impl)


# ----------------------------------------------------------------------------------------
# character language model


class CharLM(nn.Module):
    r"""Character-level language model: ``p(x_{t+1} | x_{≤t}) = softmax(W_y h_t + b_y)``.

    Embedding → LSTM / GRU / RNN (``h_t`` from eqs. 5.1, 5.9–5.14 or 5.16–5.19) → the
    read-out (5.2) ``y_t = W_y h_t + b_y`` to the vocabulary. ``forward(tokens (B, T),
    state) -> (logits (B, T, V), state)``: the state carries over to the next call, so a
    long text can be read chunk by chunk (truncated BPTT, §5.3) or generated one
    character at a time (:meth:`generate`). ``tie_weights`` shares the embedding and
    read-out matrices (needs ``embed_dim == hidden_size``).
    """

    def __init__(
        self, vocab_size: int, embed_dim: int = 64, hidden_size: int = 256,
        num_layers: int = 2, kind: str = "lstm", dropout: float = 0.0,
        tie_weights: bool = False, impl: str = "torch",
    ) -> None:
        super().__init__()
        self.kind, self.impl = _kind(kind), _impl(impl)
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnn = make_recurrent(kind, embed_dim, hidden_size, num_layers,
                                  dropout=dropout, impl=impl)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if embed_dim != hidden_size:
                raise ConfigError(f"tie_weights needs embed_dim == hidden_size, got "
                                  f"{embed_dim} and {hidden_size}.")
            self.head.weight = self.embedding.weight

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        out, state = self.rnn(self.embedding(tokens), state)
        return self.head(self.drop(out)), state

    @torch.no_grad()
    def generate(
        self, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0,
        top_k: int | None = None, generator: torch.Generator | None = None,
    ) -> Tensor:
        """Continue ``prompt`` ``(B, T0)`` by ``max_new_tokens`` sampled tokens → ``(B, T0 + n)``.

        The prompt is read once; then each new token is fed alone with the carried
        state (no re-reading). Sampling from ``softmax(logits / temperature)``, among the
        ``top_k`` most likely tokens if given; ``temperature=0`` is greedy (argmax).
        ``generator`` makes the sampling reproducible.
        """
        logits, state = self(prompt)
        out = [prompt]
        last = logits[:, -1]
        for _ in range(max_new_tokens):
            if temperature == 0:
                nxt = last.argmax(-1, keepdim=True)
            else:
                scaled = last / temperature
                if top_k is not None and top_k < scaled.shape[-1]:
                    kth = scaled.topk(top_k, dim=-1).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(scaled, dim=-1), 1, generator=generator)
            out.append(nxt)
            logits, state = self(nxt, state)
            last = logits[:, -1]
        return torch.cat(out, dim=1)


@MODELS.register("char-lm", tags=("text", "rnn", "generative", "method:char-lm"),
                 help="character language model: embedding + LSTM/GRU + linear to vocab (ch. 5)")
def char_lm(
    vocab_size: VocabSize = 128, embed_dim: PosInt = 64, hidden_size: PosInt = 256,
    num_layers: PosInt = 2, kind: RNNKind = "lstm", dropout: Prob = 0.0,
    tie_weights: bool = False, impl: Impl = "torch",
) -> nn.Module:
    """Char-level LM ``tokens (B, T), state -> (logits (B, T, vocab_size), state)``.

    ``kind``: lstm, gru, rnn; ``dropout``: between layers and before the read-out;
    ``tie_weights``: share embedding and read-out (embed_dim == hidden_size);
    ``impl``: torch or profond. ``model.generate(prompt, n, temperature, top_k)`` samples.
    """
    return CharLM(vocab_size, embed_dim, hidden_size, num_layers, kind, dropout, tie_weights, impl)


# ----------------------------------------------------------------------------------------
# time-series forecasting


class RNNForecaster(nn.Module):
    r"""LSTM / GRU / RNN over a window ``x_{t-T+1} … x_t`` → ``x̂_{t+1} … x̂_{t+H}``.

    The last hidden state ``h_t`` goes through a linear head with ``horizon = H`` outputs:
    ``H = 1`` is the one-step forecast, ``H > 1`` the *direct* multi-step strategy (one
    output per future step, all at once). :meth:`recursive` is the *recursive* strategy:
    forecast one step, append it to the input, repeat.

    ``forward(x) -> (B, horizon)``, ``x`` ``(B, T)`` (univariate) or ``(B, T, input_size)``.
    """

    def __init__(
        self, input_size: int = 1, hidden_size: int = 64, num_layers: int = 1,
        kind: str = "lstm", dropout: float = 0.0, horizon: int = 1, impl: str = "torch",
    ) -> None:
        super().__init__()
        self.kind, self.impl = _kind(kind), _impl(impl)
        self.input_size, self.horizon = input_size, horizon
        self.rnn = make_recurrent(kind, input_size, hidden_size, num_layers,
                                  dropout=dropout, impl=impl)
        self.head = nn.Linear(hidden_size, horizon)

    def _as_input(self, x: Tensor) -> Tensor:
        if x.dim() == 2 and self.input_size == 1:
            x = x.unsqueeze(-1)
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"expected (B, T, {self.input_size}) or (B, T), got {tuple(x.shape)}")
        return x

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self._as_input(x))
        return self.head(out[:, -1])

    def recursive(self, x: Tensor, steps: int) -> Tensor:
        """``steps`` forecasts ``(B, steps)``, each fed back as the next input (univariate).

        Uses the one-step-ahead output (column 0 of the head) and carries the recurrent
        state, so step ``k`` costs one cell update, not a re-read of the window.
        """
        if self.input_size != 1:
            raise ValueError("recursive forecasting needs a univariate model (input_size=1)")
        out, state = self.rnn(self._as_input(x))
        preds = []
        y = self.head(out[:, -1])[:, :1]                                   # (B, 1)
        for k in range(steps):
            preds.append(y)
            if k + 1 < steps:
                out, state = self.rnn(y.unsqueeze(-1), state)
                y = self.head(out[:, -1])[:, :1]
        return torch.cat(preds, dim=1)


@MODELS.register("rnn-forecaster", tags=("series", "rnn", "method:forecaster"),
                 help="LSTM/GRU over a window of a series -> next value(s) (direct or recursive)")
def rnn_forecaster(
    input_size: PosInt = 1, hidden_size: PosInt = 64, num_layers: PosInt = 1,
    kind: RNNKind = "lstm", dropout: Prob = 0.0, horizon: PosInt = 1, impl: Impl = "torch",
) -> nn.Module:
    """Forecaster ``x (B, T[, input_size]) -> (B, horizon)``.

    ``horizon``: 1 (next step) or H > 1 (direct multi-step head); ``model.recursive(x, n)``
    iterates the one-step forecast. ``kind``: lstm, gru, rnn; ``impl``: torch or profond.
    """
    return RNNForecaster(input_size, hidden_size, num_layers, kind, dropout, horizon, impl)
