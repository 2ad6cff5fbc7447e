r"""The Transformer block and its parts (course ch. 7, §7.2; §7.10 for RMSNorm, SwiGLU, MoE).

::

    FFN(x) = W_2 σ(W_1 x + b_1) + b_2                                       (7.8)
    Post-Norm (def. 7.5):  x = LN(x + MHA(x));   x = LN(x + FFN(x))         (7.9)
    Pre-Norm  (def. 7.6):  x = x + MHA(LN(x));   x = x + FFN(LN(x))         (7.10)

* ``σ``: ReLU (the original Transformer), GELU (BERT; ``gelu_tanh`` is GPT-2's tanh
  approximation) or SwiGLU (``W_2 (SiLU(W_g x) ⊙ W_1 x)``, Llama; one more ``d × d_ff`` matrix).
* ``LN``: LayerNorm or RMSNorm (``x / rms(x) · γ``, no centring, no bias; Llama).
* A decoder block of an encoder-decoder (§7.4) adds cross-attention over the encoder's
  output between the two sub-layers, with its own residual and norm.
* Mixture of experts (§7.10, Mixtral): the FFN becomes ``E`` FFNs and a router; each token
  goes to its top-``k`` experts, mixed by the softmax of their router logits. A
  load-balancing loss (Switch Transformer, Fedus et al. 2022) ``E · Σ_e f_e P_e`` (``f_e``:
  share of the routed slots sent to ``e``, ``P_e``: mean router probability of ``e``) is 1 for
  a uniform router and larger otherwise; :func:`moe_loss` sums it over a model.

Parameters of one block (exercise 7.3), ``d`` = ``d_model``: ``4d²`` attention + ``2·d·d_ff``
FFN + ``4d`` for the two LayerNorms, plus the biases ``4d + d_ff + d``
(:func:`block_parameters` for every option).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import check_choice
from ..errors import ConfigError
from .attention import KVCache, MultiHeadAttention

__all__ = ["FFN_ACTIVATIONS", "NORM_KINDS", "Block", "FeedForward", "MoEFeedForward", "RMSNorm",
           "block_parameters", "make_norm", "moe_loss"]

FFNActivation = Literal["relu", "gelu", "gelu_tanh", "swiglu"]
FFN_ACTIVATIONS: tuple[str, ...] = get_args(FFNActivation)
NormKind = Literal["layer", "rms"]
NORM_KINDS: tuple[str, ...] = get_args(NormKind)


class RMSNorm(nn.Module):
    """``y = x / sqrt(mean(x²) + ε) · γ`` over the last dimension (Zhang & Sennrich 2019)."""

    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: Tensor) -> Tensor:
        rms = x.float().pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * rms).to(x.dtype) * self.weight


def make_norm(kind: str, d: int, eps: float = 1e-5) -> nn.Module:
    """LayerNorm (``γ``, ``β``: ``2d`` parameters) or RMSNorm (``γ``: ``d``)."""
    check_choice(kind, NORM_KINDS, "norm")
    return nn.LayerNorm(d, eps=eps) if kind == "layer" else RMSNorm(d, eps)


class FeedForward(nn.Module):
    """``FFN(x) = fc2(drop(σ(fc1 x)))`` (eq. 7.8); SwiGLU: ``fc2(drop(SiLU(fc_gate x) ⊙ fc1 x))``."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0,
                 bias: bool = True) -> None:
        super().__init__()
        self.activation = check_choice(activation, FFN_ACTIVATIONS, "activation")
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)  # W_1, b_1  (7.8)
        self.fc_gate = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None  # W_g
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)  # W_2, b_2  (7.8)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)  # (B, N, d_ff)  W_1 x + b_1
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        else:
            h = F.silu(self.fc_gate(x)) * h  # SwiGLU
        return self.fc2(self.drop(h))  # (B, N, d)


class MoEFeedForward(nn.Module):
    """Top-``top_k`` of ``num_experts`` :class:`FeedForward` experts per token (§7.10, Mixtral).

    ``router``: ``d → E`` logits ``r``; token ``t`` goes to ``T_t = top-k(r_t)`` and gets
    ``Σ_{e ∈ T_t} softmax(r_t[T_t])_e · FFN_e(x_t)`` (``k = 1``: ``softmax(r_t)_e · FFN_e(x_t)``,
    as in the Switch Transformer, so that the router learns from the task loss too). After each forward ``aux_loss`` holds the
    load-balancing loss ``E · Σ_e f_e P_e`` and ``load`` the share of slots per expert.
    """

    def __init__(self, d_model: int, d_ff: int, num_experts: int, top_k: int = 2, activation: str = "gelu",
                 dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if num_experts < 2 or not 1 <= top_k <= num_experts:
            raise ConfigError(f"mixture of experts: need num_experts >= 2 and 1 <= top_k <= num_experts, got "
                              f"num_experts={num_experts}, top_k={top_k}.")
        self.num_experts, self.top_k = num_experts, top_k
        self.router = nn.Linear(d_model, num_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(d_model, d_ff, activation, dropout, bias)
                                     for _ in range(num_experts))
        self.aux_loss: Tensor | None = None
        self.load: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (M, d), M = B·N tokens
        logits = self.router(flat).float()  # (M, E)
        top, idx = logits.topk(self.top_k, dim=-1)  # (M, k)
        if self.top_k == 1:  # Switch Transformer: the router's probability, so that it gets a gradient
            gates = F.softmax(logits, dim=-1).gather(1, idx).to(x.dtype)  # (M, 1)
        else:  # Mixtral: softmax over the chosen experts' logits
            gates = F.softmax(top, dim=-1).to(x.dtype)  # (M, k)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel():
                out.index_add_(0, rows, expert(flat[rows]) * gates[rows, slot, None])
        e = self.num_experts
        f = torch.bincount(idx.reshape(-1), minlength=e).float() / idx.numel()  # f_e (no gradient)
        p = F.softmax(logits, dim=-1).mean(0)  # P_e
        self.aux_loss = e * (f * p).sum()
        self.load = f.detach()
        return out.view(shape)


def moe_loss(model: nn.Module) -> Tensor | float:
    """Sum of the load-balancing losses of the last forward of every :class:`MoEFeedForward`
    in ``model`` (0.0 when it has none)."""
    total: Tensor | float = 0.0
    for m in model.modules():
        if isinstance(m, MoEFeedForward) and m.aux_loss is not None:
            total = total + m.aux_loss
    return total


class Block(nn.Module):
    r"""One Transformer block, Pre-Norm (``norm_first``, eq. 7.10) or Post-Norm (eq. 7.9).

    Modules: ``attn`` (self-attention), ``norm1``, ``cross_attn`` + ``norm_cross`` (``cross``
    only), ``ffn`` (:class:`FeedForward` or :class:`MoEFeedForward`), ``norm2``. ``head_mask``
    ``(H,)`` (a buffer of ones) multiplies each self-attention head before ``W^O`` (eq. 6.14):
    a 0 prunes the head.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, norm_first: bool = True,
                 activation: str = "gelu", norm: str = "layer", norm_eps: float = 1e-5, dropout: float = 0.0,
                 attn_dropout: float = 0.0, bias: bool = True, cross: bool = False, impl: str = "sdpa",
                 kv_groups: int | None = None, moe_experts: int = 0, moe_top_k: int = 2) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(d_model, num_heads, kv_groups=kv_groups, bias=bias, dropout=attn_dropout,
                                       impl=impl)
        self.norm1 = make_norm(norm, d_model, norm_eps)
        self.cross_attn = self.norm_cross = None
        if cross:
            self.cross_attn = MultiHeadAttention(d_model, num_heads, bias=bias, dropout=attn_dropout,
                                                 impl="sdpa" if impl in ("tiled", "linear", "local") else impl)
            self.norm_cross = make_norm(norm, d_model, norm_eps)
        if moe_experts:
            self.ffn: nn.Module = MoEFeedForward(d_model, d_ff, moe_experts, moe_top_k, activation, dropout, bias)
        else:
            self.ffn = FeedForward(d_model, d_ff, activation, dropout, bias)
        self.norm2 = make_norm(norm, d_model, norm_eps)
        self.drop = nn.Dropout(dropout)
        # an analysis tool (head pruning), not a trained weight: not saved in checkpoints
        self.register_buffer("head_mask", torch.ones(num_heads), persistent=False)
        self.attn.out_proj.register_forward_pre_hook(self._mask_heads)

    def set_head_mask(self, mask: Tensor | list[float]) -> None:
        """Multiply head ``i``'s output by ``mask[i]`` (0 = pruned, 1 = kept)."""
        mask = torch.as_tensor(mask, dtype=self.head_mask.dtype, device=self.head_mask.device)
        if mask.shape != self.head_mask.shape:
            raise ConfigError(f"head mask of shape {tuple(mask.shape)}: the layer has {self.head_mask.numel()} "
                              f"heads, pass ({self.head_mask.numel()},).")
        self.head_mask.copy_(mask)

    def _mask_heads(self, _module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...] | None:
        """``Concat(m_1 head_1, …, m_h head_h)``: each head's output scaled by its mask."""
        if bool((self.head_mask == 1).all()):  # no pruning: leave the input as it is
            return None
        (heads,) = args  # (B, N, H·d_h)
        b, n, _ = heads.shape
        scaled = heads.view(b, n, self.head_mask.numel(), -1) * self.head_mask.to(heads.dtype)[:, None]
        return (scaled.view(b, n, -1),)

    def forward(self, x: Tensor, *, mask: Tensor | None = None, causal: bool = False,
                cache: KVCache | None = None, memory: Tensor | None = None, memory_mask: Tensor | None = None,
                need_weights: bool = False) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """``x`` ``(B, N, d)`` → ``(x, self-attention weights (B, H, N, Nk) | None, cross weights | None)``.

        ``mask``: self-attention mask (``(B, Nk)`` padding, or broadcastable to ``(B, H, N, Nk)``,
        bool or additive float: ALiBi); ``memory`` ``(B, S, d)`` and ``memory_mask`` ``(B, S)``: the
        encoder output a ``cross`` block attends to.
        """
        cw = None
        if self.norm_first:  # Pre-Norm (7.10)
            a, w = self.attn(self.norm1(x), mask=mask, causal=causal, cache=cache, need_weights=need_weights)
            x = x + self.drop(a)
            if self.cross_attn is not None:
                c, cw = self.cross_attn(self.norm_cross(x), memory, mask=memory_mask, need_weights=need_weights)
                x = x + self.drop(c)
            x = x + self.drop(self.ffn(self.norm2(x)))
        else:  # Post-Norm (7.9)
            a, w = self.attn(x, mask=mask, causal=causal, cache=cache, need_weights=need_weights)
            x = self.norm1(x + self.drop(a))
            if self.cross_attn is not None:
                c, cw = self.cross_attn(x, memory, mask=memory_mask, need_weights=need_weights)
                x = self.norm_cross(x + self.drop(c))
            x = self.norm2(x + self.drop(self.ffn(x)))
        return x, w, cw


def block_parameters(d: int, d_ff: int, *, bias: bool = True, activation: str = "gelu", norm: str = "layer",
                     cross: bool = False, num_heads: int = 1, kv_groups: int | None = None,
                     moe_experts: int = 0) -> int:
    """Closed-form parameter count of one :class:`Block` (exercise 7.3: ``4d² + 2·d·d_ff + 4d``
    plus biases ``4d + d_ff + d``, for plain multi-head attention, a two-matrix FFN and LayerNorm)."""
    d_kv = d if kv_groups is None else kv_groups * (d // num_heads)
    attn = 2 * d * d + 2 * d * d_kv + (2 * d + 2 * d_kv if bias else 0)  # W^Q, W^O, W^K, W^V
    n_mat = 3 if activation == "swiglu" else 2
    ffn = n_mat * d * d_ff + ((n_mat - 1) * d_ff + d if bias else 0)
    if moe_experts:
        ffn = moe_experts * ffn + d * moe_experts  # experts + router
    norm_p = 2 * d if norm == "layer" else d
    total = attn + ffn + 2 * norm_p
    if cross:
        total += 4 * d * d + (4 * d if bias else 0) + norm_p
    return total
