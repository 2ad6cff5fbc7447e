r"""Likelihoods in **bits per dimension**, computed the standard way (Theis et al. 2016;
RealNVP, Glow and PixelCNN papers), written out once for every exact-likelihood family.

Data are discrete: a grey image holds ``D = C·H·W`` integers ``k ∈ {0, …, 255}``. Two
kinds of model give a log-likelihood of them:

* **discrete** models (PixelCNN: a 256-way softmax per pixel, or a discretised logistic)
  give ``log P(k)`` directly; ``bpd = −log P(k) / (D · ln 2)``.
* **continuous** models (normalizing flows) give a density ``p(y)`` over ``y ∈ ℝ^D``. With
  *uniform dequantization* ``y = (k + u) / 256``, ``u ~ U[0, 1)^D``, each integer owns a
  cube of side 1/256 in ``[0, 1]^D`` and Jensen's inequality gives a lower bound on the
  discrete log-likelihood:

  .. math::

     \log P(k) \;\ge\; \mathbb{E}_u\big[\log p(y)\big] - D \log 256

  so ``bpd ≤ (−log p(y) + D·log 256) / (D · ln 2) = −log p(y) / (D · ln 2) + 8``: the
  ``log(256) / log 2 = 8`` bits of the correction below. A model that works on another
  scale ``z = s(y)`` (e.g. ``[-1, 1]`` or a logit transform) has
  ``log p(y) = log p_z(s(y)) + log|det ∂s/∂y|``: that log-Jacobian is the
  ``log_det_scale`` argument of :func:`bpd_from_density` (``D·log 2`` for ``z = 2y − 1``).

Variational dequantization (Flow++) replaces ``u`` by a learned ``q(u | k)`` and subtracts
``E log q(u | k)`` from the bound; :func:`bpd_from_density` takes that as ``log_q``.

A VAE's bound (ELBO or IWAE, nats per image) converts with :func:`nats_to_bpd`, as the
likelihood benchmark does so that every family stands in one table.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: the number of levels of 8-bit data
LEVELS = 256
#: log(256) / log(2): the bits per dimension the dequantization correction adds
DEQUANT_BITS = math.log(LEVELS) / math.log(2)  # = 8


def nats_to_bpd(nll_nats: Tensor | float, dims: int) -> Tensor | float:
    """``nll / (D · ln 2)``: a negative log-likelihood in nats per image (or per example)
    into bits per dimension."""
    return nll_nats / (dims * math.log(2))


def to_levels(x: Tensor, levels: int = LEVELS) -> Tensor:
    """The integer levels ``k ∈ {0, …, levels − 1}`` (int64) of images given as uint8 or as
    floats in [0, 1] (``k = round(x · (levels − 1))``)."""
    if x.dtype == torch.uint8:
        return x.long()
    if x.is_floating_point():
        if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
            raise ValueError("images must lie in [0, 1] (or be uint8) to be read as 8-bit levels")
        return torch.round(x * (levels - 1)).long()
    return x.long()


def dequantize(x: Tensor, generator: torch.Generator | None = None, levels: int = LEVELS,
               noise: Tensor | None = None) -> Tensor:
    """Uniform dequantization: ``y = (k + u) / levels`` with ``u ~ U[0, 1)`` (or the given
    ``noise``), a float in [0, 1) whose cube of side ``1/levels`` belongs to level ``k``."""
    k = to_levels(x, levels).float()
    if noise is None:
        noise = torch.rand(k.shape, generator=generator, device=k.device)
    return (k + noise) / levels


def bpd_from_density(log_p: Tensor, dims: int, *, log_det_scale: Tensor | float = 0.0,
                     log_q: Tensor | float = 0.0, levels: int = LEVELS) -> Tensor:
    """Bits per dimension (an upper bound on the discrete NLL) of images from a continuous model.

    ``log_p``: ``(N,)`` log-density (nats) the model gives to its input ``z = s(y)``, where
    ``y = (k + u) / levels`` is the dequantized image on [0, 1); ``log_det_scale``:
    ``log|det ∂s/∂y|`` (``(N,)`` or a float; 0 when the model reads ``y`` itself);
    ``log_q``: ``log q(u | k)`` of a variational dequantizer (0 for uniform ``u``)::

        bpd = −(log p_z(s(y)) + log|det ∂s/∂y| − log q(u | k) − D log levels) / (D ln 2)
    """
    log_py = log_p + log_det_scale                                  # density of y on [0, 1)^D
    log_pk = log_py - log_q - dims * math.log(levels)               # the bound on log P(k)
    return -log_pk / (dims * math.log(2))


def bpd_from_logits(logits: Tensor, x: Tensor) -> Tensor:
    """Exact bits per dimension ``(N,)`` of a discrete model with a ``levels``-way softmax per
    dimension: ``logits`` ``(N, levels, C, H, W)`` (or ``(N, levels, *)``) and the images
    ``x`` ``(N, C, H, W)`` (uint8, or floats in [0, 1])."""
    levels = logits.shape[1]
    k = to_levels(x, levels)
    nll = torch.nn.functional.cross_entropy(logits.float(), k, reduction="none")   # (N, *) nats
    return nats_to_bpd(nll.flatten(1).sum(1), nll[0].numel())


def mutate_levels(x: Tensor, rate: float, generator: torch.Generator | None = None,
                  levels: int = LEVELS) -> Tensor:
    """Images ``x`` in [0, 1] with each pixel replaced, with probability ``rate``, by a level drawn
    uniformly from ``{0, …, levels − 1}`` (as ``k / (levels − 1)``): the input perturbation of the
    *background model* of Ren et al. (2019, §3.1), whose likelihood ``p_θ0`` carries the
    population-level statistics (smoothness, mass of black pixels) but little of the semantics.
    The likelihood ratio ``LLR(x) = log p_θ(x) − log p_θ0(x)`` then scores what the background
    model cannot explain; in bits/dim, ``bpd_θ0(x) − bpd_θ(x)``."""
    if not 0 <= rate <= 1:
        raise ValueError(f"mutation rate {rate}: use a probability in [0, 1]")
    if rate == 0:
        return x
    dev = x.device
    hit = torch.rand(x.shape, generator=generator, device=dev) < rate
    new = torch.randint(0, levels, x.shape, generator=generator, device=dev).to(x.dtype) / (levels - 1)
    return torch.where(hit, new, x)


__all__ = ["LEVELS", "DEQUANT_BITS", "nats_to_bpd", "to_levels", "dequantize", "bpd_from_density",
           "bpd_from_logits", "mutate_levels"]
