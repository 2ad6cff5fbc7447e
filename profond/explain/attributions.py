"""Gradient and perturbation attributions of an image classifier (course §12.5.1-§12.5.2,
exercise 4.3, exercise 12.3).

Every function takes an ``nn.Module`` that maps a batch ``x`` of shape ``(N, C, H, W)`` to
class scores ``(N, K)`` (logits: the scores ``f_c`` of the course, before any softmax), the
batch, and the target class ``target``: an int (the same class for every example), a
``(N,)`` tensor of classes, or ``None`` for the predicted class of each example. They return
a tensor on ``x``'s device, ``x.detach()``-shaped unless said otherwise, and leave the
model's parameters and mode (train / eval) as they found them; call them on a model in
``eval()`` mode (batch norm and dropout then act as at test time).

- :func:`saliency`: ``S_i = |∂f_c(x)/∂x_i|`` (course §12.5.1).
- :func:`smoothgrad`: the mean saliency of noisy copies ``x + N(0, σ²)`` (Smilkov et al. 2017).
- :func:`integrated_gradients`: ``IG_i = (x_i − x'_i) ∫_0^1 ∂f_c(x' + α(x − x'))/∂x_i dα``
  (Sundararajan et al. 2017), by a quadrature over ``steps`` points (default: the 128-point
  trapezoid); completeness: ``Σ_i IG_i = f_c(x) − f_c(x')`` up to the quadrature error.
- :func:`gradcam`: ``α^c_k = (1/Z) Σ_ij ∂y^c/∂A^k_ij``, ``L^c = ReLU(Σ_k α^c_k A^k)`` on a
  named convolution layer, upsampled to the input size (course §12.5.2).
- :func:`occlusion`: ``f_c(x) − f_c(x with a patch replaced by a baseline)``, averaged over the
  sliding patches that cover each pixel (Zeiler & Fergus 2014).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

Target = int | Tensor | None

#: quadrature rules of :func:`integrated_gradients`
IG_METHODS = ("trapezoid", "left", "right", "middle", "gausslegendre")


# -- shared helpers ----------------------------------------------------------------------------
def resolve_target(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """``target`` as a ``(N,)`` long tensor: the predicted class of each example when ``None``."""
    n = x.shape[0]
    if target is None:
        with torch.no_grad():
            return model(x).argmax(1)
    if isinstance(target, Tensor):
        t = target.to(device=x.device, dtype=torch.long).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n)
        if t.numel() != n:
            raise ValueError(f"target has {t.numel()} classes for a batch of {n} examples.")
        return t.clone()
    return torch.full((n,), int(target), dtype=torch.long, device=x.device)


def class_scores(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """``f_c(x)``: the score of class ``target[i]`` of each example ``x[i]``, shape ``(N,)``."""
    out = model(x)
    if out.ndim != 2:
        raise ValueError(f"the model returns a tensor of shape {tuple(out.shape)}; explanations need class "
                         "scores of shape (N, K).")
    if int(target.max()) >= out.shape[1] or int(target.min()) < 0:
        raise ValueError(f"target class out of range: the model has {out.shape[1]} classes (0..{out.shape[1] - 1}).")
    return out.gather(1, target.view(-1, 1)).squeeze(1)


def input_gradients(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """``∂f_c(x)/∂x`` for each example (examples are independent, so the gradient of the sum of
    their scores is each one's own gradient)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(class_scores(model, xg, target).sum(), xg)
    return g


# -- §12.5.1 saliency, SmoothGrad --------------------------------------------------------------
def saliency(model: nn.Module, x: Tensor, target: Target = None, *, absolute: bool = True) -> Tensor:
    """Saliency map ``S_i = |∂f_c(x)/∂x_i|`` (course §12.5.1), per input element; the signed
    gradient with ``absolute=False``."""
    t = resolve_target(model, x, target)
    g = input_gradients(model, x, t)  # course §12.5.1: S_i = |∂f_θ(x)/∂x_i|
    return g.abs() if absolute else g


def smoothgrad(model: nn.Module, x: Tensor, target: Target = None, *, n_samples: int = 25,
               noise_level: float = 0.15, seed: int = 0, absolute: bool = True,
               batch_size: int = 256) -> Tensor:
    """SmoothGrad (Smilkov et al. 2017): ``(1/n) Σ_j S(x + ε_j)``, ``ε_j ~ N(0, σ² I)`` with
    ``σ = noise_level · (max x − min x)`` per example, ``S`` the saliency of
    :func:`saliency` (``absolute=False``: the mean signed gradient). The target is fixed on
    the clean input; the noise is drawn on the CPU from ``seed`` (same seed, same map)."""
    if n_samples < 1:
        raise ValueError(f"n_samples={n_samples}: use 1 or more.")
    t = resolve_target(model, x, target)
    n = x.shape[0]
    flat = x.detach().reshape(n, -1)
    sigma = noise_level * (flat.max(1).values - flat.min(1).values)  # σ relative to each input's range
    g = torch.Generator().manual_seed(int(seed))
    eps = torch.randn((n_samples, *x.shape), generator=g, dtype=x.dtype).to(x.device)
    noisy = (x.detach().unsqueeze(0) + sigma.view(1, n, *[1] * (x.ndim - 1)) * eps).reshape(-1, *x.shape[1:])
    tt = t.repeat(n_samples)
    grads = torch.cat([input_gradients(model, noisy[i: i + batch_size], tt[i: i + batch_size])
                       for i in range(0, len(noisy), batch_size)])
    grads = grads.abs() if absolute else grads
    return grads.view(n_samples, *x.shape).mean(0)  # (1/n) Σ_j S(x + ε_j)


# -- Integrated Gradients ----------------------------------------------------------------------
def ig_quadrature(steps: int, method: str = "trapezoid") -> tuple[Tensor, Tensor]:
    """Nodes ``α_j`` in [0, 1] and weights ``w_j`` (summing to 1) of the rule
    ``∫_0^1 g(α) dα ≈ Σ_j w_j g(α_j)``: the composite trapezoid rule on ``steps`` equally
    spaced points 0, 1/(steps−1), ..., 1 (end weights halved); the left / right / middle
    Riemann sums of ``steps`` cells of width 1/steps; or Gauss-Legendre on ``steps`` nodes."""
    if method not in IG_METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(IG_METHODS)}.")
    if steps < (1 if method == "gausslegendre" else 2):
        raise ValueError(f"steps={steps}: use 2 or more.")
    n = steps
    if method == "trapezoid":
        alphas = torch.linspace(0, 1, n, dtype=torch.float64)
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] = w[-1] = 0.5 / (n - 1)
    elif method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)  # on [-1, 1]
        alphas, w = torch.from_numpy(0.5 * (nodes + 1)), torch.from_numpy(0.5 * weights)
    else:
        start = {"left": 0.0, "middle": 0.5, "right": 1.0}[method]
        alphas = (torch.arange(n, dtype=torch.float64) + start) / n
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
    return alphas, w


def integrated_gradients(model: nn.Module, x: Tensor, target: Target = None, *,
                         baseline: Tensor | float | None = None, steps: int = 128,
                         method: str = "trapezoid", batch_size: int = 256) -> Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) of ``f_c`` from ``baseline`` ``x'``
    (``None``: zeros; a float: that constant image; a tensor broadcast to ``x``):

        IG_i(x) = (x_i − x'_i) · ∫_0^1 ∂f_c(x' + α (x − x'))/∂x_i dα

    the integral by :func:`ig_quadrature` (``steps`` points, ``method``). Completeness,
    ``Σ_i IG_i = f_c(x) − f_c(x')``, holds up to the quadrature error (:func:`completeness_gap`
    measures it). With ReLU and max-pooling the integrand is piecewise constant along the
    path, so the error of any rule falls like 1/steps, not faster: at the default 128-step
    trapezoid the gap is under 1% of ``|f_c(x) − f_c(x')|`` for the typical image of the
    course's CNNs, more for an image whose score barely changes from the baseline; raise
    ``steps`` when :func:`completeness_gap` says so."""
    t = resolve_target(model, x, target)
    x = x.detach()
    base = _baseline_like(x, baseline)
    alphas, w = ig_quadrature(steps, method)
    alphas, w = alphas.to(x.dtype).to(x.device), w.to(x.dtype).to(x.device)
    shape1 = (-1, *[1] * x.ndim)
    # the straight path x' + α_j (x − x'), every (j, example) pair in one stack
    path = (base.unsqueeze(0) + alphas.view(shape1) * (x - base).unsqueeze(0)).reshape(-1, *x.shape[1:])
    tt = t.repeat(len(alphas))
    grads = torch.cat([input_gradients(model, path[i: i + batch_size], tt[i: i + batch_size])
                       for i in range(0, len(path), batch_size)]).view(len(alphas), *x.shape)
    avg = (w.view(shape1) * grads).sum(0)  # ∫_0^1 ∂f_c/∂x_i dα ≈ Σ_j w_j g(α_j)
    return (x - base) * avg  # IG_i = (x_i − x'_i) · ∫ ...


def _baseline_like(x: Tensor, baseline: Tensor | float | None) -> Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, Tensor):
        return baseline.detach().to(device=x.device, dtype=x.dtype).expand_as(x).clone()
    return torch.full_like(x, float(baseline))


@torch.no_grad()
def completeness_gap(model: nn.Module, x: Tensor, attributions: Tensor, target: Target = None, *,
                     baseline: Tensor | float | None = None) -> Tensor:
    """Per example, ``|Σ_i a_i − (f_c(x) − f_c(x'))| / |f_c(x) − f_c(x')|``: the relative
    failure of completeness of attributions ``a`` (0 for exact Integrated Gradients)."""
    t = resolve_target(model, x, target)
    delta = class_scores(model, x, t) - class_scores(model, _baseline_like(x, baseline), t)
    total = attributions.reshape(len(x), -1).sum(1)
    return (total - delta).abs() / delta.abs().clamp_min(1e-12)


# -- §12.5.2 Grad-CAM --------------------------------------------------------------------------
def conv_layers(model: nn.Module) -> list[str]:
    """The names (as in ``model.named_modules()``) of its 2-d convolution layers, in order."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def last_conv_layer(model: nn.Module) -> str:
    """The last 2-d convolution of ``model`` (Grad-CAM's default layer); ValueError if none."""
    names = conv_layers(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no convolution layer (nn.Conv2d): Grad-CAM needs one.")
    return names[-1]


def conv_layer(model: nn.Module, name: str) -> nn.Module:
    """The convolution layer ``name``; ValueError naming the available ones otherwise."""
    names = conv_layers(model)
    if name in names:
        return dict(model.named_modules())[name]
    have = ", ".join(names) if names else "none: this model has no nn.Conv2d"
    what = "is not a convolution layer" if name in dict(model.named_modules()) else "does not exist"
    raise ValueError(f"layer {name!r} {what}; the convolution layers are: {have}.")


def gradcam(model: nn.Module, x: Tensor, target: Target = None, *, layer: str | None = None,
            relu: bool = True, upsample: bool = True, mode: str = "bilinear") -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017; course §12.5.2) on the conv layer ``layer`` (default:
    :func:`last_conv_layer`), of shape ``(N, 1, H, W)`` (``upsample=False``: the layer's
    ``(N, 1, h, w)``). Not normalised: divide by the max to draw it."""
    layer = last_conv_layer(model) if layer is None else layer
    module = conv_layer(model, layer)
    t = resolve_target(model, x, target)
    store: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _inp: object, out: Tensor) -> Tensor:
        store["A"] = out
        return out.clone()  # later in-place ops (ReLU(inplace=True)) act on the copy, not on A

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)  # so that A is part of a graph
            y = class_scores(model, xg, t)
            a = store["A"]
            (grad,) = torch.autograd.grad(y.sum(), a)
    finally:
        handle.remove()
    a = a.detach()
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # course §12.5.2: α^c_k = (1/Z) Σ_ij ∂y^c/∂A^k_ij
    cam = (alpha * a).sum(1, keepdim=True)  # Σ_k α^c_k A^k
    if relu:
        cam = F.relu(cam)  # L^c = ReLU(Σ_k α^c_k A^k)
    if upsample and cam.shape[2:] != x.shape[2:]:
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        cam = F.interpolate(cam, size=x.shape[2:], mode=mode, **kw)
    return cam


# -- occlusion ---------------------------------------------------------------------------------
def _pair(v: int | tuple[int, int], what: str) -> tuple[int, int]:
    a, b = (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
    if a < 1 or b < 1:
        raise ValueError(f"{what}={v}: use sizes of 1 or more.")
    return a, b


@torch.no_grad()
def occlusion(model: nn.Module, x: Tensor, target: Target = None, *, patch: int | tuple[int, int] = 4,
              stride: int | tuple[int, int] = 2, baseline: float = 0.0, batch_size: int = 256) -> Tensor:
    """Occlusion (Zeiler & Fergus 2014): slide a ``patch`` (all channels) over the image by
    ``stride`` (the last patch of a row or column cut at the image's edge), replace it with
    ``baseline``, and give each pixel the mean, over the patches covering it, of
    ``f_c(x) − f_c(x occluded)``; a pixel no patch covers (stride > patch) gets 0. Shape of
    ``x``, the same value on every channel."""
    ph, pw = _pair(patch, "patch")
    sh, sw = _pair(stride, "stride")
    n, _, h, w = x.shape
    if ph > h or pw > w:
        raise ValueError(f"patch {ph}x{pw} is larger than the {h}x{w} image.")
    t = resolve_target(model, x, target)
    x = x.detach()
    f0 = class_scores(model, x, t)
    # ceil((h − ph)/sh) + 1 positions: the last patch may stick out of the image (cut at its
    # edge), so that every pixel is covered when stride <= patch
    tops = [sh * k for k in range(-(-(h - ph) // sh) + 1) if sh * k < h]
    lefts = [sw * k for k in range(-(-(w - pw) // sw) + 1) if sw * k < w]
    total = torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)
    count = torch.zeros(1, 1, h, w, dtype=x.dtype, device=x.device)
    windows = [(i, j) for i in tops for j in lefts]
    for k in range(0, len(windows), max(1, batch_size // n)):
        chunk = windows[k: k + max(1, batch_size // n)]
        xs = x.unsqueeze(0).repeat(len(chunk), 1, 1, 1, 1)
        for c, (i, j) in enumerate(chunk):
            xs[c, :, :, i: i + ph, j: j + pw] = baseline
        drop = f0.unsqueeze(0) - class_scores(model, xs.view(-1, *x.shape[1:]), t.repeat(len(chunk))).view(len(chunk), n)
        for c, (i, j) in enumerate(chunk):
            total[:, 0, i: i + ph, j: j + pw] += drop[c].view(n, 1, 1)
            count[:, :, i: i + ph, j: j + pw] += 1
    return (total / count.clamp_min(1)).expand_as(x).clone()


__all__ = ["IG_METHODS", "resolve_target", "class_scores", "input_gradients", "saliency", "smoothgrad",
           "ig_quadrature", "integrated_gradients", "completeness_gap", "conv_layers", "last_conv_layer",
           "conv_layer", "gradcam", "occlusion"]


def standardised(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> nn.Module:
    """``x -> model((x − mean) / std)``: the run's network on [0, 1] images, standardised as
    its test batches are, so that the attributions live on the pixels one sees (its layers
    are then named ``net.<name>``)."""
    class Standardised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    return Standardised()
