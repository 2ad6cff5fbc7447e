r"""Recurrent cells and layers of chapter 5, written from the course's equations.

Equation numbers are those of the course, chapter 5 (§5.2, §5.5–5.7, eqs. 5.1–5.22, in French);
the peephole LSTM is the form of the seed slides (course seed 001, "Formules du LSTM").

Cells (one time step, every gate with its own named weights):

* :class:`RNNCell` — vanilla RNN, eq. (5.1) ``h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h)``
  (or ReLU). The read-out (5.2) ``y_t = W_hy h_t + b_y`` is a ``nn.Linear`` on top, not
  part of the layer (as in ``nn.RNN``).
* :class:`LSTMCell` — LSTM, eqs. (5.9)–(5.14), with an optional peephole variant in which
  the forget and input gates read ``c_{t-1}`` and the output gate reads ``c_t``.
* :class:`GRUCell` — GRU, eqs. (5.16)–(5.19), with the course's or PyTorch's update
  convention, and the reset gate applied before (course 5.18) or after (PyTorch) ``W_h``.

Layers: :class:`Recurrent` (and the shortcuts :class:`RNNLayer`, :class:`LSTMLayer`,
:class:`GRULayer`) runs a cell over time, stacked (``num_layers``), bidirectional
(eqs. 5.20–5.22), with dropout between layers, variable lengths (masking, same results
as ``pack_padded_sequence``), an initial state and an optional per-step trace of the
gate activations and states (gate heatmaps of exercise 5.4, ``||∂h_t/∂h_k||`` of
exercise 5.2).

Weight names. Gate ``g`` has ``W_x{g}`` (``d_h × d_x``), ``W_h{g}`` (``d_h × d_h``) and,
depending on ``bias``: two biases ``b_x{g}``, ``b_h{g}`` (PyTorch's ``bias_ih`` /
``bias_hh``), one bias ``b_{g}`` (the course's ``b_f``, ``b_i``, …), or none. The course
writes ``W_f [h_{t-1}, x_t]``; that is ``W_f = [W_hf, W_xf]`` split by columns.

PyTorch's layout (used by :func:`copy_from_torch` / :func:`copy_to_torch` /
:func:`torch_parameter_map`): ``weight_ih`` stacks the gates by rows,

* ``nn.RNN``: one block ``h``;
* ``nn.LSTM``: ``i, f, g, o`` — input, forget, cell candidate (our ``c``), output;
* ``nn.GRU``: ``r, z, n`` — reset, update, candidate (our ``h``), with
  ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`` (reset *after* the product) and
  ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``: PyTorch's ``z`` keeps the old state, the course's
  (5.19) ``h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t`` lets the new one in (the seed slides
  use PyTorch's convention). Since ``σ(−a) = 1 − σ(a)``, the two are the same model with
  ``W_z, b_z`` negated: ``copy_from_torch`` does that for ``convention="course"``.

Parameter counts (Remarque 5.6 / "Tab. 5.6"): ``G d_h (d_h + d_x + 1)`` with one bias
(``G`` = 1, 4, 3 for RNN, LSTM, GRU), ``G d_h (d_h + d_x + 2)`` with PyTorch's two biases;
see :func:`param_count`.

Truncated BPTT: :func:`tbptt_chunks`, :func:`detach_state`, :func:`tbptt_forward`.
Gradient clipping (eq. 5.8) is ``train.clip_grad_norm`` of the training loop
(``torch.nn.utils.clip_grad_norm_``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from ..base.coerce import check_choice
from ..errors import ConfigError

__all__ = [
    "KINDS", "BIASES", "PEEPHOLES", "HH_INITS", "GRU_CONVENTIONS", "GATES",
    "RNNCell", "LSTMCell", "GRUCell", "Recurrent", "RNNLayer", "LSTMLayer", "GRULayer",
    "RecurrentTrace", "make_cell", "param_count", "copy_from_torch", "copy_to_torch",
    "torch_parameter_map", "tbptt_chunks", "detach_state", "tbptt_forward",
]

#: the three recurrent families
KINDS: tuple[str, ...] = ("rnn", "lstm", "gru")
#: bias modes: PyTorch's two biases per gate, the course's one, or none
BIASES: tuple[str, ...] = ("two", "one", "none")
#: peephole connections of the LSTM: none, full matrices ``W_c{g}`` (as the seed slides
#: write them) or diagonal vectors ``w_c{g} ⊙ c`` (Gers & Schmidhuber 2000)
PEEPHOLES: tuple[str, ...] = ("none", "full", "diagonal")
#: initialisation of the recurrent matrices ``W_h{g}`` (exercise 5.2)
HH_INITS: tuple[str, ...] = ("default", "orthogonal", "normal", "identity")
#: GRU update convention: course (5.19) ``(1-z) h + z h~`` or PyTorch's ``z h + (1-z) h~``
GRU_CONVENTIONS: tuple[str, ...] = ("course", "torch")
#: gate names in PyTorch's row order (LSTM ``c`` = PyTorch ``g``, GRU ``h`` = PyTorch ``n``)
GATES: dict[str, tuple[str, ...]] = {"rnn": ("h",), "lstm": ("i", "f", "c", "o"),
                                     "gru": ("r", "z", "h")}

#: a recurrent state: ``h`` for RNN / GRU, ``(h, c)`` for the LSTM (PyTorch's convention)
State = Union[Tensor, tuple[Tensor, Tensor]]


def _bias_mode(bias: bool | str) -> str:
    """``True`` → ``"two"`` (PyTorch), ``False`` → ``"none"``, or one of :data:`BIASES`."""
    if isinstance(bias, bool):
        return "two" if bias else "none"
    return check_choice(bias, BIASES, "bias")


def _peephole_mode(peephole: bool | str | None) -> str:
    """``True`` → ``"full"`` (the seed slides' matrices), ``False``/``None`` → ``"none"``."""
    if peephole is None or peephole is False:
        return "none"
    if peephole is True:
        return "full"
    return check_choice(peephole, PEEPHOLES, "peephole")


# ----------------------------------------------------------------------------------------
# cells


class _Cell(nn.Module):
    """Shared machinery: per-gate parameters, stacking, init, one-step ``forward``.

    Subclasses set ``kind`` and implement :meth:`step`. The layer computes the input
    projection ``W_x x_t + b_x`` for every time step in one matmul, then calls
    :meth:`step` with it, so only ``W_h h_{t-1}`` is computed per step.
    """

    kind: str = ""

    def __init__(self, input_size: int, hidden_size: int, bias: bool | str = True) -> None:
        super().__init__()
        if input_size < 1 or hidden_size < 1:
            raise ConfigError(f"input_size={input_size}, hidden_size={hidden_size} must be >= 1.")
        self.input_size = int(input_size)
        self.hidden_size = int(hidden_size)
        self.bias = _bias_mode(bias)
        d_x, d_h = self.input_size, self.hidden_size
        for g in self.gates:
            setattr(self, f"W_x{g}", nn.Parameter(torch.empty(d_h, d_x)))
            setattr(self, f"W_h{g}", nn.Parameter(torch.empty(d_h, d_h)))
            if self.bias == "two":
                setattr(self, f"b_x{g}", nn.Parameter(torch.empty(d_h)))
                setattr(self, f"b_h{g}", nn.Parameter(torch.empty(d_h)))
            elif self.bias == "one":
                setattr(self, f"b_{g}", nn.Parameter(torch.empty(d_h)))

    @property
    def gates(self) -> tuple[str, ...]:
        """Gate names in PyTorch's row order (see :data:`GATES`)."""
        return GATES[self.kind]

    @property
    def num_states(self) -> int:
        return 2 if self.kind == "lstm" else 1

    # -- parameters --------------------------------------------------------------------

    def reset_parameters(self, hh_init: str = "default", hh_gain: float = 1.0) -> None:
        """PyTorch's init ``U(-1/√d_h, 1/√d_h)`` for every parameter, then ``W_h{g}``.

        ``hh_init`` (exercise 5.2, each gate's ``d_h × d_h`` block separately):

        * ``default`` — keep the uniform init;
        * ``orthogonal`` — ``hh_gain · Q`` with ``Q`` orthogonal: every singular value is
          ``hh_gain``, so ``σ_max = hh_gain`` in the bound (5.7);
        * ``normal`` — ``N(0, hh_gain² / d_h)``: ``σ_max ≈ 2 hh_gain`` for large ``d_h``;
        * ``identity`` — ``hh_gain · I`` (IRNN, Le et al. 2015, with ReLU).
        """
        scheme = check_choice(hh_init, HH_INITS, "hh_init")
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)
        self.init_recurrent_weights(scheme, hh_gain)

    def init_recurrent_weights(self, scheme: str = "orthogonal", gain: float = 1.0) -> None:
        """Re-initialise every ``W_h{g}`` in place (see :meth:`reset_parameters`)."""
        scheme = check_choice(scheme, HH_INITS, "hh_init")
        if scheme == "default":
            return
        with torch.no_grad():
            for g in self.gates:
                w = getattr(self, f"W_h{g}")
                if scheme == "orthogonal":
                    nn.init.orthogonal_(w, gain=gain)
                elif scheme == "normal":
                    nn.init.normal_(w, 0.0, gain / math.sqrt(self.hidden_size))
                else:  # identity
                    w.copy_(gain * torch.eye(self.hidden_size, dtype=w.dtype))

    def stacked_weights(self) -> tuple[Tensor, Tensor | None, Tensor, Tensor | None]:
        """``(W_x, b_x, W_h, b_h)`` with the gates stacked by rows in PyTorch's order.

        ``W_x`` is ``(G d_h, d_x)``, ``W_h`` is ``(G d_h, d_h)``. With one bias it is
        returned as ``b_x`` (added to the input projection) and ``b_h`` is ``None``.
        """
        w_x = torch.cat([getattr(self, f"W_x{g}") for g in self.gates])
        w_h = torch.cat([getattr(self, f"W_h{g}") for g in self.gates])
        b_x = b_h = None
        if self.bias == "two":
            b_x = torch.cat([getattr(self, f"b_x{g}") for g in self.gates])
            b_h = torch.cat([getattr(self, f"b_h{g}") for g in self.gates])
        elif self.bias == "one":
            b_x = torch.cat([getattr(self, f"b_{g}") for g in self.gates])
        return w_x, b_x, w_h, b_h

    # -- running -----------------------------------------------------------------------

    def zero_state(self, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        """The all-zero initial state ``h_0`` (and ``c_0``), a tuple."""
        z = like.new_zeros(batch, self.hidden_size)
        return (z,) * self.num_states

    def step(
        self, gx: Tensor, state: tuple[Tensor, ...], w_h: Tensor, b_h: Tensor | None,
        record: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, ...]:
        """One time step from the precomputed input projection ``gx = W_x x_t + b_x``.

        ``state`` is a tuple ``(h,)`` or ``(h, c)``; returns the new tuple. When ``record``
        is a dict, the gate activations of this step are stored in it by name.
        """
        raise NotImplementedError

    def forward(self, x: Tensor, state: State | None = None) -> State:
        """One step on ``x`` ``(B, d_x)``; returns ``h`` (``(h, c)`` for the LSTM), like
        ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell``."""
        w_x, b_x, w_h, b_h = self.stacked_weights()
        st = self.zero_state(x.shape[0], x) if state is None else _as_tuple(state)
        new = self.step(F.linear(x, w_x, b_x), st, w_h, b_h)
        return new if self.kind == "lstm" else new[0]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias!r}"


def _as_tuple(state: State) -> tuple[Tensor, ...]:
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


class RNNCell(_Cell):
    r"""Vanilla RNN cell, course eq. (5.1)::

        h_t = φ(W_hh h_{t-1} + W_xh x_t + b_h),   φ = tanh (or relu)

    Parameters ``W_xh`` (d_h × d_x), ``W_hh`` (d_h × d_h) and ``b_h`` (one bias) or
    ``b_xh`` + ``b_hh`` (two biases, PyTorch's ``bias_ih`` / ``bias_hh``). Equals
    ``nn.RNNCell`` after :func:`copy_from_torch`.
    """

    kind = "rnn"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool | str = True,
        nonlinearity: str = "tanh",
    ) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.nonlinearity = check_choice(nonlinearity, ("tanh", "relu"), "nonlinearity")
        self._phi = torch.tanh if self.nonlinearity == "tanh" else torch.relu
        self.reset_parameters()

    def step(
        self, gx: Tensor, state: tuple[Tensor, ...], w_h: Tensor, b_h: Tensor | None,
        record: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, ...]:
        h = self._phi(gx + F.linear(state[0], w_h, b_h))  # (5.1)
        return (h,)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nonlinearity={self.nonlinearity!r}"


class LSTMCell(_Cell):
    r"""LSTM cell, course eqs. (5.9)–(5.14)::

        f_t = σ(W_f [h_{t-1}, x_t] + b_f)           (5.9)   forget gate
        i_t = σ(W_i [h_{t-1}, x_t] + b_i)           (5.10)  input gate
        c~_t = tanh(W_c [h_{t-1}, x_t] + b_c)       (5.11)  cell candidate
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ c~_t            (5.12)
        o_t = σ(W_o [h_{t-1}, x_t] + b_o)           (5.13)  output gate
        h_t = o_t ⊙ tanh(c_t)                        (5.14)

    with ``W_g [h, x] = W_hg h + W_xg x``. Gates are stored in PyTorch's order
    ``i, f, c, o`` (PyTorch calls the candidate ``g``).

    ``peephole`` (seed slides): the gates also read the cell,
    ``f_t = σ(… + W_cf c_{t-1})``, ``i_t = σ(… + W_ci c_{t-1})``, ``o_t = σ(… + W_co c_t)``
    (note ``c_t``, not ``c_{t-1}``, for the output gate); ``"full"`` uses ``d_h × d_h``
    matrices ``W_ci, W_cf, W_co`` as the slides write, ``"diagonal"`` vectors of size
    ``d_h`` (``W_cf ⊙ c``, Gers & Schmidhuber 2000). With zero peephole weights it is the
    plain LSTM.
    """

    kind = "lstm"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool | str = True,
        peephole: bool | str | None = "none",
    ) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.peephole = _peephole_mode(peephole)
        if self.peephole != "none":
            shape = (hidden_size, hidden_size) if self.peephole == "full" else (hidden_size,)
            for g in ("i", "f", "o"):
                setattr(self, f"W_c{g}", nn.Parameter(torch.empty(*shape)))
        self.reset_parameters()

    def _peep(self, g: str, c: Tensor) -> Tensor:
        w = getattr(self, f"W_c{g}")
        return F.linear(c, w) if self.peephole == "full" else c * w

    def step(
        self, gx: Tensor, state: tuple[Tensor, ...], w_h: Tensor, b_h: Tensor | None,
        record: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, ...]:
        h, c = state
        a_i, a_f, a_c, a_o = (gx + F.linear(h, w_h, b_h)).chunk(4, dim=-1)
        if self.peephole != "none":
            a_i = a_i + self._peep("i", c)
            a_f = a_f + self._peep("f", c)
        i = torch.sigmoid(a_i)                      # (5.10)
        f = torch.sigmoid(a_f)                      # (5.9)
        c_tilde = torch.tanh(a_c)                   # (5.11)
        c = f * c + i * c_tilde                     # (5.12)
        if self.peephole != "none":
            a_o = a_o + self._peep("o", c)
        o = torch.sigmoid(a_o)                      # (5.13)
        h = o * torch.tanh(c)                       # (5.14)
        if record is not None:
            record.update(i=i, f=f, o=o, c_tilde=c_tilde)
        return h, c

    def extra_repr(self) -> str:
        return super().extra_repr() + f", peephole={self.peephole!r}"


class GRUCell(_Cell):
    r"""GRU cell, course eqs. (5.16)–(5.19)::

        z_t = σ(W_z [h_{t-1}, x_t] + b_z)            (5.16)  update gate
        r_t = σ(W_r [h_{t-1}, x_t] + b_r)            (5.17)  reset gate
        h~_t = tanh(W_h [r_t ⊙ h_{t-1}, x_t] + b_h)  (5.18)  candidate
        h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ h~_t        (5.19)

    Gates are stored in PyTorch's order ``r, z, h`` (PyTorch calls the candidate ``n``).

    * ``reset_after=True`` (default, PyTorch / cuDNN): ``h~_t = tanh(W_xh x_t + b_xh
      + r_t ⊙ (W_hh h_{t-1} + b_hh))`` — needed to match ``nn.GRU``; ``False`` is the
      course's (5.18), the reset applied to ``h_{t-1}`` before the product.
    * ``convention="course"`` (default) is (5.19); ``"torch"`` is PyTorch's and the seed
      slides' ``h_t = z_t ⊙ h_{t-1} + (1 - z_t) ⊙ h~_t``. Both fit the same functions:
      ``z_course = 1 - z_torch`` when ``W_z, b_z`` are negated (``σ(-a) = 1 - σ(a)``).
    """

    kind = "gru"

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool | str = True,
        reset_after: bool = True, convention: str = "course",
    ) -> None:
        super().__init__(input_size, hidden_size, bias)
        self.reset_after = bool(reset_after)
        self.convention = check_choice(convention, GRU_CONVENTIONS, "convention")
        self.reset_parameters()

    def step(
        self, gx: Tensor, state: tuple[Tensor, ...], w_h: Tensor, b_h: Tensor | None,
        record: dict[str, Tensor] | None = None,
    ) -> tuple[Tensor, ...]:
        h = state[0]
        d = self.hidden_size
        x_r, x_z, x_h = gx.chunk(3, dim=-1)
        if self.reset_after:
            h_r, h_z, h_h = F.linear(h, w_h, b_h).chunk(3, dim=-1)
            r = torch.sigmoid(x_r + h_r)                                  # (5.17)
            z = torch.sigmoid(x_z + h_z)                                  # (5.16)
            h_tilde = torch.tanh(x_h + r * h_h)
        else:
            b_rz, b_hh = (None, None) if b_h is None else (b_h[: 2 * d], b_h[2 * d:])
            h_r, h_z = F.linear(h, w_h[: 2 * d], b_rz).chunk(2, dim=-1)
            r = torch.sigmoid(x_r + h_r)                                  # (5.17)
            z = torch.sigmoid(x_z + h_z)                                  # (5.16)
            h_tilde = torch.tanh(x_h + F.linear(r * h, w_h[2 * d:], b_hh))  # (5.18)
        if self.convention == "course":
            h = h + z * (h_tilde - h)            # (5.19) (1 - z) h + z h~
        else:
            h = h_tilde + z * (h - h_tilde)      # PyTorch: (1 - z) h~ + z h
        if record is not None:
            record.update(r=r, z=z, h_tilde=h_tilde)
        return (h,)

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", reset_after={self.reset_after}, convention={self.convention!r}")


_CELLS: dict[str, type[_Cell]] = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}


def make_cell(kind: str, input_size: int, hidden_size: int, bias: bool | str = True,
              **kwargs: object) -> _Cell:
    """A cell by kind (``rnn``, ``lstm``, ``gru``); ``kwargs`` go to its constructor."""
    return _CELLS[check_choice(kind, KINDS, "kind")](input_size, hidden_size, bias, **kwargs)


# ----------------------------------------------------------------------------------------
# layers


@dataclass
class RecurrentTrace:
    """What one (layer, direction) computed at every step, from ``return_trace=True``.

    * ``values`` — name → tensor ``(T, B, d_h)`` (``(B, T, d_h)`` if ``batch_first``),
      in time order for both directions: ``"h"`` for every kind, ``"c"``, ``"i"``,
      ``"f"``, ``"o"``, ``"c_tilde"`` for the LSTM, ``"r"``, ``"z"``, ``"h_tilde"`` for the
      GRU (``z`` in the cell's convention). Padded steps hold zeros.
    * ``states`` — ``states[t]`` is the state tuple ``(h_t,)`` / ``(h_t, c_t)`` *as a node
      of the autograd graph*, so ``torch.autograd.grad(h_t, h_k)`` gives ``∂h_t/∂h_k``
      (eq. 5.6, exercise 5.2).
    """

    layer: int
    reverse: bool
    values: dict[str, Tensor] = field(default_factory=dict)
    states: list[tuple[Tensor, ...]] = field(default_factory=list)


class Recurrent(nn.Module):
    r"""A recurrent layer (``kind`` ``rnn`` / ``lstm`` / ``gru``): a cell run over time.

    Drop-in for ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``: same arguments, same input and
    state shapes, same outputs — ``(output, h_n)``, ``(output, (h_n, c_n))`` for the LSTM
    — where ``output`` is ``(T, B, D d_h)`` (``(B, T, …)`` if ``batch_first``) and
    ``h_n`` is ``(num_layers · D, B, d_h)``, ``D = 2`` if bidirectional.

    * Stacking: layer ``l > 0`` reads the output of layer ``l - 1``, after dropout
      (probability ``dropout``, training mode only, never after the last layer).
    * Bidirectional (5.20)–(5.22): a forward cell reads ``x_1 … x_T``, a backward cell
      ``x_T … x_1``; the output is ``[→h_t ; ←h_t]``. ``h_n[2l]`` is the forward final state
      of layer ``l``, ``h_n[2l+1]`` the backward one (the state after ``x_1``).
    * Variable lengths: ``lengths`` (B,) or a ``PackedSequence`` input. A padded step does
      not update the state and outputs zeros, so ``h_n`` is each sequence's state at its
      last valid step and the backward direction starts at that step: the results of
      ``nn.LSTM`` on ``pack_padded_sequence``. A ``PackedSequence`` gives one back.
    * ``return_trace=True`` appends a list of :class:`RecurrentTrace`, one per cell in the
      order ``layer · D + direction``.
    * Cells are in ``self.cells`` (same order); ``cell(layer, reverse)`` fetches one.

    ``cell_kwargs`` go to the cell: ``nonlinearity`` (RNN), ``peephole`` (LSTM),
    ``reset_after`` and ``convention`` (GRU). ``hh_init`` / ``hh_gain``: see
    :meth:`_Cell.reset_parameters` (exercise 5.2).
    """

    def __init__(
        self, kind: str, input_size: int, hidden_size: int, num_layers: int = 1, *,
        bias: bool | str = True, batch_first: bool = False, dropout: float = 0.0,
        bidirectional: bool = False, hh_init: str = "default", hh_gain: float = 1.0,
        **cell_kwargs: object,
    ) -> None:
        super().__init__()
        self.kind = check_choice(kind, KINDS, "kind")
        if num_layers < 1:
            raise ConfigError(f"num_layers={num_layers} must be >= 1.")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} must be a probability in [0, 1).")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers = int(num_layers)
        self.bias = _bias_mode(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        cells = []
        for layer in range(self.num_layers):
            d_in = self.input_size if layer == 0 else self.num_directions * self.hidden_size
            for _ in range(self.num_directions):
                cells.append(make_cell(self.kind, d_in, self.hidden_size, self.bias,
                                       **cell_kwargs))
        self.cells = nn.ModuleList(cells)
        self.init_recurrent_weights(hh_init, hh_gain)

    def cell(self, layer: int, reverse: bool = False) -> _Cell:
        return self.cells[layer * self.num_directions + int(reverse)]  # type: ignore[return-value]

    def reset_parameters(self, hh_init: str = "default", hh_gain: float = 1.0) -> None:
        for c in self.cells:
            c.reset_parameters(hh_init, hh_gain)  # type: ignore[operator]

    def init_recurrent_weights(self, scheme: str = "orthogonal", gain: float = 1.0) -> None:
        """Re-initialise every ``W_h{g}`` (``default``, ``orthogonal``, ``normal``, ``identity``)."""
        for c in self.cells:
            c.init_recurrent_weights(scheme, gain)  # type: ignore[operator]

    # -- forward -----------------------------------------------------------------------

    def forward(
        self, x: Tensor | PackedSequence, state: State | None = None,
        lengths: Tensor | list[int] | None = None, *, return_trace: bool = False,
    ):
        """``x``: ``(T, B, d_x)`` (``(B, T, d_x)`` if ``batch_first``) or a PackedSequence;
        ``state``: ``h_0`` or ``(h_0, c_0)``, each ``(num_layers · D, B, d_h)``, zeros if
        ``None``; ``lengths``: valid length of each sequence (B,).

        Returns ``(output, h_n)`` / ``(output, (h_n, c_n))``, plus the list of traces
        when ``return_trace``.
        """
        packed = isinstance(x, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError("give lengths or a PackedSequence, not both")
            x, lengths = pad_packed_sequence(x, batch_first=self.batch_first)
        seq = x.transpose(0, 1) if self.batch_first else x
        if seq.dim() != 3 or seq.shape[-1] != self.input_size:
            raise ValueError(f"expected input (T, B, {self.input_size}) "
                             f"(batch_first={self.batch_first}), got {tuple(x.shape)}")
        steps, batch = seq.shape[:2]
        mask = None
        if lengths is not None:
            lens = torch.as_tensor(lengths, device=seq.device).reshape(1, -1)
            if lens.shape[1] != batch:
                raise ValueError(f"lengths has {lens.shape[1]} entries for a batch of {batch}")
            mask = (torch.arange(steps, device=seq.device).reshape(-1, 1) < lens).unsqueeze(-1)
        init = self._initial_states(state, batch, seq)

        finals: list[tuple[Tensor, ...]] = []
        traces: list[RecurrentTrace] | None = [] if return_trace else None
        inp = seq
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                idx = layer * self.num_directions + d
                trace = RecurrentTrace(layer, bool(d)) if traces is not None else None
                out, final = _run_cell(self.cells[idx], inp, init[idx], mask, bool(d), trace)
                outs.append(out)
                finals.append(final)
                if traces is not None:
                    traces.append(trace)  # type: ignore[arg-type]
            inp = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)       # (5.22)
            if layer < self.num_layers - 1 and self.dropout > 0:
                inp = F.dropout(inp, self.dropout, self.training)

        output = inp.transpose(0, 1) if self.batch_first else inp
        if packed:
            output = pack_padded_sequence(output, lengths, batch_first=self.batch_first,
                                          enforce_sorted=False)
        h_n = torch.stack([f[0] for f in finals])
        final_state: State = h_n
        if self.kind == "lstm":
            final_state = (h_n, torch.stack([f[1] for f in finals]))
        if traces is not None:
            if self.batch_first:
                for tr in traces:
                    tr.values = {k: v.transpose(0, 1) for k, v in tr.values.items()}
            return output, final_state, traces
        return output, final_state

    def _initial_states(self, state: State | None, batch: int, like: Tensor
                        ) -> list[tuple[Tensor, ...]]:
        """Split ``h_0`` / ``(h_0, c_0)`` into one state tuple per cell."""
        n = self.num_layers * self.num_directions
        if state is None:
            return [c.zero_state(batch, like) for c in self.cells]  # type: ignore[operator]
        parts = _as_tuple(state)
        want = 2 if self.kind == "lstm" else 1
        if len(parts) != want:
            raise ValueError(f"{self.kind} state must be {'(h_0, c_0)' if want == 2 else 'h_0'}")
        for p in parts:
            if tuple(p.shape) != (n, batch, self.hidden_size):
                raise ValueError(f"initial state must be {(n, batch, self.hidden_size)}, "
                                 f"got {tuple(p.shape)}")
        return [tuple(p[i] for p in parts) for i in range(n)]

    def extra_repr(self) -> str:
        s = f"{self.kind!r}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.batch_first:
            s += ", batch_first=True"
        return s


class _LSTMSequence(torch.autograd.Function):
    r"""The plain LSTM (eqs. 5.9–5.14) over a whole sequence, with back-propagation through
    time written by hand (course §5.3) instead of recorded op by op.

    Forward, per step, from the precomputed input projections ``gx_t = W_x x_t + b``::

        a_t = gx_t + W_h h_{t-1}                 (gates i, f, c~, o stacked, PyTorch's order)
        i, f, o = σ(a_i), σ(a_f), σ(a_o);  c~ = tanh(a_c)            (5.9)–(5.11), (5.13)
        c_t = f ⊙ c_{t-1} + i ⊙ c~                                    (5.12)
        h_t = o ⊙ tanh(c_t)                                           (5.14)

    Backward, from ``t = T`` down to 1, with ``δh`` / ``δc`` the gradients reaching
    ``h_t`` / ``c_t`` (from the outputs and from step ``t + 1``)::

        δo = δh ⊙ tanh(c_t);   δc += δh ⊙ o ⊙ (1 − tanh²(c_t))
        δi = δc ⊙ c~;   δc~ = δc ⊙ i;   δf = δc ⊙ c_{t-1};   δc_{t-1} = δc ⊙ f
        δa = [δi ⊙ i(1−i), δf ⊙ f(1−f), δc~ ⊙ (1 − c~²), δo ⊙ o(1−o)]   (σ' = σ(1−σ), tanh' = 1 − tanh²)
        δh_{t-1} = W_hᵀ δa;   δW_h += δa h_{t-1}ᵀ;   δgx_t = δa

    The per-step work is then one matmul each way plus pointwise arithmetic, and
    ``δW_h`` is a single matmul over all steps at the end. Inputs ``gx`` ``(T, B, 4 d_h)``,
    ``h0``, ``c0`` ``(B, d_h)``, ``w_h`` ``(4 d_h, d_h)``; outputs ``(T, B, d_h)``, ``h_T``,
    ``c_T``. Equal to the step-by-step cell (tests: values and gradients, gradcheck).
    """

    @staticmethod
    def forward(ctx, gx: Tensor, h0: Tensor, c0: Tensor, w_h: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        steps = gx.shape[0]
        # buffers written step by step (zero-filled: touching fresh pages in one sequential pass
        # is cheaper than faulting them in one step at a time)
        hs = gx.new_zeros(steps + 1, *h0.shape)          # h_0 .. h_T
        cs = gx.new_zeros(steps + 1, *c0.shape)          # c_0 .. c_T
        acts = torch.zeros_like(gx)                      # i, f, (unused), o of every step
        gs = gx.new_zeros(steps, *c0.shape)              # c~ of every step
        hs[0], cs[0] = h0, c0
        # the same operations as LSTMCell.step, in the same order: the two paths agree bit for bit
        for t in range(steps):
            a_i, a_f, a_c, a_o = (gx[t] + F.linear(hs[t], w_h)).chunk(4, dim=-1)  # gx_t + W_h h_{t-1}
            i, f, _, o = acts[t].chunk(4, dim=-1)
            torch.sigmoid(a_i, out=i)                    # (5.10)
            torch.sigmoid(a_f, out=f)                    # (5.9)
            g = torch.tanh(a_c, out=gs[t])               # (5.11)
            torch.sigmoid(a_o, out=o)                    # (5.13)
            torch.mul(f, cs[t], out=cs[t + 1]).add_(i * g)             # (5.12)
            torch.mul(o, torch.tanh(cs[t + 1]), out=hs[t + 1])         # (5.14)
        ctx.save_for_backward(hs, cs, gs, acts, w_h)
        return hs[1:], hs[-1], cs[-1]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out: Tensor | None, d_hn: Tensor | None, d_cn: Tensor | None):
        hs, cs, gs, acts, w_h = ctx.saved_tensors
        steps, batch, d = gs.shape
        d_a = torch.zeros_like(acts)
        dh = torch.zeros_like(hs[0]) if d_hn is None else d_hn.clone()
        dc = torch.zeros_like(cs[0]) if d_cn is None else d_cn.clone()
        if d_out is not None:
            dh = dh + d_out[-1]
        for t in range(steps - 1, -1, -1):
            i, f, _, o = acts[t].chunk(4, dim=-1)
            g, tc = gs[t], torch.tanh(cs[t + 1])
            da_i, da_f, da_g, da_o = d_a[t].chunk(4, dim=-1)
            torch.mul(dh * tc, o - o * o, out=da_o)                     # δa_o = δh ⊙ tanh(c_t) ⊙ σ'
            dc = dc + dh * o * (1 - tc * tc)                            # δc += δh ⊙ o ⊙ tanh'(c_t)
            torch.mul(dc * g, i - i * i, out=da_i)                      # δa_i = δc ⊙ c~ ⊙ σ'
            torch.mul(dc * cs[t], f - f * f, out=da_f)                  # δa_f = δc ⊙ c_{t-1} ⊙ σ'
            torch.mul(dc * i, 1 - g * g, out=da_g)                      # δa_c = δc ⊙ i ⊙ tanh'
            dc = dc * f                                                 # δc_{t-1}
            if t and d_out is not None:                                 # δh_{t-1} = W_hᵀ δa (+ the output's)
                dh = torch.addmm(d_out[t - 1], d_a[t], w_h)
            else:
                dh = d_a[t] @ w_h
        d_w = d_a.reshape(-1, 4 * d).t() @ hs[:-1].reshape(-1, d)      # δW_h = Σ_t δa_t h_{t-1}ᵀ
        return d_a, dh, dc, d_w


def _run_cell(
    cell: _Cell, x: Tensor, state: tuple[Tensor, ...], mask: Tensor | None, reverse: bool,
    trace: RecurrentTrace | None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run ``cell`` over ``x`` ``(T, B, d_x)``; returns ``(outputs (T, B, d_h), final state)``.

    The input projection ``W_x x_t + b_x`` of every step is one matmul (for RNN / LSTM
    ``b_h`` is folded into it); each step adds ``W_h h_{t-1}``. ``mask`` ``(T, B, 1)``
    freezes the state and zeroes the output at padded steps.
    """
    w_x, b_x, w_h, b_h = cell.stacked_weights()
    if cell.kind != "gru" and b_h is not None:  # b_h adds once to the projection
        b_x, b_h = b_x + b_h, None
    if (cell.kind == "lstm" and cell.peephole == "none" and mask is None and trace is None
            and x.shape[0] > 0):
        gx_all = F.linear(x, w_x, b_x)
        if reverse:
            gx_all = gx_all.flip(0)
        out, h_n, c_n = _LSTMSequence.apply(gx_all, state[0], state[1], w_h)
        return (out.flip(0) if reverse else out), (h_n, c_n)
    # unbind, not gx[t]: the backward of T selects would build T full-size zero tensors
    gx = F.linear(x, w_x, b_x).unbind(0)
    steps = x.shape[0]
    outputs: list[Tensor] = [x] * steps  # placeholders, all overwritten
    records: list[dict[str, Tensor]] = [{} for _ in range(steps)] if trace is not None else []
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        rec = records[t] if trace is not None else None
        new = cell.step(gx[t], state, w_h, b_h, rec)
        if mask is None:
            state = new
            outputs[t] = new[0]
        else:
            m = mask[t]
            state = tuple(torch.where(m, n, s) for n, s in zip(new, state, strict=True))
            outputs[t] = new[0].masked_fill(~m, 0.0)
            if rec is not None:
                for k, v in rec.items():
                    rec[k] = v.masked_fill(~m, 0.0)
        if trace is not None:
            trace.states.append(state)
    if trace is not None:
        if reverse:
            trace.states.reverse()
        names = list(records[0]) if records else []
        trace.values = {k: torch.stack([r[k] for r in records]) for k in names}
        trace.values["h"] = torch.stack(outputs)
        if cell.kind == "lstm":
            c_all = torch.stack([s[1] for s in trace.states])
            trace.values["c"] = c_all if mask is None else c_all.masked_fill(~mask, 0.0)
    return torch.stack(outputs), state


class RNNLayer(Recurrent):
    """:class:`Recurrent` with ``kind="rnn"`` (eq. 5.1); ``nonlinearity`` ``tanh``/``relu``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", **kwargs: object) -> None:
        super().__init__("rnn", input_size, hidden_size, num_layers,
                         nonlinearity=nonlinearity, **kwargs)  # type: ignore[arg-type]


class LSTMLayer(Recurrent):
    """:class:`Recurrent` with ``kind="lstm"`` (eqs. 5.9–5.14); optional ``peephole``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 peephole: bool | str | None = "none", **kwargs: object) -> None:
        super().__init__("lstm", input_size, hidden_size, num_layers,
                         peephole=peephole, **kwargs)  # type: ignore[arg-type]


class GRULayer(Recurrent):
    """:class:`Recurrent` with ``kind="gru"`` (eqs. 5.16–5.19)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 reset_after: bool = True, convention: str = "course",
                 **kwargs: object) -> None:
        super().__init__("gru", input_size, hidden_size, num_layers, reset_after=reset_after,
                         convention=convention, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------
# parameter counts (Remarque 5.6, "Tab. 5.6")


def param_count(
    kind: str, d_x: int, d_h: int, layers: int = 1, bidirectional: bool = False,
    two_biases: bool = True, *, bias: bool = True, peephole: bool | str | None = "none",
) -> int:
    """Number of parameters of a recurrent layer, from the course's formula.

    One cell of ``G`` gates (1 RNN, 4 LSTM, 3 GRU) on inputs of size ``d_in`` has
    ``G d_h (d_h + d_in + b)`` parameters, ``b`` = 1 with one bias per gate — the course's
    ``4 d_h (d_h + d_x + 1)`` (LSTM) and ``3 d_h (d_h + d_x + 1)`` (GRU) — 2 with
    PyTorch's ``bias_ih`` + ``bias_hh``, 0 with ``bias=False``. Layer ``l > 0`` reads
    ``d_in = D d_h``; a bidirectional layer has ``D = 2`` cells. The peephole LSTM adds
    ``3 d_h²`` (``full``) or ``3 d_h`` (``diagonal``) per cell.
    """
    kind = check_choice(kind, KINDS, "kind")
    g = len(GATES[kind])
    b = (2 if two_biases else 1) if bias else 0
    peep = _peephole_mode(peephole)
    if peep != "none" and kind != "lstm":
        raise ConfigError("peephole connections exist only for kind='lstm'.")
    extra = {"none": 0, "full": 3 * d_h * d_h, "diagonal": 3 * d_h}[peep]
    dirs = 2 if bidirectional else 1
    total = 0
    for layer in range(layers):
        d_in = d_x if layer == 0 else dirs * d_h
        total += dirs * (g * d_h * (d_h + d_in + b) + extra)
    return total


# ----------------------------------------------------------------------------------------
# PyTorch interop


_TORCH_CLASSES = {
    "rnn": (nn.RNN, nn.RNNCell), "lstm": (nn.LSTM, nn.LSTMCell), "gru": (nn.GRU, nn.GRUCell),
}


def _pairs(ours: nn.Module, theirs: nn.Module) -> list[tuple[_Cell, str]]:
    """``(our cell, PyTorch name suffix)`` pairs after checking the two are compatible."""
    cells: list[tuple[_Cell, str]]
    if isinstance(ours, Recurrent):
        kind = ours.kind
        if not isinstance(theirs, _TORCH_CLASSES[kind][0]):
            raise ValueError(f"{type(theirs).__name__} is not a {_TORCH_CLASSES[kind][0].__name__}")
        if getattr(theirs, "proj_size", 0):
            raise ValueError("LSTM with proj_size > 0 has no equivalent here")
        if (theirs.num_layers, theirs.bidirectional) != (ours.num_layers, ours.bidirectional):
            raise ValueError("num_layers / bidirectional differ")
        cells = [(ours.cell(k, bool(d)), f"_l{k}{'_reverse' if d else ''}")
                 for k in range(ours.num_layers) for d in range(ours.num_directions)]
    elif isinstance(ours, _Cell):
        kind = ours.kind
        if not isinstance(theirs, _TORCH_CLASSES[kind][1]):
            raise ValueError(f"{type(theirs).__name__} is not a {_TORCH_CLASSES[kind][1].__name__}")
        cells = [(ours, "")]
    else:
        raise ValueError(f"{type(ours).__name__} is not a profond recurrent cell or layer")
    cell0 = cells[0][0]
    if (theirs.input_size, theirs.hidden_size) != (cell0.input_size, cell0.hidden_size):
        raise ValueError("input_size / hidden_size differ")
    if cell0.bias == "one" or (cell0.bias == "two") != bool(theirs.bias):
        raise ValueError(f"bias={cell0.bias!r} has no PyTorch equivalent with "
                         f"bias={theirs.bias}: use bias='two' (True) or 'none' (False)")
    if kind == "rnn" and cell0.nonlinearity != theirs.nonlinearity:  # type: ignore[attr-defined]
        raise ValueError("nonlinearity differs")
    if kind == "lstm" and cell0.peephole != "none":  # type: ignore[attr-defined]
        raise ValueError("a peephole LSTM has no PyTorch equivalent")
    if kind == "gru" and not cell0.reset_after:  # type: ignore[attr-defined]
        raise ValueError("nn.GRU applies the reset gate after W_hn: use reset_after=True")
    return cells


def torch_parameter_map(
    ours: nn.Module, theirs: nn.Module,
) -> list[tuple[nn.Parameter, str, slice, float]]:
    """How our parameters sit in a PyTorch module: ``(our_param, their_name, rows, sign)``.

    ``our_param == sign * getattr(theirs, their_name)[rows]`` once copied, and the same
    holds for the gradients. ``ours``/``theirs``: :class:`Recurrent` and ``nn.RNN`` /
    ``nn.LSTM`` / ``nn.GRU``, or a cell and ``nn.RNNCell`` / ``nn.LSTMCell`` /
    ``nn.GRUCell``. Rows follow PyTorch's gate order (RNN ``h``; LSTM ``i, f, g, o``;
    GRU ``r, z, n``); ``sign`` is -1 for the GRU update gate with ``convention="course"``.
    """
    out = []
    for cell, suffix in _pairs(ours, theirs):
        d = cell.hidden_size
        for k, g in enumerate(cell.gates):
            rows = slice(k * d, (k + 1) * d)
            sign = -1.0 if (cell.kind == "gru" and g == "z"
                            and cell.convention == "course") else 1.0  # type: ignore[attr-defined]
            names = [(f"W_x{g}", "weight_ih"), (f"W_h{g}", "weight_hh")]
            if cell.bias == "two":
                names += [(f"b_x{g}", "bias_ih"), (f"b_h{g}", "bias_hh")]
            for ours_name, theirs_name in names:
                out.append((getattr(cell, ours_name), theirs_name + suffix, rows, sign))
    return out


@torch.no_grad()
def copy_from_torch(ours: nn.Module, theirs: nn.Module) -> nn.Module:
    """Load the weights of ``nn.RNN/LSTM/GRU`` (or their cells) into ours; returns ``ours``.

    After the copy both compute the same outputs, states and gradients (see
    :func:`torch_parameter_map` for the layout and the GRU sign flip).
    """
    for p, name, rows, sign in torch_parameter_map(ours, theirs):
        p.copy_(sign * getattr(theirs, name)[rows])
    return ours


@torch.no_grad()
def copy_to_torch(ours: nn.Module, theirs: nn.Module) -> nn.Module:
    """The reverse of :func:`copy_from_torch`: our weights into the PyTorch module."""
    for p, name, rows, sign in torch_parameter_map(ours, theirs):
        getattr(theirs, name)[rows].copy_(sign * p)
    return theirs


# ----------------------------------------------------------------------------------------
# truncated BPTT


def tbptt_chunks(sequence: Tensor, k: int, batch_first: bool = False) -> list[Tensor]:
    """Split a long sequence into chunks of ``k`` time steps (the last may be shorter).

    Truncated BPTT runs the chunks in order, carrying the state from one to the next but
    detaching it (:func:`detach_state`), so the gradient of a chunk's loss stops at the
    chunk's first step: the sum (5.4) over ``k`` is cut to the last ``k`` steps at most.
    """
    if k < 1:
        raise ConfigError(f"k={k} must be >= 1.")
    return list(sequence.split(k, dim=1 if batch_first else 0))


def detach_state(state: State | None) -> State | None:
    """The state (``h``, ``(h, c)`` or ``None``) cut from the autograd graph."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


def tbptt_forward(
    layer: Recurrent, sequence: Tensor, k: int, state: State | None = None,
) -> Iterator[tuple[Tensor, State]]:
    """Stateful run over a long stream: yields ``(output_chunk, state)`` chunk by chunk.

    The state entering each chunk is detached from the previous one, so a backward pass
    on a chunk's loss (done by the caller between two ``next``) stays inside the chunk.
    """
    for chunk in tbptt_chunks(sequence, k, layer.batch_first):
        out, state = layer(chunk, detach_state(state))
        yield out, state
