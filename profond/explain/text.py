"""Token attributions of a text classifier (course §12.5.1 and Integrated Gradients, on the
token embeddings): tokens are discrete, so the gradients are taken with respect to their
embedding vectors ``e_t`` (the output of the model's ``nn.Embedding``), and each token gets
one number.

- :func:`token_saliency`: ``S_t = ‖∂f_c/∂e_t‖_2``, the saliency of §12.5.1 summarised over the
  embedding coordinates of token ``t``.
- :func:`token_integrated_gradients`: ``IG_t = Σ_k e_tk ∫_0^1 ∂f_c(α e)/∂e_tk dα`` from the
  all-zero embedding; completeness: ``Σ_t IG_t = f_c(e) − f_c(0)`` up to the quadrature error.

The model is called as ``model(tokens (B, T), lengths (B,))`` and returns logits ``(B, K)``
(the course's ``rnn-classifier`` and ``attn-classifier``); a forward hook replaces the
embedding layer's output by the point of the path, so nothing of the model changes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .attributions import ig_quadrature


def embedding_layer(model: nn.Module) -> str:
    """The name of the token embedding: the module ``embedding`` when it is an ``nn.Embedding``,
    else the first ``nn.Embedding``; ValueError when the model has none."""
    modules = dict(model.named_modules())
    if isinstance(modules.get("embedding"), nn.Embedding):
        return "embedding"
    for name, m in modules.items():
        if isinstance(m, nn.Embedding):
            return name
    raise ValueError(f"{type(model).__name__} has no nn.Embedding: token attributions need one.")


def _path_gradients(model: nn.Module, tokens: Tensor, target: int, alphas: Tensor, *, layer: str | None,
                    batch_size: int) -> tuple[Tensor, Tensor]:
    """The embeddings ``e`` ``(T, D)`` of one text and ``∂f_c/∂e`` at ``α e`` for each ``α``:
    ``(S, T, D)``."""
    tokens = tokens.view(1, -1)
    emb = dict(model.named_modules())[layer or embedding_layer(model)]
    with torch.no_grad():
        e = emb(tokens).detach()[0]  # (T, D)
    current: dict[str, Tensor] = {}
    handle = emb.register_forward_hook(lambda _m, _i, _o: current["path"])
    grads = []
    try:
        for i in range(0, len(alphas), batch_size):
            a = alphas[i: i + batch_size].to(e.dtype).to(e.device)
            path = (a.view(-1, 1, 1) * e.unsqueeze(0)).requires_grad_(True)  # α e, baseline e' = 0
            current["path"] = path
            b = len(a)
            # cuDNN's RNN has no backward in eval mode: the native kernels have
            with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
                out = model(tokens.expand(b, -1), torch.full((b,), tokens.shape[1], device=tokens.device))
                (g,) = torch.autograd.grad(out[:, target].sum(), path)
            grads.append(g)
    finally:
        handle.remove()
    return e, torch.cat(grads)


def token_saliency(model: nn.Module, tokens: Tensor, target: int, *, layer: str | None = None) -> Tensor:
    """``S_t = ‖∂f_c/∂e_t‖_2`` for each token of one text ``tokens`` ``(T,)``: shape ``(T,)``."""
    _, g = _path_gradients(model, tokens, target, torch.ones(1), layer=layer, batch_size=1)
    return g[0].norm(dim=-1)  # course §12.5.1 |∂f/∂x_i|, summarised per token over its embedding


def token_integrated_gradients(model: nn.Module, tokens: Tensor, target: int, *, steps: int = 128,
                               method: str = "trapezoid", layer: str | None = None,
                               batch_size: int = 64) -> Tensor:
    """Integrated Gradients of class ``target`` per token of one text, from the zero embedding:
    ``IG_t = Σ_k e_tk Σ_j w_j ∂f_c(α_j e)/∂e_tk`` (:func:`~.attributions.ig_quadrature`
    nodes ``α_j`` and weights ``w_j``); shape ``(T,)``."""
    alphas, w = ig_quadrature(steps, method)
    e, g = _path_gradients(model, tokens, target, alphas, layer=layer, batch_size=batch_size)
    avg = (w.to(g.dtype).to(g.device).view(-1, 1, 1) * g).sum(0)  # ∫_0^1 ∂f_c(α e)/∂e dα
    return (e * avg).sum(-1)  # (e − 0) · ∫ ..., summed over the embedding coordinates


@torch.no_grad()
def embedding_scores(model: nn.Module, tokens: Tensor, *, zero: bool = False, layer: str | None = None) -> Tensor:
    """The logits ``(K,)`` of one text, or (``zero=True``) of the same text with every token
    embedding set to 0: the baseline of :func:`token_integrated_gradients`."""
    tokens = tokens.view(1, -1)
    lengths = torch.tensor([tokens.shape[1]], device=tokens.device)
    if not zero:
        return model(tokens, lengths)[0]
    emb = dict(model.named_modules())[layer or embedding_layer(model)]
    handle = emb.register_forward_hook(lambda _m, _i, o: torch.zeros_like(o))
    try:
        return model(tokens, lengths)[0]
    finally:
        handle.remove()


__all__ = ["embedding_layer", "token_saliency", "token_integrated_gradients", "embedding_scores"]
