"""Magnitude-pruning masks for lottery tickets (course §11.7, theorem 11.17, remark 11.18).

Remark 11.18 finds the winning ticket by *iterative magnitude pruning*: train, remove the
weights of smallest magnitude, reset the survivors to their initial values, repeat. This
module holds the mask arithmetic of that procedure, independent of any training loop:

* :func:`prunable_weights` — the weights that can be pruned: the ``weight`` of every
  ``nn.Linear`` / ``nn.Conv1d/2d/3d`` (biases, normalisation parameters and embeddings never);
* :func:`full_masks` — all-ones masks (the dense net);
* :func:`magnitude_masks` — remove a fraction ``p`` of the weights that *remain* under the
  current masks, those of smallest ``|w|``, either per layer (each layer loses
  ``round(p · remaining_l)``; ``p`` may differ per layer) or globally (one threshold over all
  layers pooled, ``round(p · remaining)`` weights in all);
* :func:`random_masks` — masks drawn uniformly at random with the same number of kept weights
  in each layer (the "random pruning" control of Frankle & Carbin 2019);
* :func:`apply_masks` — zero the pruned weights of a net in place;
* :func:`remaining_fraction` / :func:`layer_fractions` — kept weights over prunable weights.

Masks are boolean tensors (``True`` = kept), keyed like the net's ``named_parameters``.
Ties of magnitude are broken by position (a stable sort), so a mask is a deterministic function
of the weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

#: module types whose ``weight`` is pruned
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def prunable_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """``{parameter name: weight}`` of every Linear / Conv layer of ``net`` (biases excluded)."""
    return {f"{name}.weight" if name else "weight": m.weight
            for name, m in net.named_modules() if isinstance(m, PRUNABLE)}


def full_masks(net: nn.Module) -> dict[str, torch.Tensor]:
    """All-ones (keep everything) masks over the prunable weights of ``net``."""
    return {k: torch.ones_like(w, dtype=torch.bool, device="cpu") for k, w in prunable_weights(net).items()}


def _remove_smallest(scores: torch.Tensor, keep: torch.Tensor, k: int) -> torch.Tensor:
    """``keep`` with the ``k`` kept entries of smallest ``scores`` switched off (flat tensors)."""
    n_pruned = int((~keep).sum())
    s = scores.clone()
    s[~keep] = -1.0  # already pruned: sorted first, so they stay pruned
    order = torch.argsort(s, stable=True)
    out = torch.ones_like(keep)
    out[order[:n_pruned + k]] = False
    return out


def magnitude_masks(weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                    rate: float | Mapping[str, float], scope: str = "layer") -> dict[str, torch.Tensor]:
    """One round of magnitude pruning: remove the fraction ``rate`` of the *remaining* weights.

    ``weights`` are the trained weights (keyed like ``masks``), ``masks`` the current masks.
    ``scope="layer"``: in each layer ``l``, the ``round(rate_l · remaining_l)`` kept weights of
    smallest ``|w|`` are removed (``rate`` a number, or one per layer name, e.g. half the rate
    for the output layer as Frankle & Carbin do for LeNet). ``scope="global"``: ``rate`` is one
    number and the ``round(rate · remaining)`` kept weights of smallest ``|w|`` over all layers
    pooled are removed (layers then lose different fractions). Pruned weights stay pruned.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', not {scope!r}")
    if set(weights) != set(masks):
        raise ValueError(f"weights and masks name different layers: {sorted(set(weights) ^ set(masks))}")
    rates = {k: float(rate[k] if isinstance(rate, Mapping) else rate) for k in masks}
    for k, r in rates.items():
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"pruning rate of {k} must be in [0, 1], not {r}")
    mags = {k: weights[k].detach().abs().float().cpu().flatten() for k in masks}
    keeps = {k: masks[k].cpu().flatten().bool() for k in masks}
    if scope == "layer":  # course §11.7, remark 11.18: remove the weights of smallest magnitude
        return {k: _remove_smallest(mags[k], keeps[k], round(rates[k] * int(keeps[k].sum()))).view(masks[k].shape)
                for k in masks}
    if isinstance(rate, Mapping):
        raise ValueError("global pruning takes one rate")
    names = list(masks)
    flat = _remove_smallest(torch.cat([mags[k] for k in names]), torch.cat([keeps[k] for k in names]),
                            round(float(rate) * sum(int(keeps[k].sum()) for k in names)))
    out, i = {}, 0
    for k in names:
        n = keeps[k].numel()
        out[k] = flat[i:i + n].view(masks[k].shape)
        i += n
    return out


def random_masks(masks: Mapping[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Masks keeping, in each layer, as many weights as ``masks`` does, at uniformly random places."""
    out = {}
    for k, m in masks.items():
        n_keep = int(m.sum())
        keep = torch.zeros(m.numel(), dtype=torch.bool)
        keep[torch.randperm(m.numel(), generator=generator)[:n_keep]] = True
        out[k] = keep.view(m.shape)
    return out


@torch.no_grad()
def apply_masks(net: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Set the pruned weights of ``net`` to exactly 0, in place."""
    params = dict(net.named_parameters())
    for k, m in masks.items():
        params[k].masked_fill_(~m.to(params[k].device), 0.0)


def layer_fractions(masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Kept fraction of each layer's weights."""
    return {k: int(m.sum()) / m.numel() for k, m in masks.items()}


def remaining_fraction(masks: Mapping[str, torch.Tensor]) -> float:
    """Kept weights over all prunable weights (the x axis of Frankle & Carbin's figures)."""
    return sum(int(m.sum()) for m in masks.values()) / max(sum(m.numel() for m in masks.values()), 1)


__all__ = ["PRUNABLE", "prunable_weights", "full_masks", "magnitude_masks", "random_masks", "apply_masks",
           "layer_fractions", "remaining_fraction"]
