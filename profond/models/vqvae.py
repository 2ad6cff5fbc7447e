r"""VQ-VAE: a convolutional autoencoder with a discrete latent grid (course §9.7).

van den Oord, Vinyals & Kavukcuoglu, *Neural Discrete Representation Learning* (2017).
The encoder maps an image to a grid of vectors :math:`z_e(x) \in \mathbb{R}^{h \times w \times d}`;
every vector is replaced by its nearest entry of a codebook :math:`\{e_k\}_{k=1}^K`,
:math:`e_k \in \mathbb{R}^d` (definition 9.8), and the decoder maps the quantised grid back to
the image. With the defaults of exercise 9.5 (:math:`K = 512` codes of dimension
:math:`d = 64`) a 28×28 image becomes a 7×7 grid of code indices, 49 × 9 bits.

This module holds the pure ``nn.Module`` parts; the losses of eq. (9.25) are assembled by
the ``vqvae`` method (:mod:`profond.methods.vqvae`), which also drives the codebook's
EMA updates and dead-code restarts (:meth:`VectorQuantizer.update`) after each optimizer step.

Shapes: any ``(C, H, W)`` input with ``H`` and ``W`` multiples of 4 (two stride-2 convolutions):
Fashion-MNIST 1×28×28 → 7×7 grid, scikit-learn digits 1×8×8 → 2×2, CIFAR 3×32×32 → 8×8.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Range
from ..errors import ConfigError
from ..nn.layers import InShape
from ..registry import MODELS

# ----------------------------------------------------------------------------------------
# the quantiser (eqs. 9.24, 9.25, remark 9.9)

#: rows of encoder outputs whose distances to the codebook are computed at once (bounds the
#: memory of the (rows, K) distance matrix during 10k-image evaluations)
DISTANCE_CHUNK = 16384


def _dist() -> Any:
    """``torch.distributed`` when a process group is running (DDP), else ``None``."""
    d = torch.distributed
    return d if d.is_available() and d.is_initialized() else None


class VectorQuantizer(nn.Module):
    r"""Nearest-codebook-entry quantisation with a straight-through gradient.

    **Quantisation** (eq. 9.24). For each encoder output vector :math:`z = z_e(x)_{ij}`

    .. math:: z_q = e_{k^*}, \qquad k^* = \arg\min_k \lVert z - e_k \rVert^2,

    with the squared distance expanded as
    :math:`\lVert z\rVert^2 - 2\,z^\top e_k + \lVert e_k\rVert^2`: one ``(N, K)`` matrix product,
    never an ``(N, K, d)`` difference tensor. Distances are computed in at least float32
    (float64 inputs stay float64), also under bf16 autocast. Ties go to the lowest index.

    **Straight-through estimator** (remark 9.9). ``argmin`` has no gradient; the forward
    pass returns :math:`z_e + \mathrm{sg}[z_q - z_e]`, whose value is :math:`z_q` and whose
    gradient with respect to :math:`z_e` is the gradient with respect to :math:`z_q`, copied
    unchanged. Without autograd (evaluation, ``torch.no_grad``) :math:`z_q` itself is
    returned, so reconstructions are bit-identical to decoding the code indices.

    **Losses** (eq. 9.25), both means over the elements of the grid:

    * codebook loss :math:`\lVert \mathrm{sg}[z_e] - e_{k^*}\rVert^2`: moves the codes
      towards the encoder outputs; its gradient reaches only the codebook;
    * commitment loss :math:`\lVert z_e - \mathrm{sg}[e_{k^*}]\rVert^2`, weighted by
      :math:`\beta` (default 0.25): keeps the encoder close to its codes; its gradient
      reaches only the encoder.

    ``forward`` returns both unweighted, and ``vq_loss`` = codebook loss (dropped when
    ``ema=True``) + :math:`\beta` · commitment, the term to add to the reconstruction loss.

    **EMA codebook** (``ema=True``, van den Oord et al. 2017, appendix A.1). The codebook is
    a buffer, not a parameter; instead of the codebook loss, :meth:`update` tracks for each
    code the moving cluster size :math:`N_k` and sum :math:`m_k` of the encoder outputs
    assigned to it, with decay :math:`\gamma` (``decay``):

    .. math::
        N_k \leftarrow \gamma N_k + (1-\gamma)\, n_k, \qquad
        m_k \leftarrow \gamma m_k + (1-\gamma) \textstyle\sum_{j:\,k^*_j = k} z_j, \qquad
        e_k = m_k / \tilde N_k,

    where :math:`n_k` counts the batch's vectors assigned to :math:`k`, and the Laplace-smoothed
    sizes :math:`\tilde N_k = \frac{N_k + \epsilon}{n + K\epsilon}\, n` (:math:`n = \sum_k N_k`)
    keep unused codes from dividing by zero. :math:`N_k` starts at 1 and :math:`m_k` at
    the initial :math:`e_k` (one pseudo-observation at the initial code), so a code never
    assigned keeps its place instead of blowing up.

    **Dead-code restart** (``restart_after`` = R > 0). A code assigned no vector for R
    consecutive training steps is re-initialised to a randomly chosen encoder output of the
    current batch (distinct rows while there are enough), and in EMA mode its statistics
    restart at :math:`N_k = 1`, :math:`m_k = e_k`. The choice is drawn from a CPU generator
    seeded with ``(seed, number of updates so far)``: the same on every device and after a
    checkpoint resume, since the counters are buffers saved in the ``state_dict``. In
    gradient mode the restarted rows keep their optimizer state (Adam moments).

    Under DDP, batch statistics are summed over processes and the codebook state is
    broadcast from rank 0 after each update, so all replicas keep one codebook.

    Buffers (all in ``state_dict``): ``embedding`` (when ``ema``; a parameter otherwise),
    ``ema_count`` :math:`N` and ``ema_sum`` :math:`m` (when ``ema``), ``unused_steps`` (per
    code), ``updates`` (number of :meth:`update` calls).
    """

    def __init__(self, num_codes: int = 512, code_dim: int = 64, beta: float = 0.25, ema: bool = True,
                 decay: float = 0.99, eps: float = 1e-5, restart_after: int = 100, seed: int = 0):
        super().__init__()
        self.num_codes, self.code_dim = int(num_codes), int(code_dim)
        self.ema, self.restart_after = bool(ema), int(restart_after)
        self.beta, self.decay, self.eps = float(beta), float(decay), float(eps)
        #: seed of the dead-code restart draws (the vqvae method sets it to train.seed)
        self.seed = int(seed)
        k, d = self.num_codes, self.code_dim
        init = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)
        if self.ema:
            self.register_buffer("embedding", init)
            self.register_buffer("ema_count", torch.ones(k))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        self.register_buffer("unused_steps", torch.zeros(k, dtype=torch.long))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, code_dim={self.code_dim}, beta={self.beta}, ema={self.ema}, "
                f"decay={self.decay}, restart_after={self.restart_after}")

    # -- eq. 9.24 ---------------------------------------------------------------------------
    def distances(self, flat: Tensor) -> Tensor:
        r"""Squared distances ``(N, K)``: :math:`\lVert z\rVert^2 - 2 z^\top e_k + \lVert e_k\rVert^2`."""
        e = self.embedding.to(flat.dtype)
        return torch.addmm((e * e).sum(1)[None, :], flat, e.t(), alpha=-2.0) + (flat * flat).sum(1, keepdim=True)

    @torch.no_grad()
    def nearest(self, flat: Tensor) -> Tensor:
        """Index ``(N,)`` of the nearest code of each row of ``flat`` ``(N, d)`` (eq. 9.24)."""
        flat = flat.detach().to(torch.promote_types(flat.dtype, torch.float32))
        return torch.cat([self.distances(c).argmin(1) for c in flat.split(DISTANCE_CHUNK)]) if len(flat) \
            else flat.new_zeros(0, dtype=torch.long)

    @staticmethod
    def flatten(z: Tensor) -> Tensor:
        """``(B, d, h, w)`` → ``(B·h·w, d)``, rows in (b, i, j) order."""
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    def quantize(self, z_e: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` of an encoder grid ``(B, d, h, w)``."""
        b, _, h, w = z_e.shape
        return self.nearest(self.flatten(z_e)).view(b, h, w)

    def lookup(self, indices: Tensor) -> Tensor:
        """The codes of an index grid ``(B, h, w)`` as a ``(B, d, h, w)`` tensor."""
        if indices.dtype != torch.long:
            indices = indices.long()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_codes):
            raise ConfigError(f"code indices must be in [0, {self.num_codes - 1}], got "
                              f"[{int(indices.min())}, {int(indices.max())}].")
        return self._codes(indices)

    def _codes(self, indices: Tensor) -> Tensor:
        # one code path for training, reconstruction and decode_indices: bit-identical decoder inputs
        return F.embedding(indices, self.embedding).permute(0, 3, 1, 2).contiguous()

    def forward(self, z_e: Tensor) -> dict[str, Tensor]:
        """Quantise ``z_e`` ``(B, d, h, w)``; returns ``z_q`` (straight-through), ``indices``,
        ``codebook_loss``, ``commitment`` (unweighted) and ``vq_loss`` (see the class doc)."""
        if z_e.dim() != 4 or z_e.shape[1] != self.code_dim:
            raise ValueError(f"expected encoder outputs (B, {self.code_dim}, h, w), got {tuple(z_e.shape)}")
        z_e = z_e.to(torch.promote_types(z_e.dtype, torch.float32))
        indices = self.quantize(z_e)
        z_q = self._codes(indices).to(z_e.dtype)
        codebook_loss = F.mse_loss(z_q, z_e.detach())  # ||sg[z_e] - e||^2  -> codebook only
        commitment = F.mse_loss(z_e, z_q.detach())  # ||z_e - sg[e]||^2  -> encoder only
        vq_loss = self.beta * commitment if self.ema else codebook_loss + self.beta * commitment
        if torch.is_grad_enabled() and z_e.requires_grad:
            z_q = z_e + (z_q - z_e).detach()  # straight-through estimator (remark 9.9)
        return {"z_q": z_q, "indices": indices, "codebook_loss": codebook_loss,
                "commitment": commitment, "vq_loss": vq_loss}

    # -- training-time codebook maintenance ---------------------------------------------------
    @torch.no_grad()
    def update(self, z_e: Tensor, indices: Tensor) -> dict[str, float]:
        """One training step of codebook maintenance, from a batch's encoder outputs ``z_e``
        ``(B, d, h, w)`` and their ``indices`` ``(B, h, w)``: the EMA update (when ``ema``)
        then dead-code restart (when ``restart_after > 0``). Call it once per optimizer step.

        Returns ``{"perplexity", "usage", "restarts"}`` of this batch: perplexity
        :math:`\\exp(-\\sum_k p_k \\log p_k)` of the batch's code frequencies :math:`p_k`, the
        fraction of the K codes it used, and how many codes were restarted."""
        flat = self.flatten(z_e.detach()).float()
        idx = indices.reshape(-1)
        onehot = F.one_hot(idx, self.num_codes).to(flat.dtype)  # (N, K): a deterministic matmul, no atomics
        counts = onehot.sum(0)
        sums = onehot.t() @ flat
        dist = _dist()
        if dist is not None:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        if self.ema:
            g = self.decay
            self.ema_count.mul_(g).add_(counts, alpha=1 - g)
            self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
            self.embedding.copy_(self.ema_sum / self.smoothed_counts()[:, None])
        used = counts > 0
        self.unused_steps.add_(1).masked_fill_(used, 0)
        self.updates.add_(1)
        restarts = 0
        if self.restart_after > 0:
            dead = torch.nonzero(self.unused_steps >= self.restart_after).flatten()
            restarts = len(dead)
            if restarts:
                self.restart(dead, flat)
        if dist is not None:
            for t in (self.embedding, *((self.ema_count, self.ema_sum) if self.ema else ()), self.unused_steps):
                dist.broadcast(t.data, src=0)
        stats = usage_stats(counts)
        stats["restarts"] = float(restarts)
        return stats

    def smoothed_counts(self) -> Tensor:
        r"""Laplace-smoothed cluster sizes :math:`\tilde N_k = (N_k + \epsilon)\, n / (n + K\epsilon)`."""
        n = self.ema_count.sum()
        return (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n

    @torch.no_grad()
    def restart(self, codes: Tensor, flat: Tensor) -> None:
        """Re-initialise ``codes`` to random rows of ``flat`` (encoder outputs, ``(N, d)``)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(self.updates))
        n, m = len(flat), len(codes)
        rows = torch.randperm(n, generator=g)[:m] if m <= n else torch.randint(n, (m,), generator=g)
        new = flat[rows.to(flat.device)].to(self.embedding.dtype)
        self.embedding.data[codes] = new
        if self.ema:
            self.ema_count[codes] = 1.0
            self.ema_sum[codes] = new
        self.unused_steps[codes] = 0


def usage_stats(counts: Tensor) -> dict[str, float]:
    r"""``perplexity`` :math:`\exp(-\sum_k p_k\log p_k)` of code frequencies :math:`p = c/\sum c`
    (1 = one code, K = all codes equally often) and ``usage``: fraction of codes with :math:`c_k>0`."""
    counts = counts.double()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p * torch.log(p.clamp(min=1e-30))).sum()
    return {"perplexity": float(entropy.exp()), "usage": float((counts > 0).double().mean())}


# ----------------------------------------------------------------------------------------
# encoder / decoder (van den Oord et al. 2017, §4: strided convs + residual 3x3 blocks)


class ResidualBlock(nn.Module):
    """``x + conv1x1(ReLU(conv3x3(ReLU(x))))``, the VQ-VAE residual block."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1),
                                   nn.ReLU(), nn.Conv2d(hidden, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """``C×H×W → d×(H/4)×(W/4)``: two 4×4 stride-2 convolutions, a 3×3 convolution,
    ``num_res`` residual blocks, ReLU, and a 1×1 projection to the code dimension."""

    def __init__(self, in_channels: int, hidden: int, res_hidden: int, num_res: int, code_dim: int):
        super().__init__()
        half = max(hidden // 2, 1)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, half, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(half, hidden, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            *[ResidualBlock(hidden, res_hidden) for _ in range(num_res)],
            nn.ReLU(),
            nn.Conv2d(hidden, code_dim, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """The encoder mirrored: ``d×h×w → C×4h×4w`` logits, with transposed 4×4 stride-2 convolutions."""

    def __init__(self, out_channels: int, hidden: int, res_hidden: int, num_res: int, code_dim: int):
        super().__init__()
        half = max(hidden // 2, 1)
        self.net = nn.Sequential(
            nn.Conv2d(code_dim, hidden, 3, padding=1),
            *[ResidualBlock(hidden, res_hidden) for _ in range(num_res)],
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, half, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(half, out_channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class VQVAE(nn.Module):
    """``encoder → quantizer → decoder``; the decoder returns logits (``sigmoid`` gives pixels in [0, 1])."""

    def __init__(self, in_shape: tuple[int, int, int], encoder: Encoder, quantizer: VectorQuantizer,
                 decoder: Decoder):
        super().__init__()
        self.in_shape = tuple(in_shape)
        self.grid = (in_shape[1] // 4, in_shape[2] // 4)
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``logits`` ``(B, C, H, W)``, ``z_e``, and the quantizer's outputs (see :meth:`VectorQuantizer.forward`)."""
        z_e = self.encoder(x)
        out = self.quantizer(z_e)
        out["z_e"] = z_e
        out["logits"] = self.decoder(out["z_q"])
        return out

    @torch.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """Code indices ``(B, h, w)`` (int64) of images ``x``."""
        return self.quantizer.quantize(self.encoder(x))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Decoder logits of an index grid ``(B, h, w)``."""
        return self.decoder(self.quantizer.lookup(indices))


@MODELS.register("vqvae", help="VQ-VAE: conv encoder, K-code codebook (EMA, dead-code restart), "
                               "conv decoder (§9.7)", tags=("method:vqvae",))
def vqvae(
    in_shape: InShape = (1, 28, 28),
    num_classes: PosInt = 10,
    num_codes: Annotated[int, Range(2)] = 512,
    code_dim: PosInt = 64,
    hidden: Annotated[int, Range(2)] = 64,
    res_hidden: PosInt = 32,
    num_res: NonNegInt = 2,
    beta: Annotated[float, Range(0), "the commitment weight, e.g. 0.25"] = 0.25,
    ema: bool = True,
    decay: Annotated[float, Range(0, 1, hi_open=True), "the EMA decay of the codebook, e.g. 0.99"] = 0.99,
    eps: Annotated[float, Range(0, lo_open=True), "Laplace smoothing, e.g. 1e-5"] = 1e-5,
    restart_after: NonNegInt = 100,
) -> VQVAE:
    """VQ-VAE of van den Oord et al. (2017), sized for CPU (course §9.7, exercise 9.5).

    * ``num_codes`` K and ``code_dim`` d: the codebook (exercise 9.5: 512 × 64);
    * ``hidden`` channels of the encoder/decoder (the first/last convolution has half),
      ``num_res`` residual blocks of ``res_hidden`` channels on each side;
    * ``beta``: commitment weight of eq. (9.25);
    * ``ema``: EMA codebook updates (decay ``decay``, Laplace smoothing ``eps``) instead of the
      codebook loss;
    * ``restart_after``: restart codes unused for this many training steps (0: never).

    ``num_classes`` is accepted for the registry's uniform signature and ignored.
    Input height and width must be multiples of 4 (code grid ``H/4 × W/4``).
    """
    if in_shape[1] % 4 or in_shape[2] % 4:
        raise ConfigError(
            f"in_shape={list(in_shape)}: the VQ-VAE encoder halves the image twice, so its height "
            "and width must be multiples of 4 (28x28 -> 7x7 code grid, 8x8 -> 2x2, 32x32 -> 8x8)."
        )
    quantizer = VectorQuantizer(num_codes, code_dim, beta, ema, decay, eps, restart_after)
    c = in_shape[0]
    return VQVAE(in_shape, Encoder(c, hidden, res_hidden, num_res, code_dim), quantizer,
                 Decoder(c, hidden, res_hidden, num_res, code_dim))


def bits_per_image(model: VQVAE) -> float:
    """Size of one image's code grid in bits: ``h · w · log2 K``."""
    h, w = model.grid
    return h * w * math.log2(model.num_codes)
