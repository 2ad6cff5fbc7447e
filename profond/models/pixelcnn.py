r"""Autoregressive image models: PixelCNN and Gated PixelCNN.

An autoregressive model factorises the likelihood of an image of ``D = H·W`` pixels in raster
order (row by row, left to right)

.. math:: p(x) = \prod_{i=1}^{D} p(x_i \mid x_1, \dots, x_{i-1}),

each factor a ``K``-way softmax over the levels of pixel ``i`` (``K = 256`` for 8-bit pixels,
``K`` = the code-book size for a prior over VQ-VAE codes, course §9.7). One forward pass of a
convolutional net gives all ``D`` factors at once, as long as output ``i`` never sees inputs
``j ≥ i``: **masked convolutions** (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel
Recurrent Neural Networks", §3.4) zero the kernel weights at and after the centre.

* :class:`MaskedConv2d`: mask **A** (the first layer) excludes the centre pixel, mask **B**
  (every later layer) includes it: after the first layer, position ``i`` already holds a
  function of ``x_{<i}`` only, so it may see itself.
* :class:`PixelCNN`: a 7×7 type-A layer, residual blocks around a 3×3 type-B convolution,
  two 1×1 output layers. Stacked masked convolutions have a **blind spot**: the receptive field
  grows down-left and right but never up-right past the row above (pixel (4, 0) never sees
  (3, 7)), although those pixels come earlier in raster order.
* :class:`GatedPixelCNN` (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
  Decoders"): a *vertical* stack sees every row above (a ``k × k`` kernel restricted to the
  rows up to the centre) and a *horizontal* stack sees the current row to the left (a
  ``1 × k`` kernel); the vertical stack feeds the horizontal one **shifted down by one row**,
  so that the horizontal stack at row ``i`` gets rows ``< i`` only, and together they cover
  every earlier pixel: no blind spot. Units are gated, ``tanh(W_f * x) ⊙ σ(W_g * x)``
  (eq. 2 of the paper), and a class label adds a learned bias to both (eq. 4, the
  class-conditional model).

**Inputs.** Pixels (``categorical=False``, ``levels = 256``) enter as floats in [0, 1],
rescaled to ``2x − 1``: their levels are ordered, so a scalar carries that order. Codes of a
VQ-VAE (``categorical=True``) are integer indices ``(N, C, H, W)`` with no order: each is
embedded (``nn.Embedding(levels, embed_dim)``) before the first masked layer.

**Outputs.** Logits ``(N, K, C, H, W)``: ``bpd_from_logits`` and ``cross_entropy`` read them
as they are (:mod:`profond.metrics.likelihood`). With ``mixtures`` M > 0 (pixels only) the last
layer outputs the parameters of a mixture of M discretised logistics (Salimans et al. 2017,
PixelCNN++) instead of 256 free logits per pixel, and the logits are that mixture's
log-probabilities of the 256 levels: the same tensor for the loss and the sampler.

**Channels.** Grey images and code grids have one channel. With ``C > 1`` every masked
kernel covers all input channels of the allowed positions, and the ``C`` values of one pixel
are drawn *independently* given the earlier pixels: a valid factorisation with exact
likelihood, though weaker than the paper's R → G → B order, which would also split each
layer's channels into three groups and mask the groups (R sees nothing of the current pixel,
G sees R, B sees R and G).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Range
from ..errors import ConfigError
from ..nn.layers import InShape
from ..registry import MODELS

__all__ = ["MaskedConv2d", "PixelCNN", "GatedPixelCNN", "causal_mask", "down_shift"]

#: the levels of 8-bit pixels
PIXEL_LEVELS = 256
#: an odd kernel size >= 1 (the mask is defined around its centre)
OddKernel = Annotated[int, Range(1, 31), "an odd size, e.g. 7 (first layer) or 3"]


def causal_mask(kh: int, kw: int, mask_type: Literal["A", "B", "V"]) -> Tensor:
    """The ``(kh, kw)`` 0/1 mask of a causal kernel centred at ``(kh // 2, kw // 2)``.

    ``A``: the rows above the centre, and the centre row left of the centre;
    ``B``: the same plus the centre itself; ``V`` (the vertical stack of the gated model):
    every row up to and including the centre row, whole (the down-shift makes it causal).
    """
    ci, cj = kh // 2, kw // 2
    m = torch.zeros(kh, kw)
    m[:ci] = 1                       # rows above the centre
    if mask_type == "V":
        m[ci] = 1                    # the whole centre row
    else:
        m[ci, :cj] = 1               # left of the centre
        if mask_type == "B":
            m[ci, cj] = 1            # the centre itself
    return m


class MaskedConv2d(nn.Conv2d):
    """A "same" convolution whose kernel is multiplied by :func:`causal_mask` at every call
    (van den Oord et al. 2016a, §3.4): the output at ``(i, j)`` reads only the allowed
    positions, whatever the weights or their gradient.

    ``mask_type``: ``A`` (excludes the centre: the first layer), ``B`` (includes it: every
    later layer) or ``V`` (all rows up to the centre: the vertical stack). Kernel sizes are odd;
    the padding keeps ``H × W``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 mask_type: Literal["A", "B", "V"] = "B", bias: bool = True):
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        if kh % 2 == 0 or kw % 2 == 0:
            raise ConfigError(f"masked convolution kernel {kh}x{kw}: use odd sizes (the mask is centred).")
        if mask_type not in ("A", "B", "V"):
            raise ConfigError(f"mask type {mask_type!r}: use A (first layer), B (later layers) or V.")
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(kh, kw, mask_type)[None, None], persistent=False)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask={self.mask_type}"

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)  # (N, out, H, W)


def down_shift(x: Tensor) -> Tensor:
    """``x`` moved down one row (row 0 becomes zeros): position ``(i, j)`` then holds row ``i − 1``."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]  # (N, C, H, W)


def discretized_logistic_log_probs(params: Tensor, levels: int = PIXEL_LEVELS) -> Tensor:
    r"""Log-probabilities ``(N, K, C, H, W)`` of the ``K`` levels under a mixture of ``M``
    discretised logistics (Salimans et al. 2017, "PixelCNN++", eq. 2), from ``params``
    ``(N, 3, M, C, H, W)``: mixture logits, means ``μ`` and log-scales ``log s`` on the
    ``[-1, 1]`` scale of the levels' centres ``x_k = 2k/(K − 1) − 1``, bins of half-width
    ``1/(K − 1)``:

    .. math::
        P(k) = \sum_m \pi_m ig[\sigmaig(	frac{x_k + 1/(K-1) - \mu_m}{s_m}ig)
                                  - \sigmaig(	frac{x_k - 1/(K-1) - \mu_m}{s_m}ig)ig],

    the first bin extended to ``−∞`` and the last to ``+∞``, so that the ``K`` probabilities sum
    to one. A bin too thin for the difference of two sigmoids in float32 uses the density at its
    centre times its width, as in the paper's code.
    """
    logit_pi, mu, log_s = params.float().unbind(1)                  # (N, M, C, H, W) each
    log_s = log_s.clamp(min=-7.0)
    half = 1.0 / (levels - 1)
    x = torch.linspace(-1, 1, levels, device=params.device).view(1, levels, 1, 1, 1, 1)   # (1, K, 1, ...)
    centred = x - mu.unsqueeze(1)                                    # (N, K, M, C, H, W)
    inv_s = torch.exp(-log_s).unsqueeze(1)
    plus, minus = inv_s * (centred + half), inv_s * (centred - half)
    log_cdf_plus = plus - F.softplus(plus)                           # log σ(plus): the first bin
    log_one_minus_cdf_minus = -F.softplus(minus)                     # log(1 − σ(minus)): the last bin
    delta = torch.sigmoid(plus) - torch.sigmoid(minus)
    mid = inv_s * centred
    log_pdf_mid = mid - log_s.unsqueeze(1) - 2 * F.softplus(mid) + math.log(2 * half)  # density · bin width
    inner = torch.where(delta > 1e-5, torch.log(delta.clamp_min(1e-12)), log_pdf_mid)
    k = torch.arange(levels, device=params.device).view(1, levels, 1, 1, 1, 1)
    log_p = torch.where(k == 0, log_cdf_plus, torch.where(k == levels - 1, log_one_minus_cdf_minus, inner))
    log_pi = torch.log_softmax(logit_pi, dim=1).unsqueeze(1)         # (N, 1, M, C, H, W)
    return torch.logsumexp(log_pi + log_p, dim=2)                    # (N, K, C, H, W): Σ_m π_m P_m(k)


class _Autoregressive(nn.Module):
    """What both models share: the input embedding, the class bias table and the logits' layout."""

    def __init__(self, in_shape: tuple[int, int, int], levels: int, num_classes: int, categorical: bool,
                 embed_dim: int, mixtures: int = 0):
        super().__init__()
        #: 0: a K-way softmax per pixel; M > 0: a mixture of M discretised logistics (PixelCNN++)
        self.mixtures = int(mixtures)
        self.in_shape = tuple(int(v) for v in in_shape)
        self.channels_in, self.levels = self.in_shape[0], int(levels)
        self.num_classes, self.categorical = int(num_classes), bool(categorical)
        #: marks the models the ``autoregressive`` method can train
        self.is_autoregressive = True
        if categorical:
            self.embed = nn.Embedding(self.levels, embed_dim)
            self.input_dim = self.channels_in * embed_dim
        else:
            self.embed = None
            self.input_dim = self.channels_in

    def embed_input(self, x: Tensor) -> Tensor:
        """The float input ``(N, C_in', H, W)`` of the first masked layer: ``2x − 1`` of pixels in
        [0, 1], or the embeddings of integer codes ``(N, C, H, W)`` (channel-major)."""
        if self.embed is None:
            x = x if x.is_floating_point() else x.float()
            return x * 2 - 1                                  # (N, C, H, W) on [-1, 1]
        e = self.embed(x.long())                          # (N, C, H, W, E)
        n, c, h, w, d = e.shape
        return e.permute(0, 1, 4, 2, 3).reshape(n, c * d, h, w)  # (N, C·E, H, W)

    @property
    def out_channels(self) -> int:
        """What the last 1×1 layer outputs per pixel: ``K·C`` logits, or ``3·M·C`` mixture parameters."""
        per_channel = 3 * self.mixtures if self.mixtures else self.levels
        return per_channel * self.channels_in

    def to_logits(self, out: Tensor) -> Tensor:
        """``(N, K·C, H, W)`` → ``(N, K, C, H, W)``; with a logistic mixture, its ``(N, 3·M·C, H, W)``
        parameters → the log-probabilities of the 256 levels (:func:`discretized_logistic_log_probs`)."""
        n, _, h, w = out.shape
        if self.mixtures:
            return discretized_logistic_log_probs(out.view(n, 3, self.mixtures, self.channels_in, h, w), self.levels)
        return out.view(n, self.levels, self.channels_in, h, w)

    def check_labels(self, y: Tensor | None, n: int) -> None:
        if self.num_classes and y is None:
            raise ConfigError("this PixelCNN is class-conditional (model.conditional=true): pass the labels y.")
        if y is not None and y.shape != (n,):
            raise ConfigError(f"labels have shape {tuple(y.shape)}; pass one label per image, ({n},).")

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Logits ``(N, K, C, H, W)`` of every pixel given the earlier ones (one pass)."""
        self.check_labels(y if self.num_classes else None, len(x))
        return self.features(self.embed_input(x), y if self.num_classes else None)

    def features(self, inp: Tensor, y: Tensor | None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class _ResidualBlock(nn.Module):
    """PixelCNN's residual block (van den Oord et al. 2016a, fig. 5): ReLU, 1×1 to ``h``, ReLU,
    masked ``k × k`` type B, ReLU, 1×1 back to ``2h``, plus the input."""

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * width, width, 1), nn.ReLU(),
                                  MaskedConv2d(width, width, kernel, "B"), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)  # (N, 2h, H, W)


class PixelCNN(_Autoregressive):
    """PixelCNN (van den Oord et al. 2016a, table 1): a ``first_kernel`` type-A layer to ``2h``
    channels, ``layers`` residual blocks with ``kernel`` type-B convolutions, then ReLU, 1×1
    (``out_hidden``), ReLU, 1×1 to ``K·C`` logits. A class label adds a learned bias to the first
    layer's output. Has the blind spot of stacked masks (see the module docstring)."""

    def __init__(self, in_shape: tuple[int, int, int] = (1, 28, 28), levels: int = PIXEL_LEVELS, width: int = 32,
                 layers: int = 5, first_kernel: int = 7, kernel: int = 3, out_hidden: int = 64,
                 num_classes: int = 0, categorical: bool = False, embed_dim: int = 16, mixtures: int = 0):
        super().__init__(in_shape, levels, num_classes, categorical, embed_dim, mixtures)
        self.first = MaskedConv2d(self.input_dim, 2 * width, first_kernel, "A")
        self.class_bias = nn.Embedding(num_classes, 2 * width) if num_classes else None
        self.blocks = nn.Sequential(*[_ResidualBlock(width, kernel) for _ in range(layers)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(2 * width, out_hidden, 1), nn.ReLU(),
                                  nn.Conv2d(out_hidden, self.out_channels, 1))

    def features(self, inp: Tensor, y: Tensor | None) -> Tensor:
        h = self.first(inp)                                   # (N, 2h, H, W), sees x_{<i}
        if self.class_bias is not None and y is not None:
            h = h + self.class_bias(y)[:, :, None, None]      # a per-class bias, everywhere
        return self.to_logits(self.head(self.blocks(h)))      # (N, K, C, H, W)


class GatedLayer(nn.Module):
    r"""One layer of the Gated PixelCNN (van den Oord et al. 2016b, fig. 2) on a vertical stack
    ``v`` and a horizontal stack ``h`` of ``p`` channels each:

    .. math::
        v' &= \tanh(W_{v,f} * v + V_f^\top c) \odot \sigma(W_{v,g} * v + V_g^\top c) \\
        h' &= h + W_o\big[\tanh(W_{h,f} * h + U_f\,\mathrm{shift}(W_v * v) + V_f'^\top c)
              \odot \sigma(\cdots_g)\big]

    ``W_v *`` is a ``k × k`` kernel over the rows up to the centre (mask V), ``W_h *`` a
    ``1 × k`` kernel over the columns up to the centre (mask B; A and no residual for the first
    layer, whose ``h`` input is the image itself), ``shift`` the :func:`down_shift` that keeps
    the current row out of the horizontal stack, ``c`` the one-hot class.
    """

    def __init__(self, in_dim: int, p: int, kernel: int, first: bool, num_classes: int):
        super().__init__()
        self.first = first
        self.v_conv = MaskedConv2d(in_dim, 2 * p, kernel, "V")
        self.h_conv = MaskedConv2d(in_dim, 2 * p, (1, kernel), "A" if first else "B")
        self.v_to_h = nn.Conv2d(2 * p, 2 * p, 1)
        self.h_out = nn.Conv2d(p, p, 1)
        self.v_class = nn.Embedding(num_classes, 2 * p) if num_classes else None
        self.h_class = nn.Embedding(num_classes, 2 * p) if num_classes else None

    @staticmethod
    def gate(a: Tensor) -> Tensor:
        f, g = a.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)  # eq. 2: tanh(W_f * x) ⊙ σ(W_g * x)

    def forward(self, v: Tensor, h: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        v_pre = self.v_conv(v)                                # (N, 2p, H, W): rows <= i
        h_pre = self.h_conv(h) + self.v_to_h(down_shift(v_pre))  # row i left of j + rows < i
        if self.v_class is not None and y is not None:
            v_pre = v_pre + self.v_class(y)[:, :, None, None]  # eq. 4: + V^T c
            h_pre = h_pre + self.h_class(y)[:, :, None, None]
        v_new = self.gate(v_pre)                              # (N, p, H, W)
        h_new = self.h_out(self.gate(h_pre))                  # (N, p, H, W)
        return v_new, h_new if self.first else h + h_new      # residual on h (not on the image)


class GatedPixelCNN(_Autoregressive):
    """Gated PixelCNN (van den Oord et al. 2016b): ``layers`` :class:`GatedLayer` (the first with
    ``first_kernel``, the others ``kernel``) of ``width`` channels, then ReLU, 1×1
    (``out_hidden``), ReLU, 1×1 to ``K·C`` logits of the horizontal stack. Optional class
    conditioning (eq. 4). No blind spot: the last pixel of an ``H × W`` image sees every earlier
    one once ``(first_kernel // 2) + (layers − 1)·(kernel // 2) ≥ max(H, W) − 1``."""

    def __init__(self, in_shape: tuple[int, int, int] = (1, 28, 28), levels: int = PIXEL_LEVELS, width: int = 32,
                 layers: int = 6, first_kernel: int = 7, kernel: int = 3, out_hidden: int = 64,
                 num_classes: int = 0, categorical: bool = False, embed_dim: int = 16, mixtures: int = 0):
        super().__init__(in_shape, levels, num_classes, categorical, embed_dim, mixtures)
        self.layers = nn.ModuleList(
            [GatedLayer(self.input_dim if i == 0 else width, width, first_kernel if i == 0 else kernel,
                        first=i == 0, num_classes=num_classes) for i in range(layers)])
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, out_hidden, 1), nn.ReLU(),
                                  nn.Conv2d(out_hidden, self.out_channels, 1))

    def features(self, inp: Tensor, y: Tensor | None) -> Tensor:
        v, h = inp, inp                                       # both stacks start from the input
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.to_logits(self.head(h))                   # (N, K, C, H, W)


# -- the registered builders -----------------------------------------------------------------------
def _check(levels: int, categorical: bool, first_kernel: int, kernel: int, conditional: bool,
           num_classes: int, mixtures: int) -> None:
    for key, k in (("first_kernel", first_kernel), ("kernel", kernel)):
        if k % 2 == 0:
            raise ConfigError(f"bad value for 'model.{key}': {k}; masked kernels are centred: use an odd size "
                              f"(e.g. {k + 1}).")
    if not categorical and levels != PIXEL_LEVELS:
        raise ConfigError(f"bad value for 'model.levels': {levels}; a PixelCNN over 8-bit pixels has "
                          f"{PIXEL_LEVELS} levels: drop model.levels (other level counts are the codes of a "
                          "VQ-VAE prior, which method.vqvae=RUN sets).")
    if mixtures and categorical:
        raise ConfigError("model.mixtures is a discretised logistic over ordered pixel levels; categorical inputs "
                          "(VQ-VAE codes, model.categorical=true) have no order: set model.mixtures=0.")
    if conditional and num_classes < 1:
        raise ConfigError("model.conditional=true needs a labelled dataset (num_classes >= 1): use a dataset "
                          "with classes or set model.conditional=false.")


Levels = Annotated[int, Range(2, 65536), "256 for 8-bit pixels; a VQ-VAE prior: the code-book size"]
Mixtures = Annotated[int, Range(0, 100), "0: a 256-way softmax; e.g. 5 logistics (PixelCNN++)"]


@MODELS.register("pixelcnn", help="PixelCNN (van den Oord et al. 2016): masked 7x7 type-A conv, type-B "
                                  "residual blocks, K-way softmax per pixel", tags=("method:autoregressive",))
def pixelcnn(in_shape: InShape = (1, 28, 28), num_classes: NonNegInt = 0, conditional: bool = False,
             levels: Levels = PIXEL_LEVELS, width: PosInt = 32, layers: NonNegInt = 5,
             first_kernel: OddKernel = 7, kernel: OddKernel = 3, out_hidden: PosInt = 64,
             categorical: bool = False, embed_dim: PosInt = 16, mixtures: Mixtures = 0) -> PixelCNN:
    """``in_shape`` / ``num_classes`` come from the data (the code grid and K for a VQ-VAE prior,
    with ``categorical=True``, which the ``autoregressive`` method sets); ``conditional`` adds
    the class bias; ``width`` ``h`` (the residual stream has ``2h`` channels), ``layers``
    residual blocks, kernels ``first_kernel`` (type A) and ``kernel`` (type B); ``mixtures`` M > 0
    replaces the 256-way softmax by a mixture of M discretised logistics (PixelCNN++)."""
    _check(levels, categorical, first_kernel, kernel, conditional, num_classes, mixtures)
    return PixelCNN(tuple(in_shape), levels, width, layers, first_kernel, kernel, out_hidden,
                    num_classes if conditional else 0, categorical, embed_dim, mixtures)


@MODELS.register("gated-pixelcnn", help="Gated PixelCNN (van den Oord et al. 2016): vertical + horizontal "
                                        "stacks, no blind spot, gated units, class-conditional bias",
                 tags=("method:autoregressive",))
def gated_pixelcnn(in_shape: InShape = (1, 28, 28), num_classes: NonNegInt = 0, conditional: bool = False,
                   levels: Levels = PIXEL_LEVELS, width: PosInt = 32, layers: PosInt = 6,
                   first_kernel: OddKernel = 7, kernel: OddKernel = 3, out_hidden: PosInt = 64,
                   categorical: bool = False, embed_dim: PosInt = 16, mixtures: Mixtures = 0) -> GatedPixelCNN:
    """As :func:`pixelcnn`; ``width`` ``p`` channels per stack, ``layers`` gated layers (the
    first with ``first_kernel``)."""
    _check(levels, categorical, first_kernel, kernel, conditional, num_classes, mixtures)
    return GatedPixelCNN(tuple(in_shape), levels, width, layers, first_kernel, kernel, out_hidden,
                         num_classes if conditional else 0, categorical, embed_dim, mixtures)
