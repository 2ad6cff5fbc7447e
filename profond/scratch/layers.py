"""Normalisation and dropout layers with their backward pass written by hand.

Each layer is a :class:`torch.autograd.Function` whose ``backward`` applies the
closed-form gradient of the course (§3.4–3.6, in French) with plain tensor arithmetic — autograd is never used inside a backward —
plus a thin :class:`torch.nn.Module` that owns the parameters and buffers.

* §3.5 Batch Normalization, forward eqs. (3.11)–(3.14), backward (3.15)–(3.20)
  → :class:`BatchNormFunction`, :class:`BatchNorm`
* §3.6 Layer Normalization, eqs. (3.21)–(3.22) → :class:`LayerNormFunction`, :class:`LayerNorm`
* RMSNorm (LayerNorm without centring, Zhang & Sennrich 2019) → :class:`RMSNormFunction`,
  :class:`RMSNorm`
* §3.4 Dropout, inverted dropout (Théorème 3.4) → :class:`DropoutFunction`, :class:`Dropout`

Outputs, gradients and running statistics match ``nn.BatchNorm1d/2d``, ``nn.LayerNorm``,
``nn.RMSNorm`` to 1e-10 in float64 (see ``tests/test_scratch_layers.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "BatchNormFunction", "BatchNorm",
    "LayerNormFunction", "LayerNorm",
    "RMSNormFunction", "RMSNorm",
    "DropoutFunction", "Dropout",
]


# --------------------------------------------------------------------------- BatchNorm


def _channel_view(t: Tensor, ndim: int) -> Tensor:
    """Reshape a per-channel vector ``(C,)`` to broadcast against ``(B, C, *spatial)``."""
    return t.reshape(1, -1, *([1] * (ndim - 2)))


class BatchNormFunction(torch.autograd.Function):
    r"""Batch normalisation over every dimension except the channel dimension 1.

    ``apply(x, weight, bias, running_mean, running_var, training, eps)``; ``weight`` and
    ``bias`` may be ``None`` (γ = 1, β = 0). For a channel, the "mini-batch"
    ``{x_1, …, x_m}`` of the course is every value of that channel in the batch, so
    ``m = B`` for ``(B, C)`` inputs and ``m = B·H·W`` for ``(B, C, H, W)`` inputs.

    Training (course §3.5.2)::

        µ_B = (1/m) Σ x_i                       (3.11)
        σ²_B = (1/m) Σ (x_i − µ_B)²             (3.12)  biased variance
        x̂_i = (x_i − µ_B) / √(σ²_B + ϵ)        (3.13)
        y_i = γ x̂_i + β                         (3.14)

    Evaluation: µ and σ² are the running buffers, constants for autograd, so the
    layer is an affine map and ``∂L/∂x = γ δ / √(σ²_run + ϵ)``.

    The running buffers are *not* touched here; :class:`BatchNorm` updates them.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, eps):
        dims = [0, *range(2, x.dim())]
        if training:
            mu = x.mean(dim=dims)                                        # (3.11)
            var = ((x - _channel_view(mu, x.dim())) ** 2).mean(dim=dims)  # (3.12)
        else:
            # copies: the buffers may be updated in place before backward runs
            mu, var = running_mean.clone(), running_var.clone()
        mu_b, var_b = _channel_view(mu, x.dim()), _channel_view(var, x.dim())
        x_hat = (x - mu_b) / torch.sqrt(var_b + eps)                      # (3.13)
        y = x_hat
        if weight is not None:
            y = y * _channel_view(weight, x.dim())
        if bias is not None:
            y = y + _channel_view(bias, x.dim())                          # (3.14)
        ctx.save_for_backward(x, weight, mu, var)
        ctx.training, ctx.eps = training, eps
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, delta):
        x, weight, mu, var = ctx.saved_tensors
        nd, eps = x.dim(), ctx.eps
        dims = [0, *range(2, nd)]
        m = x.numel() // x.shape[1]                 # values per channel
        xc = x - _channel_view(mu, nd)              # x_i − µ_B
        inv_std = 1.0 / torch.sqrt(_channel_view(var, nd) + eps)
        x_hat = xc * inv_std

        grad_w = (delta * x_hat).sum(dim=dims) if weight is not None else None   # (3.15)
        grad_b = delta.sum(dim=dims) if ctx.has_bias else None                   # (3.16)

        grad_x = None
        if ctx.needs_input_grad[0]:
            d_xhat = delta * _channel_view(weight, nd) if weight is not None else delta  # (3.17)
            if ctx.training:
                # (3.18): ∂L/∂σ² = Σ ∂L/∂x̂_i (x_i − µ) (−1/2) (σ² + ϵ)^(−3/2)
                d_var = (d_xhat * xc).sum(dim=dims, keepdim=True) * (-0.5) * inv_std**3
                # (3.19): ∂L/∂µ = Σ ∂L/∂x̂_i · (−1/√(σ²+ϵ)). (The full chain rule adds
                # ∂L/∂σ² · (−2/m) Σ (x_i − µ), which is exactly 0: Σ (x_i − µ) = 0.)
                d_mu = (d_xhat * -inv_std).sum(dim=dims, keepdim=True)
                # (3.20): ∂L/∂x_i = ∂L/∂x̂_i /√(σ²+ϵ) + ∂L/∂σ² · 2(x_i − µ)/m + ∂L/∂µ / m
                grad_x = d_xhat * inv_std + d_var * 2.0 * xc / m + d_mu / m
            else:
                grad_x = d_xhat * inv_std           # µ, σ² are constants in eval mode
        return grad_x, grad_w, grad_b, None, None, None, None


class BatchNorm(nn.Module):
    r"""Batch normalisation layer (course §3.5) for ``(B, C)`` / ``(B, C, L)`` or ``(B, C, H, W)``.

    Behaves like ``nn.BatchNorm1d`` (``dims=1``) or ``nn.BatchNorm2d`` (``dims=2``):

    * training: normalise with the batch mean and the *biased* variance (3.12), then
      update ``running_mean`` / ``running_var`` as exponential moving averages
      ``r ← (1 − momentum) r + momentum · stat`` where the variance fed to
      ``running_var`` is the *unbiased* one, ``σ²_B · m / (m − 1)`` (PyTorch's choice:
      the running value estimates the population variance used at inference);
      ``momentum=None`` gives the cumulative average ``1 / num_batches_tracked``;
    * evaluation: normalise with the running buffers (no batch dependence).

    Running statistics are always tracked (no ``track_running_stats=False`` mode).
    """

    def __init__(self, num_features: int, dims: int = 1, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True) -> None:
        super().__init__()
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        self.num_features, self.dims, self.eps, self.momentum = num_features, dims, eps, momentum
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def _check_input(self, x: Tensor) -> None:
        allowed = (2, 3) if self.dims == 1 else (4,)
        if x.dim() not in allowed:
            raise ValueError(f"BatchNorm(dims={self.dims}) expects a {' or '.join(map(str, allowed))}"
                             f"-D input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels, got {x.shape[1]}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.training:
            m = x.numel() // x.shape[1]
            if m < 2:
                raise ValueError("BatchNorm needs more than 1 value per channel when training")
            with torch.no_grad():
                dims = [0, *range(2, x.dim())]
                mean = x.mean(dim=dims)
                var_unbiased = x.var(dim=dims, correction=1)
                self.num_batches_tracked += 1
                f = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - f).add_(f * mean)
                self.running_var.mul_(1 - f).add_(f * var_unbiased)
        return BatchNormFunction.apply(x, self.weight, self.bias, self.running_mean,
                                       self.running_var, self.training, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, dims={self.dims}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}")


# --------------------------------------------------------------------------- LayerNorm


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, int):
        return (normalized_shape,)
    return tuple(int(s) for s in normalized_shape)


class LayerNormFunction(torch.autograd.Function):
    r"""Layer normalisation over the last ``k`` dimensions (course §3.6, eqs. 3.21–3.22).

    ``apply(x, weight, bias, k, eps)``: for each sample (each index of the leading
    dimensions), with ``d`` the number of normalised values::

        µ = (1/d) Σ_j x_j,   σ² = (1/d) Σ_j (x_j − µ)²          (3.21)
        LN(x) = γ ⊙ (x − µ)/√(σ² + ϵ) + β                       (3.22)

    Backward: the same chain rule as BatchNorm (3.17)–(3.20), with the sums running
    over the ``d`` features of one sample instead of the batch; collected, it reads
    ``∂L/∂x = (1/√(σ²+ϵ)) (g − mean(g) − x̂ · mean(g ⊙ x̂))`` with ``g = γ ⊙ δ``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, k, eps):
        dims = tuple(range(x.dim() - k, x.dim()))
        mu = x.mean(dim=dims, keepdim=True)
        var = ((x - mu) ** 2).mean(dim=dims, keepdim=True)      # biased, per sample
        inv_std = 1.0 / torch.sqrt(var + eps)
        x_hat = (x - mu) * inv_std
        y = x_hat
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        ctx.save_for_backward(x_hat, inv_std, weight)
        ctx.k, ctx.has_bias = k, bias is not None
        return y

    @staticmethod
    def backward(ctx, delta):
        x_hat, inv_std, weight = ctx.saved_tensors
        k = ctx.k
        dims = tuple(range(delta.dim() - k, delta.dim()))
        lead = tuple(range(delta.dim() - k))                    # batch-like dimensions
        grad_w = (delta * x_hat).sum(dim=lead) if weight is not None else None
        grad_b = delta.sum(dim=lead) if ctx.has_bias else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            g = delta * weight if weight is not None else delta  # ∂L/∂x̂
            grad_x = inv_std * (g - g.mean(dim=dims, keepdim=True)
                                - x_hat * (g * x_hat).mean(dim=dims, keepdim=True))
        return grad_x, grad_w, grad_b, None, None


class LayerNorm(nn.Module):
    """Layer normalisation (course §3.6), same interface and numbers as ``nn.LayerNorm``.

    Identical in training and evaluation (no batch statistics, no buffers).
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
            self.bias = nn.Parameter(torch.zeros(self.normalized_shape))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"trailing shape {tuple(x.shape[-k:])} != {self.normalized_shape}")
        return LayerNormFunction.apply(x, self.weight, self.bias, k, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


# --------------------------------------------------------------------------- RMSNorm


class RMSNormFunction(torch.autograd.Function):
    r"""RMS normalisation over the last ``k`` dimensions: LayerNorm without the mean.

    ``apply(x, weight, k, eps)``; per sample, with ``d`` normalised values::

        r = 1 / √((1/d) Σ_j x_j² + ϵ),   y = γ ⊙ x · r

    Backward (``ŷ = x r``, ``g = γ ⊙ δ``; using ``∂r/∂x_j = −r³ x_j / d``)::

        ∂L/∂x = r (g − ŷ · mean(g ⊙ ŷ)),   ∂L/∂γ = Σ_batch δ ⊙ ŷ
    """

    @staticmethod
    def forward(ctx, x, weight, k, eps):
        dims = tuple(range(x.dim() - k, x.dim()))
        r = 1.0 / torch.sqrt((x * x).mean(dim=dims, keepdim=True) + eps)
        y_hat = x * r
        ctx.save_for_backward(y_hat, r, weight)
        ctx.k = k
        return y_hat * weight if weight is not None else y_hat

    @staticmethod
    def backward(ctx, delta):
        y_hat, r, weight = ctx.saved_tensors
        k = ctx.k
        dims = tuple(range(delta.dim() - k, delta.dim()))
        lead = tuple(range(delta.dim() - k))
        grad_w = (delta * y_hat).sum(dim=lead) if weight is not None else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            g = delta * weight if weight is not None else delta
            grad_x = r * (g - y_hat * (g * y_hat).mean(dim=dims, keepdim=True))
        return grad_x, grad_w, None, None


class RMSNorm(nn.Module):
    """RMS normalisation, same interface and numbers as ``nn.RMSNorm``.

    ``eps=None`` uses ``torch.finfo(x.dtype).eps`` of the *input* dtype, as PyTorch does.
    There is no bias (``elementwise_affine`` only adds the scale γ).
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float | None = None,
                 elementwise_affine: bool = True) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"trailing shape {tuple(x.shape[-k:])} != {self.normalized_shape}")
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return RMSNormFunction.apply(x, self.weight, k, eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


# --------------------------------------------------------------------------- Dropout


class DropoutFunction(torch.autograd.Function):
    r"""Inverted dropout with a given Bernoulli keep-mask (course §3.4, Théorème 3.4).

    ``apply(x, mask, p)`` with ``mask`` a boolean tensor (True = kept, drawn with
    probability ``1 − p``)::

        y = x ⊙ mask / (1 − p),        ∂L/∂x = δ ⊙ mask / (1 − p)

    Dividing by ``1 − p`` makes ``E[y] = x`` (Théorème 3.4: ``E[mask ⊙ x] = (1 − p) x``),
    so nothing needs rescaling at inference. The mask is sampled by :class:`Dropout`
    and passed in, which keeps this function deterministic (and gradcheck-able);
    it is saved for backward. ``p = 1`` drops everything (scale 0).
    """

    @staticmethod
    def forward(ctx, x, mask, p):
        scale = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x * mask.to(x.dtype) * scale

    @staticmethod
    def backward(ctx, delta):
        (mask,) = ctx.saved_tensors
        return delta * mask.to(delta.dtype) * ctx.scale, None, None


class Dropout(nn.Module):
    """Inverted dropout (course §3.4): drop each value with probability ``p`` in training.

    Evaluation mode (and ``p = 0``) is the identity.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0 or math.isnan(p):
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = torch.rand(x.shape, device=x.device) >= self.p   # keep with prob. 1 − p
        return DropoutFunction.apply(x, mask, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
