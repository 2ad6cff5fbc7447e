"""Curvature of a loss (course §11.8.1, flat vs sharp minima; exercise 11.6 item 3 measures the
"sharpness" of a minimum as the largest eigenvalue of the Hessian): Hessian-vector products,
the top Hessian eigenvalue by power iteration and Hutchinson's estimator of the Hessian trace.

``loss_fn(params)`` is any function of a sequence of tensors returning a scalar (for a module,
``lambda ps: loss(functional_call(model, dict(zip(names, ps)), x), y)``); ``params`` is that
sequence (its values are used, detached: nothing is written into them). Vectors ``v`` are
sequences of tensors shaped like ``params``. The Hessian is never formed: each product costs
one double backward (about two gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

Params = Sequence[torch.Tensor]
LossFn = Callable[[Params], torch.Tensor]


def _leaves(params: Params) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_(True) for p in params]


def _dot(u: Params, v: Params) -> torch.Tensor:
    return sum((a * b).sum() for a, b in zip(u, v, strict=True))


def hvp(loss_fn: LossFn, params: Params, v: Params) -> list[torch.Tensor]:
    """``H v`` with ``H = ∇²L(θ)``, by double backward: ``∇_θ ⟨∇_θ L(θ), v⟩``."""
    ps = _leaves(params)
    grads = torch.autograd.grad(loss_fn(ps), ps, create_graph=True)
    hv = torch.autograd.grad(grads, ps, grad_outputs=[t.detach() for t in v], allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(ps, hv, strict=True)]


def _random_like(params: Params, g: torch.Generator, kind: str) -> list[torch.Tensor]:
    out = []
    for p in params:
        if kind == "rademacher":
            r = torch.randint(0, 2, p.shape, generator=g).to(p.dtype) * 2 - 1
        else:
            r = torch.randn(p.shape, generator=g, dtype=p.dtype)
        out.append(r.to(p.device))
    return out


def top_hessian_eigenvalue(loss_fn: LossFn, params: Params, iters: int = 100, seed: int = 0,
                           tol: float = 0.0) -> tuple[float, list[torch.Tensor]]:
    """Eigenvalue of ``∇²L`` of largest magnitude, and its unit eigenvector, by power iteration.

    ``v ← Hv / ‖Hv‖`` from a Gaussian start (``seed``); the eigenvalue is the Rayleigh quotient
    ``vᵀHv`` (signed). The error in the quotient shrinks like ``(λ₂/λ₁)^{2k}``, so a gap
    between the two largest |eigenvalues| is needed for a quick answer. Stops after ``iters``
    products, or earlier once the quotient changes by less than ``tol`` (relative).
    """
    g = torch.Generator().manual_seed(seed)
    v = _random_like(params, g, "gaussian")
    norm = torch.sqrt(_dot(v, v))
    v = [t / norm for t in v]
    lam = math.nan
    for _ in range(iters):
        hv = hvp(loss_fn, params, v)
        new = float(_dot(v, hv))
        norm = torch.sqrt(_dot(hv, hv))
        if norm == 0:
            return 0.0, v
        v = [t / norm for t in hv]
        done = tol > 0 and math.isfinite(lam) and abs(new - lam) <= tol * abs(new)
        lam = new
        if done:
            break
    return float(_dot(v, hvp(loss_fn, params, v))), v


def hutchinson_trace(loss_fn: LossFn, params: Params, n_samples: int = 100,
                     seed: int = 0) -> tuple[float, float]:
    """Hutchinson's estimate of ``tr ∇²L``: the mean of ``zᵀHz`` over Rademacher probes z.

    ``E[zᵀHz] = tr H`` since ``E[zzᵀ] = I``; returns the mean over ``n_samples`` probes and its
    standard error (sample std / √n_samples); the variance of one probe is
    ``2 Σ_{i≠j} H_ij²`` (the diagonal contributes none with Rademacher signs).
    """
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(n_samples):
        z = _random_like(params, g, "rademacher")
        vals.append(float(_dot(z, hvp(loss_fn, params, z))))
    t = torch.tensor(vals, dtype=torch.float64)
    se = float(t.std(unbiased=True) / math.sqrt(n_samples)) if n_samples > 1 else math.nan
    return float(t.mean()), se


def module_loss_fn(net: nn.Module, state: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                   loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                   ) -> tuple[LossFn, list[torch.Tensor]]:
    """``(loss_fn, params)`` for the functions above: the loss of ``net`` on ``(x, y)`` as a
    function of its parameters, taken from ``state`` (a state dict); buffers (BatchNorm's
    running statistics) are held at their values in ``state`` and ``net`` is put in eval mode,
    so the function is deterministic."""
    net.eval()
    names = [n for n, _ in net.named_parameters()]
    fixed = {k: v for k, v in state.items() if k not in names}

    def loss_fn(ps: Params) -> torch.Tensor:
        return loss(functional_call(net, {**fixed, **dict(zip(names, ps, strict=True))}, (x,)), y)

    return loss_fn, [state[n] for n in names]
