r"""The ``vqvae`` method: training and evaluation of a VQ-VAE (course §9.7, exercise 9.5).

**Training step.** With :math:`\hat x = \sigma(\mathrm{decoder}(z_q))`, the loss of eq. (9.25)

.. math::
    \mathcal L = \underbrace{\ell(x, \hat x)}_{\texttt{recon}}
    + \underbrace{\lVert \mathrm{sg}[z_e(x)] - e_{k^*}\rVert^2}_{\texttt{vq\_loss}}
    + \underbrace{\beta\,\lVert z_e(x) - \mathrm{sg}[e_{k^*}]\rVert^2}_{\texttt{commit}}

where :math:`\ell` is the per-pixel mean squared error (``method.recon: mse``, the course's
:math:`\lVert x-\hat x\rVert^2` up to a constant factor) or the per-pixel binary cross-entropy
on the decoder's logits (``recon: bce``); the VQ terms are means over the code grid (see
:class:`~profond.models.vqvae.VectorQuantizer`). The gradient crosses the quantisation with
the straight-through estimator (remark 9.9). With the EMA codebook (``model.ema: true``,
the default) the codebook term is not part of :math:`\mathcal L` (the codebook is then
moved by the EMA update, not by the optimizer); ``vq_loss`` is still logged, as the mean
squared quantisation error. After each optimizer step the quantizer's
:meth:`~profond.models.vqvae.VectorQuantizer.update` runs the EMA update and dead-code restarts.

Logged per step: ``loss``, ``recon``, ``vq_loss``, ``commit`` (:math:`\beta`-weighted),
``perplexity`` :math:`\exp(-\sum_k p_k\log p_k)` and ``usage`` (fraction of the K codes used)
of the batch's code frequencies :math:`p`, and ``restarts`` (codes re-initialised).

**Evaluation** (``val_*`` / ``test_*``): ``loss``, ``recon``, ``vq_loss``, ``commit`` as above;
``mse`` (pixel MSE of :math:`\hat x`, whatever the recon loss); ``psnr`` — the mean over
images of :math:`10\log_{10}(1/\mathrm{MSE}_i)` (pixels in [0, 1]); and over the whole split
``usage`` (fraction of the K codes used at least once) and ``perplexity``.

**No sampling.** A VQ-VAE has no prior over code grids of its own: generating needs a
prior :math:`p(k_{11}, \dots, k_{hw})` fitted to the codes (PixelCNN, transformer: the
autoregressive models of a later chapter). It does not declare ``SamplesImages``; :func:`export_codes`
writes the code grids such a prior is trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import RunConfig
from ..contract import Env, StepContext
from ..errors import ConfigError, ProfondError
from ..models.vqvae import VQVAE, usage_stats
from ..registry import METHODS
from .autoencoder import psnr
from .capabilities import ExportsCodes, Reconstructs
from .generative import GenerativeMethod, batched


@dataclass
class VQVAEOptions:
    #: reconstruction term: ``mse`` (pixel MSE of sigmoid(logits)) or ``bce`` (binary cross-entropy on logits)
    recon: Literal["mse", "bce"] = "mse"


def recon_loss(logits: Tensor, x: Tensor, kind: str) -> Tensor:
    """Per-pixel mean reconstruction loss of decoder ``logits`` against images ``x`` in [0, 1]."""
    logits = logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, x)
    return F.mse_loss(torch.sigmoid(logits), x)


@METHODS.register("vqvae", help="VQ-VAE: reconstruction + codebook + commitment losses (§9.7)")
class VQVAEMethod(GenerativeMethod, Reconstructs, ExportsCodes):
    Options = VQVAEOptions
    has_latent = False
    monitor = ("val_loss", "min")
    no_sampling_reason = ("a VQ-VAE has no prior over its code grids (sampling needs an autoregressive prior "
                          "fitted to the codes: `profond latent RUN --codes` exports them)")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)  # options checked by VQVAEOptions' annotations
        model = self.build_model()
        if not isinstance(model, VQVAE):
            raise ConfigError(f"method 'vqvae' needs a VQ-VAE model (model.name=vqvae), "
                              f"not {cfg.model.name!r}.")
        model.quantizer.seed = int(cfg.train.seed)  # dead-code restart draws follow the run's seed
        self.nets = {"model": model}

    # -- helpers -----------------------------------------------------------------------------
    @property
    def model(self) -> VQVAE:
        """The unwrapped VQ-VAE (not its DDP / compiled wrapper)."""
        return self.unwrapped()  # type: ignore[return-value]

    @property
    def grid(self) -> tuple[int, int]:
        return self.model.grid

    def describe(self) -> dict[str, Any]:
        q = self.model.quantizer
        return {**super().describe(), "num_codes": q.num_codes, "code_dim": q.code_dim,
                "code_grid": list(self.grid), "ema_codebook": q.ema}

    # -- training ----------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, _ = batch
        out = self.nets["model"](x)
        recon = recon_loss(out["logits"], x, self.opts.recon)
        loss = recon + out["vq_loss"]
        ctx.optimize(loss)
        q = self.model.quantizer
        stats = q.update(out["z_e"].detach(), out["indices"])  # EMA codebook + dead-code restart
        return {"loss": loss.detach(), "recon": recon.detach(), "vq_loss": out["codebook_loss"].detach(),
                "commit": (q.beta * out["commitment"]).detach(), **stats}

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, **kw: Any) -> dict[str, float]:
        q = self.model.quantizer
        counts = torch.zeros(q.num_codes, dtype=torch.long, device=self.env.device)
        sums = dict(loss=0.0, recon=0.0, vq_loss=0.0, commit=0.0, mse=0.0, psnr=0.0)
        n = 0
        for x, _ in batches.batches(0):
            with ctx.autocast():
                out = self.nets["model"](x)
            b = len(x)
            recon = recon_loss(out["logits"], x, self.opts.recon)
            pred = torch.sigmoid(out["logits"].float())
            per_image = (pred - x).pow(2).flatten(1).mean(1)
            sums["loss"] += float(recon + out["vq_loss"]) * b
            sums["recon"] += float(recon) * b
            sums["vq_loss"] += float(out["codebook_loss"]) * b
            sums["commit"] += float(q.beta * out["commitment"]) * b
            sums["mse"] += float(per_image.sum())
            sums["psnr"] += float(psnr(pred, x).sum())
            counts += torch.bincount(out["indices"].flatten(), minlength=q.num_codes)
            n += b
        res = {k: v / max(n, 1) for k, v in sums.items()}
        res.update(usage_stats(counts.cpu()))
        return res

    # -- generative hooks --------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        raise ProfondError(
            "method 'vqvae' cannot sample new images: a VQ-VAE has no prior over its code grids. "
            "Sampling needs an autoregressive prior (PixelCNN / transformer) fitted to the codes "
            "(later chapter); export them with `profond latent RUN --codes`. Use a VAE, GAN or "
            "diffusion model to sample now."
        )

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructions in [0, 1] (CPU) of [0, 1] images ``(N, C, H, W)``."""
        m = self.model
        return batched(lambda xb: torch.sigmoid(m(self.to_device(xb))["logits"].float()).cpu(), x)

    def export_codes(self, path: Path, *, split: str = "test", run: str = "") -> Path:
        return export_codes(self, path, split=split, run=run or None)

    @torch.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """Code indices ``(N, h, w)`` (int64, CPU) of [0, 1] images ``(N, C, H, W)`` (eq. 9.24)."""
        m = self.model
        return batched(lambda xb: m.encode_indices(self.to_device(xb)).cpu(), x)

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """Images in [0, 1] (CPU) decoded from code indices ``(N, h, w)``."""
        m = self.model
        if indices.dim() != 3 or tuple(indices.shape[1:]) != tuple(self.grid):
            raise ConfigError(f"code indices must have shape (N, {self.grid[0]}, {self.grid[1]}), "
                              f"got {tuple(indices.shape)}.")
        return batched(lambda ib: torch.sigmoid(
            m.decode_indices(ib.to(self.env.device)).float()).cpu(), indices)


SPLITS = ("test", "train")


def export_codes(method: VQVAEMethod, path: str | Path, split: str = "test", *,
                 run: str | None = None) -> Path:
    """Write the code grids of a split to a safetensors file and return its path.

    Tensors: ``indices`` int64 ``(N, h, w)`` (eq. 9.24 on every image of the split) and
    ``labels`` int64 ``(N,)``. ``split`` is ``test`` or ``train`` (the whole training set,
    validation part included, in the dataset's order). The file's metadata holds one key,
    ``profond``, a JSON object: ``format`` (``profond-vq-codes/1``), ``num_codes`` (K),
    ``code_dim``, ``grid`` ([h, w]), ``image_shape``, ``dataset``, ``split``, ``examples``,
    ``model`` and ``run`` (``run`` if given, else the run folder of the config, or null).
    Read it back with ``safetensors.safe_open(path, "pt").metadata()["profond"]``.
    """
    from safetensors.torch import save

    from ..base.io import atomic_write_bytes

    if split not in SPLITS:
        raise ConfigError(f"split={split!r} is not valid. Valid values: {', '.join(SPLITS)}.")
    if not isinstance(method, VQVAEMethod):
        raise ConfigError(f"code export needs a VQ-VAE run (method vqvae), not method "
                          f"{method.cfg.method.name!r}.")
    d = method.data
    x, y = (d.test_x, d.test_y) if split == "test" else (d.train_x, d.train_y)
    was_training = method.model.training
    method.model.eval()
    try:
        idx = batched(lambda xb: method.encode_indices(xb.float() / 255.0), x)
    finally:
        method.model.train(was_training)
    cfg = method.cfg
    if run is None and cfg.name:
        run = str(Path(cfg.out) / cfg.name)
    q = method.model.quantizer
    meta = {"format": "profond-vq-codes/1", "num_codes": q.num_codes, "code_dim": q.code_dim,
            "grid": list(method.grid), "image_shape": list(method.image_shape), "dataset": d.name,
            "split": split, "examples": len(idx), "model": cfg.model.name, "run": run}
    path = Path(path)
    data = save({"indices": idx.long().contiguous(), "labels": y.long().contiguous()},
                metadata={"profond": json.dumps(meta)})
    atomic_write_bytes(path, data)
    return path
