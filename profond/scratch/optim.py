"""Optimizers written from the course's update rules, one tensor operation at a time.

Every class here is a :class:`torch.optim.Optimizer` subclass, so ``zero_grad``,
``state_dict`` and ``load_state_dict`` come for free; only ``step`` is ours, and it
spells out the rule of the course (chapters 2, 3 and 11, in French) with plain tensor arithmetic — no ``torch.optim`` functional helper.

Course map
----------
* §2.4.1 Momentum          ``v ← µ v + ∇L ;  θ ← θ − η v``                → :class:`SGD`
* §2.4.2 RMSProp           ``s ← β s + (1−β) (∇L)² ;  θ ← θ − η ∇L / (√s + ε)`` → :class:`RMSprop`
* §2.4.3 Adam (alg.)       first/second moments + bias correction        → :class:`Adam`
* §2.4.4 / §3.9.2 AdamW    eqs. (3.31)–(3.33), decay decoupled            → :class:`AdamW`
* §3.9.1 Adam + L2         eqs. (3.28)–(3.30), decay inside the gradient  → ``Adam(weight_decay=λ)``
* §2.9 Lion (Chen et al.)  sign of an interpolated momentum               → :class:`Lion`
* §11.8 Définition 11.20   SAM, eqs. (11.13)–(11.14)                      → :class:`SAM`

Conventions are chosen so that each optimizer matches its ``torch.optim`` namesake
step for step (the tests check this to 1e-6 over 100 steps); where the course writes
a formula differently, the docstring of the class says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["SGD", "RMSprop", "Adam", "AdamW", "Lion", "SAM"]

Params = Iterable[Tensor] | Iterable[dict[str, Any]]


def _check_nonneg(name: str, value: float) -> None:
    if value < 0.0:
        raise ValueError(f"invalid {name}: {value} (must be >= 0)")


def _check_beta(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"invalid {name}: {value} (must be in [0, 1))")


def _dense_grad(p: Tensor, who: str) -> Tensor:
    """The gradient of ``p``; sparse gradients are out of scope for these teaching versions."""
    g = p.grad
    if g.is_sparse:
        raise RuntimeError(f"{who} does not support sparse gradients")
    return g


def _run_closure(closure: Callable[[], Tensor] | None) -> Tensor | None:
    """Re-evaluate the model (loss + backward) with autograd switched back on."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class SGD(Optimizer):
    r"""Stochastic gradient descent, with heavy-ball or Nesterov momentum (course §2.4.1).

    Per parameter, with ``g = ∇L(θ) + λ θ`` (L2 penalty ``λ/2 ‖θ‖²`` folded into the
    gradient, ``λ = weight_decay``)::

        v ← µ v + g                    (course: v_{t+1} = µ v_t + ∇L(θ_t))
        θ ← θ − η v                    (plain / heavy-ball momentum)
        θ ← θ − η (g + µ v)            (nesterov=True)

    Convention: this is the course's form *and* PyTorch's (with ``dampening=0``): the
    velocity accumulates raw gradients and the learning rate multiplies it at the end.
    The other classic form (Sutskever et al.), ``v ← µ v − η g ; θ ← θ + v``, is
    identical while η is constant but differs as soon as η is scheduled. The Nesterov
    variant is the usual "look-ahead" rewrite that only needs the gradient at θ: the
    step uses the velocity the *next* iteration would have if the gradient stayed ``g``.
    On the first step ``v`` starts at 0, so ``v_1 = g`` (PyTorch stores ``g`` directly,
    which is the same number).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        _check_nonneg("lr", lr)
        _check_nonneg("momentum", momentum)
        _check_nonneg("weight_decay", weight_decay)
        if nesterov and momentum <= 0:
            raise ValueError("Nesterov momentum requires momentum > 0")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov,
                    "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _run_closure(closure)
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _dense_grad(p, "SGD")
                if wd != 0:
                    g = g + wd * p                      # ∇(L + λ/2 ‖θ‖²) = ∇L + λθ
                if mu != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                    v = state["momentum_buffer"]
                    v.mul_(mu).add_(g)                  # v ← µ v + g
                    g = g + mu * v if group["nesterov"] else v
                p.sub_(lr * g)                          # θ ← θ − η · direction
        return loss


class RMSprop(Optimizer):
    r"""RMSProp (course §2.4.2): per-coordinate step size from a running mean of ``g²``.

    With ``g = ∇L(θ) + λ θ`` (L2 in the gradient) and ``α`` the course's β::

        s ← α s + (1 − α) g²
        θ ← θ − η g / (√s + ε)                 (momentum = 0)
        b ← µ b + g / (√s + ε) ;  θ ← θ − η b  (momentum = µ > 0)

    Convention: ε is added *outside* the square root, as in PyTorch (the course's
    typeset ``η / √(s + ε)`` reads ambiguously; with ε ≈ 1e-8 the two only differ where
    ``s`` is itself tiny). ``s`` starts at zero, without bias correction — unlike Adam,
    RMSProp does not correct it, so the first steps are larger than ``η``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
    ) -> None:
        _check_nonneg("lr", lr)
        _check_beta("alpha", alpha)
        _check_nonneg("eps", eps)
        _check_nonneg("weight_decay", weight_decay)
        _check_nonneg("momentum", momentum)
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                    "momentum": momentum}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _run_closure(closure)
        for group in self.param_groups:
            lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
            wd, mu = group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _dense_grad(p, "RMSprop")
                if wd != 0:
                    g = g + wd * p
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.zeros_like(p)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                state["step"] += 1
                s = state["square_avg"]
                s.mul_(alpha).add_((1 - alpha) * g * g)          # s ← α s + (1−α) g²
                scaled = g / (s.sqrt() + eps)                     # g / (√s + ε)
                if mu > 0:
                    b = state["momentum_buffer"]
                    b.mul_(mu).add_(scaled)                       # b ← µ b + g/(√s+ε)
                    p.sub_(lr * b)
                else:
                    p.sub_(lr * scaled)
        return loss


class Adam(Optimizer):
    r"""Adam (course §2.4.3) with the classic L2 penalty of §3.9.1.

    With ``g_t = ∇L(θ_t) + λ θ_t`` (``λ = weight_decay``; eqs. 3.28–3.30)::

        m_t = β₁ m_{t−1} + (1 − β₁) g_t            (first moment)
        v_t = β₂ v_{t−1} + (1 − β₂) g_t²           (second moment)
        m̂_t = m_t / (1 − β₁ᵗ),  v̂_t = v_t / (1 − β₂ᵗ)   (bias correction: m, v start at 0)
        θ_{t+1} = θ_t − η m̂_t / (√v̂_t + ε)

    Note on eq. (3.28): the course first defines ``g_t = ∇L + λθ_t`` and then writes
    ``(g_t + λθ_t)`` in the moment updates, which would count the penalty twice; the
    intended (and implemented) reading is that ``λθ`` is added *once*, to the raw
    gradient. The penalty therefore goes through the adaptive rescaling
    ``1/(√v̂ + ε)``: a coordinate with a large gradient history is barely decayed —
    the point of exercise 3.5 and the reason for :class:`AdamW`.
    """

    #: True in :class:`AdamW`: decay applied to θ directly instead of added to g.
    _decoupled = False

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        _check_nonneg("lr", lr)
        _check_beta("beta1", betas[0])
        _check_beta("beta2", betas[1])
        _check_nonneg("eps", eps)
        _check_nonneg("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _run_closure(closure)
        name = type(self).__name__
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _dense_grad(p, name)
                if wd != 0:
                    if self._decoupled:
                        p.mul_(1 - lr * wd)             # AdamW (3.33): θ ← (1 − ηλ) θ …
                    else:
                        g = g + wd * p                  # Adam + L2 (3.28): g ← ∇L + λθ
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_((1 - b1) * g)          # m_t = β₁ m + (1−β₁) g
                v.mul_(b2).add_((1 - b2) * g * g)      # v_t = β₂ v + (1−β₂) g²
                m_hat = m / (1 - b1**t)                 # bias corrections
                v_hat = v / (1 - b2**t)
                p.sub_(lr * m_hat / (v_hat.sqrt() + eps))   # … − η m̂ / (√v̂ + ε)
        return loss


class AdamW(Adam):
    r"""AdamW (course §2.4.4 and §3.9.2, eqs. 3.31–3.33): weight decay decoupled from Adam.

    The moments see the raw gradient only; the decay shrinks the weights directly::

        θ_{t+1} = (1 − ηλ) θ_t − η m̂_t / (√v̂_t + ε)

    i.e. every coordinate loses exactly ``η λ θ`` per step whatever its gradient
    scale — unlike ``Adam(weight_decay=λ)``, whose ``λθ`` is divided by ``√v̂ + ε``.
    The shrink is applied before the Adam move, with the current ``η`` (PyTorch's
    order; the two orders agree to first order in ``ηλ``).
    """

    _decoupled = True

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class Lion(Optimizer):
    r"""Lion — EvoLved Sign Momentum (Chen et al., 2023; cited in course §2.9).

    Per parameter, with decoupled weight decay as in AdamW::

        c = β₁ m + (1 − β₁) g          (interpolation used for the step)
        θ ← θ − η (sign(c) + λ θ)      (every coordinate moves by exactly ±η, plus decay)
        m ← β₂ m + (1 − β₂) g          (the momentum kept for next time uses β₂)

    Only one buffer per parameter (Adam keeps two), and the update has the same
    magnitude on every coordinate, so Lion wants a 3–10× smaller ``lr`` than AdamW
    and a correspondingly larger ``weight_decay``. ``sign(0) = 0``.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
    ) -> None:
        _check_nonneg("lr", lr)
        _check_beta("beta1", betas[0])
        _check_beta("beta2", betas[1])
        _check_nonneg("weight_decay", weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = _run_closure(closure)
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _dense_grad(p, "Lion")
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                c = b1 * m + (1 - b1) * g              # interpolated direction
                if wd != 0:
                    p.mul_(1 - lr * wd)                 # decoupled decay
                p.sub_(lr * torch.sign(c))
                m.mul_(b2).add_((1 - b2) * g)           # momentum update with β₂
        return loss


class SAM(Optimizer):
    r"""Sharpness-Aware Minimization (course §11.8, Définition 11.20) around any base optimizer.

    SAM minimises ``max_{‖ε‖≤ρ} L(θ + ε)`` (eq. 11.13). To first order the inner max is
    reached at ``ε̂ = ρ ∇L(θ) / ‖∇L(θ)‖`` (eq. 11.14; the norm is the global L2 norm over
    *all* parameters), and the model is then updated with the gradient taken there::

        first_step():   θ ← θ + ε̂            (climb to the locally worst point; θ is saved)
        second_step():  θ ← θ_saved ; base_optimizer.step() with ∇L(θ + ε̂)

    Usage, two forward/backward passes per iteration::

        loss_fn(model(x), y).backward(); opt.first_step(); opt.zero_grad()
        loss_fn(model(x), y).backward(); opt.second_step(); opt.zero_grad()

    or ``opt.step(closure)`` where ``closure`` zeroes the gradients, computes the loss,
    calls ``backward()`` and returns the loss: ``step`` calls it at θ, climbs, calls it
    at θ + ε̂, steps, and returns the loss at θ.

    ``base_optimizer_cls(self.param_groups, **kw)`` is built on the *same* param-group
    dicts (changing ``lr`` here changes it for the base, so LR schedulers work) and the
    *same* ``state`` dict, so :meth:`state_dict` holds both the SAM backup and the base
    optimizer's buffers (key names do not collide: SAM uses ``"sam_w_old"``).
    """

    def __init__(
        self,
        params: Params,
        base_optimizer_cls: type[Optimizer],
        rho: float = 0.05,
        **kw: Any,
    ) -> None:
        _check_nonneg("rho", rho)
        super().__init__(params, {"rho": rho, **kw})
        self.base_optimizer = base_optimizer_cls(self.param_groups, **kw)
        self._share_with_base()

    def _share_with_base(self) -> None:
        """One set of param groups and one state dict for SAM and its base optimizer."""
        self.param_groups = self.base_optimizer.param_groups
        self.base_optimizer.state = self.state

    def _grad_norm(self) -> Tensor:
        """Global L2 norm ``‖∇L(θ)‖`` over every parameter that has a gradient."""
        sq = [p.grad.pow(2).sum() for group in self.param_groups for p in group["params"]
              if p.grad is not None]
        if not sq:
            return torch.zeros(())
        return torch.stack(sq).sum().sqrt()

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """θ ← θ + ρ g / ‖g‖ (per group ρ), saving θ to restore it in :meth:`second_step`.

        If ``‖g‖ = 0`` the point is already stationary and θ is left unmoved.
        """
        norm = self._grad_norm()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                self.state[p]["sam_w_old"] = p.detach().clone()
                if norm > 0:
                    p.add_(group["rho"] * p.grad / norm.to(p.grad))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore θ and let the base optimizer step with the gradient from θ + ε̂."""
        for group in self.param_groups:
            for p in group["params"]:
                old = self.state[p].pop("sam_w_old", None)
                if old is not None:
                    p.copy_(old)
        self.base_optimizer.step()
        # what torch's wrapper of ``step`` records: an LR scheduler on SAM then knows it stepped
        self._opt_called = True
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """Both SAM passes; ``closure`` must zero grads, compute the loss and backprop."""
        if closure is None:
            raise ValueError("SAM.step needs a closure (it evaluates the loss twice); "
                             "or call first_step()/second_step() yourself")
        loss = _run_closure(closure)
        self.first_step(zero_grad=True)
        _run_closure(closure)
        self.second_step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Inherited loading, then re-share groups and state with the base optimizer."""
        super().load_state_dict(state_dict)
        self._share_with_base()
