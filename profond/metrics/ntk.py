"""Neural tangent kernel (course §11.5): the empirical kernel of any network, and the analytic
infinite-width kernel of the two-layer ReLU network of exercise 11.3.

* :func:`empirical_ntk` — ``Θ(x, x′) = Σ_p ∂f(x)/∂θ_p · ∂f(x′)/∂θ_p`` (definition 11.12,
  eq. 11.9) from per-example Jacobians (``torch.func``: ``functional_call`` + ``vmap`` +
  ``jacrev``), for any ``nn.Module``; only the parameters that require a gradient count as θ.
* :func:`exercise_net` — ``f(x) = (1/√n) Σ_j a_j ReLU(w_jᵀx)``, ``a_j, w_j ~ N(0, 1)``
  (exercise 11.3, "NTK parametrisation": standard Gaussian weights, the 1/√n in front).
* :func:`arccos_ntk` — its limit as n → ∞ (theorem 11.13), with the arc-cosine kernels of
  order 0 and 1 (Cho & Saul, 2009).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

Wrt = Literal["w", "a", "both"]


def _jacobian(model: nn.Module, x: torch.Tensor, params: dict[str, torch.Tensor],
              buffers: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-example Jacobian ``∂f(x_i)/∂θ`` as one ``(N, K, P)`` tensor (outputs flattened)."""

    def f(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        # one example at a time (a batch of 1), so the model sees its usual (B, ...) input
        return functional_call(model, (p, buffers), (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, x)  # name -> (N, K, *shape)
    n = x.shape[0]
    return torch.cat([j.reshape(n, j.shape[1], -1) for j in jac.values()], dim=2)


def empirical_ntk(model: nn.Module, x1: torch.Tensor, x2: torch.Tensor | None = None) -> torch.Tensor:
    """Empirical NTK of ``model`` at its current parameters (definition 11.12, eq. 11.9).

    ``Θ(x, x′) = Σ_p ∂f(x)/∂θ_p ∂f(x′)/∂θ_p``, the sum running over every parameter with
    ``requires_grad`` (freeze one, as exercise 11.3 freezes ``a``, to leave it out). Returns
    ``(N1, N2)`` for a scalar-output model (output ``(B,)`` or ``(B, 1)``); for K outputs, the
    full ``(N1, N2, K, K)`` kernel ``Θ_kl(x, x′) = ⟨∂f_k(x)/∂θ, ∂f_l(x′)/∂θ⟩`` (no trace taken:
    ``.diagonal(dim1=2, dim2=3).sum(-1)`` gives it). ``x2=None`` means ``x2 = x1``. The model is
    evaluated one example at a time, so a layer mixing the batch (BatchNorm in train mode) is
    not supported: call ``model.eval()`` first.
    """
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    j1 = _jacobian(model, x1, params, buffers)
    j2 = j1 if x2 is None else _jacobian(model, x2, params, buffers)
    theta = torch.einsum("ikp,jlp->ijkl", j1, j2)
    if theta.shape[2] == 1:
        return theta[:, :, 0, 0]
    return theta


class TwoLayerReLU(nn.Module):
    """``f(x) = (1/√n) Σ_j a_j ReLU(w_jᵀx)`` of exercise 11.3 (n = ``width``, no biases).

    ``w`` (n, d) is a parameter; ``a`` (n,) is a parameter when ``train_a`` else a buffer
    (the exercise keeps it fixed, so its NTK sums over the ``w_j`` only).
    """

    def __init__(self, in_features: int, width: int, *, train_a: bool = False, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(width, in_features, generator=g, dtype=dtype)
        a = torch.randn(width, generator=g, dtype=dtype)
        self.w = nn.Parameter(w)
        if train_a:
            self.a = nn.Parameter(a)
        else:
            self.register_buffer("a", a)
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ self.w.T) @ self.a / math.sqrt(self.width)


def exercise_net(in_features: int, width: int, *, train_a: bool = False, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> TwoLayerReLU:
    """The network of exercise 11.3 with ``a_j, w_j ~ N(0, 1)`` drawn from ``seed``."""
    return TwoLayerReLU(in_features, width, train_a=train_a, seed=seed, dtype=dtype)


def _angle(x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n1 = x1.norm(dim=1)[:, None]
    n2 = x2.norm(dim=1)[None, :]
    dot = x1 @ x2.T
    cos = (dot / (n1 * n2)).clamp(-1.0, 1.0)
    return dot, n1 * n2, torch.arccos(cos)


def arccos_k0(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``E_w[ReLU′(wᵀx) ReLU′(wᵀx′)] = (π − θ)/(2π)``, w ~ N(0, I) (arc-cosine kernel of order 0)."""
    _, _, theta = _angle(x1, x2)
    return (math.pi - theta) / (2 * math.pi)


def arccos_k1(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``E_w[ReLU(wᵀx) ReLU(wᵀx′)] = ‖x‖‖x′‖ (sin θ + (π − θ) cos θ)/(2π)`` (order 1)."""
    _, norms, theta = _angle(x1, x2)
    return norms * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta)) / (2 * math.pi)


def arccos_ntk(x1: torch.Tensor, x2: torch.Tensor | None = None, wrt: Wrt = "both") -> torch.Tensor:
    """Infinite-width NTK ``Θ*(x, x′)`` of :class:`TwoLayerReLU` (exercise 11.3, theorem 11.13).

    From ``f = (1/√n) Σ_j a_j σ(w_jᵀx)``: ``∂f/∂a_j = σ(w_jᵀx)/√n`` and
    ``∂f/∂w_j = a_j σ′(w_jᵀx) x/√n``, so the empirical kernel is an average over the n units,
    which by the law of large numbers tends to (θ the angle between x and x′)

    * ``wrt="a"``: ``k1(x, x′) = ‖x‖‖x′‖ (sin θ + (π − θ) cos θ)/(2π)``;
    * ``wrt="w"`` (exercise 11.3 item 1, ``a`` fixed): ``E[a²] xᵀx′ k0 = xᵀx′ (π − θ)/(2π)``;
    * ``wrt="both"`` (both layers trained): the sum of the two.

    The fluctuation of the average is O(1/√n) (central limit theorem). ``x2=None``: ``x2 = x1``.
    """
    x2 = x1 if x2 is None else x2
    dot, _, _ = _angle(x1, x2)
    parts = {"a": lambda: arccos_k1(x1, x2), "w": lambda: dot * arccos_k0(x1, x2)}
    if wrt == "both":
        return parts["a"]() + parts["w"]()
    if wrt not in parts:
        raise ValueError(f"wrt must be 'w', 'a' or 'both', not {wrt!r}")
    return parts[wrt]()



def linearised_predictions(k_train: torch.Tensor, k_test: torch.Tensor, f0_train: torch.Tensor,
                           f0_test: torch.Tensor, y_train: torch.Tensor, steps: int | None = None,
                           lr: float = 1.0) -> torch.Tensor:
    """The linear algebra of :func:`ntk_predictor` from ``Θ0 = Θ(X, X)`` (N, N),
    ``Θ(x*, X)`` (M, N) and the initial outputs ``f0(X)`` (N,), ``f0(x*)`` (M,)."""
    r0 = y_train.reshape(-1).to(f0_train.dtype) - f0_train.reshape(-1)
    if steps is None:
        delta = r0  # t → ∞: the residual is gone, f_lin(X) = y
    else:
        n = k_train.shape[0]
        step = torch.eye(n, dtype=k_train.dtype) - lr / n * k_train
        delta = r0 - torch.linalg.matrix_power(step, steps) @ r0  # r0 − r_T
    return f0_test.reshape(-1) + k_test @ torch.linalg.solve(k_train, delta)


def ntk_predictor(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor,
                  steps: int | None = None, lr: float = 1.0) -> torch.Tensor:
    """Predictions at ``x_test`` of ``model`` linearised at its current parameters θ0 (course
    §11.5.2, eq. 11.10) and trained on ``(x_train, y_train)`` with the squared loss
    ``Σ_i (f(x_i) − y_i)²/(2N)`` (scalar output).

    The linearised model moves in function space by eq. 11.11, ``df/dt = −η Θ0 (f − y)``, and
    its predictions at any x follow those at the training points through ``Θ(x, X)``:

    * ``steps=None``: the limit t → ∞ of eq. 11.12, NTK kernel regression
      ``f_lin(x) = f0(x) + Θ(x, X) Θ(X, X)^{-1} (y − f0(X))`` (it interpolates: ``f_lin(X) = y``);
    * ``steps=T``: T steps of gradient descent with step ``lr`` (the discrete eq. 11.12): the
      residual ``r = y − f(X)`` becomes ``(I − lr Θ0/N)^T r0`` and
      ``f_T(x) = f0(x) + Θ(x, X) Θ0^{-1} (r0 − r_T)``.

    ``Θ0 = Θ(X, X)`` must be invertible (distinct inputs, width ≥ N).
    """
    with torch.no_grad():
        f0_train = model(x_train).reshape(-1)
        f0_test = model(x_test).reshape(-1)
    return linearised_predictions(empirical_ntk(model, x_train), empirical_ntk(model, x_test, x_train),
                                  f0_train, f0_test, y_train, steps, lr)
