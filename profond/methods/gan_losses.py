"""Adversarial losses shared by every GAN-type method (course ch. 8).

All functions take the discriminator's raw outputs (logits, or critic scores for the
Wasserstein loss) and return a scalar mean over the batch.

========================  ==========================================  =====================================
``kind``                  discriminator / critic minimises            generator minimises
========================  ==========================================  =====================================
``minimax`` (eq. 8.1)     -log D(x) - log(1 - D(G(z)))                log(1 - D(G(z)))   (saturates early)
``non-saturating`` §8.3.2 same as minimax                             -log D(G(z))
``wasserstein`` (WGAN)    D(G(z)) - D(x)  (+ clipping or GP eq. 8.16)  -D(G(z))
``hinge`` (+ SN)          relu(1 - D(x)) + relu(1 + D(G(z)))           -D(G(z))
``least-squares`` LSGAN   (D(x) - 1)² / 2 + D(G(z))² / 2               (D(G(z)) - 1)² / 2
========================  ==========================================  =====================================

With ``D = sigmoid(logit)``, ``-log D = softplus(-logit)`` and ``-log(1 - D) = softplus(logit)``,
which is how the log terms are computed (stable for any logit).
"""

from __future__ import annotations

import typing
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base.coerce import check_choice

#: the adversarial losses, as an option type (``method.loss``)
GANLoss = Literal["minimax", "non-saturating", "wasserstein", "hinge", "least-squares"]
LOSSES: tuple[str, ...] = typing.get_args(GANLoss)


def check_loss(kind: str) -> str:
    """``kind`` if it is one of :data:`LOSSES`, spelled exactly (the methods compare their
    ``loss`` option to these names), else ConfigError listing them."""
    return check_choice(kind, LOSSES, "method.loss", exact=True)


def d_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """Discriminator / critic loss on its outputs for real and generated samples."""
    kind = check_loss(kind)
    real, fake = real.float(), fake.float()
    if kind in ("minimax", "non-saturating"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "wasserstein":
        return fake.mean() - real.mean()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()  # least-squares


def g_loss(kind: str, fake: Tensor) -> Tensor:
    """Generator loss on the discriminator's outputs for generated samples."""
    kind = check_loss(kind)
    fake = fake.float()
    if kind == "minimax":
        return -F.softplus(fake).mean()  # log(1 - D(G(z))) = -softplus(logit)
    if kind == "non-saturating":
        return F.softplus(-fake).mean()  # -log D(G(z))
    if kind in ("wasserstein", "hinge"):
        return -fake.mean()
    return 0.5 * ((fake - 1.0) ** 2).mean()  # least-squares


def gradient_penalty(critic, real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None,
                     **critic_kwargs) -> Tensor:
    """WGAN-GP penalty (eq. 8.16): ``E[(‖∇_x̂ D(x̂)‖₂ - 1)²]`` on random interpolates
    ``x̂ = ε x + (1 - ε) G(z)``, ``ε ~ U[0, 1]`` per example. Multiply by λ (10 in the course).
    ``critic_kwargs`` go to the critic (e.g. ``labels=`` for a conditional critic)."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), device=real.device,
                     generator=generator, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat, **critic_kwargs)
    (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
