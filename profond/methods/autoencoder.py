"""Deterministic autoencoders (course def. 9.2) and their classic variants.

The model (:func:`profond.models.ae.ae`) is an encoder ``z = f_φ(x)`` and a decoder
``x̂ = g_θ(z)``; training minimises a reconstruction error (def. 9.2: ``‖x − x̂‖²``) plus
optional penalties. **Units**: every loss is a sum over the pixels (or code units) of one
image, averaged over the batch, as for the VAE (table 9.1's per-image numbers).

Options (``method.args``, :class:`AutoencoderOptions`):

* ``loss``: ``mse`` — ``Σ_p (x̂_p − x_p)²`` with ``x̂ = sigmoid(logits)`` (identity output for a
  linear AE); ``bce`` — ``Σ_p BCE(x̂_p, x_p)`` from logits (not for a linear AE).
* **denoising** (Vincent et al. 2008): ``noise: gaussian`` (``x̃ = clip(x + s·N(0, 1), 0, 1)``)
  or ``salt-pepper`` (a fraction ``s`` of the pixels set to 0 or 1 with probability ½ each),
  ``s = noise_level``; the loss compares ``g(f(x̃))`` with the *clean* ``x``. Evaluation corrupts
  with a seeded generator and reports ``psnr_noisy`` (noisy input vs clean), ``psnr`` (output vs
  clean) and ``psnr_gain``; PSNR is ``10 log₁₀(1 / MSE)`` per image (pixels in [0, 1]), averaged.
* **sparse** AE: ``l1_code`` weight of ``Σ_j |z_j|``, and ``kl_sparsity`` weight of
  ``Σ_j KL(ρ ‖ ρ̂_j) = Σ_j ρ log(ρ/ρ̂_j) + (1−ρ) log((1−ρ)/(1−ρ̂_j))`` where ``ρ̂_j`` is the
  batch mean of code unit ``j`` (Ng 2011); this needs codes in (0, 1): ``model.code_activation:
  sigmoid``. ``evaluate`` reports ``code_mean`` (mean ``ρ̂``), which approaches ``rho``.
* **contractive** AE (Rifai et al. 2011): ``contractive`` weight of ``‖J_f(x)‖_F²``, the squared
  Frobenius norm of the encoder's Jacobian, per image. Exact in both cases it is computed:
  in **closed form** for a one-layer sigmoid encoder (``hidden: []``, ``code_activation:
  sigmoid``): ``h = σ(Wx + b)`` gives ``‖J‖_F² = Σ_j (h_j(1−h_j))² ‖W_j‖²``; otherwise by
  **autograd**, one double-backward per code unit (``latent_dim`` passes). mlp encoders only
  (BatchNorm's batch statistics would couple the images of a conv encoder).
* **one-class anomaly detection** (``normal_class: c``): train and validation splits are the
  usual seeded split of the training set, *filtered to class c*; the test set is kept whole.
  The anomaly score of an image is its reconstruction error (the training ``loss``, on the
  clean image: :func:`anomaly_scores`). ``evaluate`` on data holding both normal and other
  classes reports ``roc_auc`` (anomaly = not class c, ``sklearn.metrics.roc_auc_score``), and
  at a threshold picked on validation data only — the ``anomaly_quantile`` (default 0.95)
  quantile of the normal validation images' scores, i.e. a 5 % false-alarm rate expected on
  normal data — its ``precision``, ``recall`` and ``f1``; ``detailed=True`` adds the ROC
  curve (``roc_fpr``, ``roc_tpr``).

An autoencoder has no prior, so it cannot sample (it does not declare ``SamplesImages``); ``encode`` /
``decode`` expose the code for ``profond latent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..base.coerce import Range, Seed
from ..config import RunConfig
from ..contract import Env, StepContext
from ..data import Batches
from ..data.vision import DEFAULT_VAL_MAX, default_val_size
from ..errors import ConfigError
from ..models.ae import AutoEncoder, MLPEncoder
from ..registry import METHODS
from .capabilities import Reconstructs
from .generative import EncodedLatent, GenerativeMethod, batched

#: PSNR is capped at 100 dB (MSE floor 1e-10) so a perfect reconstruction stays finite
MSE_FLOOR = 1e-10


@dataclass
class AutoencoderOptions:
    #: mse | bce (per-image sums)
    loss: Literal["mse", "bce"] = "mse"
    #: none | gaussian | salt-pepper (denoising AE)
    noise: Literal["none", "gaussian", "salt-pepper"] = "none"
    #: σ of the Gaussian noise, or the fraction of salt-and-pepper pixels (then at most 1)
    noise_level: Annotated[float, Range(0), "0: no noise; salt-pepper: a fraction in [0, 1]"] = 0.3
    #: weight of Σ_j |z_j| (sparse AE)
    l1_code: Annotated[float, Range(0), "a penalty weight, 0: off"] = 0.0
    #: weight of Σ_j KL(ρ ‖ ρ̂_j) on sigmoid codes (sparse AE)
    kl_sparsity: Annotated[float, Range(0), "a penalty weight, 0: off"] = 0.0
    #: target mean activation ρ of the KL sparsity penalty
    rho: Annotated[float, Range(0, 1, lo_open=True, hi_open=True), "a target activation, e.g. 0.05"] = 0.05
    #: weight of ‖J_f(x)‖_F² (contractive AE)
    contractive: Annotated[float, Range(0), "a penalty weight, 0: off"] = 0.0
    #: one-class anomaly detection: train on this class only (None = all classes)
    normal_class: Annotated[int, Range(0), "a class index, null: all classes"] | None = None
    #: quantile of the normal validation scores used as the anomaly threshold
    anomaly_quantile: Annotated[float, Range(0, 1, lo_open=True, hi_open=True), "e.g. 0.95"] = 0.95
    #: seed of the evaluation noise
    eval_seed: Seed = 0


def corrupt(x: Tensor, noise: str, level: float, generator: torch.Generator | None = None) -> Tensor:
    """The denoising AE's corruption ``x̃ ~ q(x̃|x)`` of [0, 1] images (global RNG unless ``generator``)."""
    if noise == "none" or level == 0:
        return x
    if noise == "gaussian":
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + level * eps).clamp_(0.0, 1.0)
    u = torch.rand((2, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
    return torch.where(u[0] < level, (u[1] < 0.5).to(x.dtype), x)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Per-image PSNR in dB of [0, 1] images: ``10 log₁₀(1 / mean_p (a_p − b_p)²)``."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return -10.0 * torch.log10(mse.clamp(min=MSE_FLOOR))


def kl_bernoulli(rho: float, rho_hat: Tensor) -> Tensor:
    """``KL(Bernoulli(ρ) ‖ Bernoulli(ρ̂))`` per unit (the sparse AE penalty)."""
    rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


def jacobian_frobenius(model: AutoEncoder, x: Tensor, code: Tensor | None = None) -> Tensor:
    """``‖∂f(x)/∂x‖_F²`` per image, differentiable (the contractive penalty).

    Closed form for a single sigmoid layer ``h = σ(Wx + b)``:
    ``∂h_j/∂x_i = h_j(1 − h_j) W_ji``, so ``‖J‖_F² = Σ_j (h_j(1−h_j))² Σ_i W_ji²``.
    Otherwise exact by autograd: ``Σ_j ‖∇_x h_j‖²`` with one backward pass per code unit
    (``x`` must require grad and ``code = model.encode(x)`` be its graph).
    """
    enc = model.encoder
    layers = list(enc.net) if isinstance(enc, MLPEncoder) else []
    if model.code_activation == "sigmoid" and len(layers) == 1 and isinstance(layers[0], nn.Linear):
        h = model.encode(x) if code is None else code
        w2 = layers[0].weight.pow(2).sum(1)  # ‖W_j‖² per code unit
        return ((h * (1 - h)).pow(2) * w2).sum(1)
    if code is None:
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        code = model.encode(x)
    total = torch.zeros(len(x), device=x.device)
    for j in range(code.shape[1]):
        (g,) = torch.autograd.grad(code[:, j].sum(), x, create_graph=True)
        total = total + g.pow(2).flatten(1).sum(1)
    return total


@METHODS.register("autoencoder", help="autoencoder: plain / denoising / sparse / contractive / one-class anomaly")
class AutoencoderMethod(GenerativeMethod, Reconstructs, EncodedLatent):
    Options = AutoencoderOptions
    has_latent = True

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        self._checked = False
        super().__init__(cfg, env, with_data=with_data)
        self.check_options()
        model = self.build_model()
        if not isinstance(model, AutoEncoder):
            raise ConfigError(f"method 'autoencoder' needs an autoencoder model; model {cfg.model.name!r} "
                              "is not one: use model.name=ae (or method.name=vae for a VAE).")
        o = self.opts
        if model.out_activation == "identity" and o.loss == "bce":
            raise ConfigError("loss='bce' needs a sigmoid output; a linear AE (model.linear=true) "
                              "reconstructs with an identity output: use method.loss=mse.")
        if o.kl_sparsity and model.code_activation != "sigmoid":
            raise ConfigError("method.kl_sparsity compares mean code activations with rho, which needs "
                              "codes in (0, 1): set model.code_activation=sigmoid.")
        if o.contractive and model.arch != "mlp":
            raise ConfigError("method.contractive is computed for mlp encoders (BatchNorm couples the "
                              "images of a conv encoder): set model.arch=mlp.")
        self.latent_dim = int(model.latent_dim)
        self.nets = {"model": model}
        self._val_for_threshold: Batches | None = None

    def check_options(self) -> None:
        if self._checked:
            return
        # types and ranges: the annotations of AutoencoderOptions (checked by parse_options)
        o = self.opts
        if o.noise == "salt-pepper" and o.noise_level > 1:
            raise ConfigError(f"bad value for 'method.noise_level': {o.noise_level}; a salt-and-pepper "
                              "fraction of pixels is in [0, 1].")
        c, k = o.normal_class, len(self.classes)
        if c is not None and c >= k:
            raise ConfigError(f"bad value for 'method.normal_class': {c}; the dataset "
                              f"{self.cfg.data.name!r} has classes 0..{k - 1} ({', '.join(self.classes)}).")
        self._checked = True

    # -- data: one-class filtering --------------------------------------------------------------
    def build_loaders(self, x: Tensor | None = None, y: Tensor | None = None) -> tuple[Batches, Batches | None]:
        """The usual seeded train/val split; with ``normal_class`` both parts keep that class only."""
        self.check_options()
        c = self.opts.normal_class
        if c is None:
            return super().build_loaders(x, y)
        train, val = super().build_loaders(x, y, keep_class=c)
        if val is None:
            d = self.cfg.data
            used = default_val_size(d.val_size, len(self.data.train_x if x is None else x))
            size = f"data.val_size={used}" if d.val_size is not None else (
                f"data.val_size=null ({used} images: a tenth of the training set, at most {DEFAULT_VAL_MAX})")
            raise ConfigError(f"method.normal_class={c} needs normal validation images to pick the anomaly "
                              f"threshold; {size} holds none of class {c}: raise data.val_size.")
        return train, val

    # -- pieces ---------------------------------------------------------------------------------

    def to_image(self, out: Tensor) -> Tensor:
        """Decoder output -> [0, 1] image: sigmoid of logits (identity, clipped, for a linear AE)."""
        if self.unwrapped().out_activation == "identity":
            return out.float().clamp(0.0, 1.0)
        return torch.sigmoid(out.float())

    def recon_error(self, out: Tensor, x: Tensor) -> Tensor:
        """Per-image reconstruction loss (sum over pixels): the training loss and the anomaly score."""
        if self.opts.loss == "bce":
            return F.binary_cross_entropy_with_logits(out.float(), x, reduction="none").flatten(1).sum(1)
        pred = out.float() if self.unwrapped().out_activation == "identity" else torch.sigmoid(out.float())
        return (pred - x).pow(2).flatten(1).sum(1)

    # -- training -------------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        o = self.opts
        x = batch[0]
        xin = corrupt(x, o.noise, o.noise_level)
        if o.contractive:
            xin = xin.detach().requires_grad_(True)
        out, code = self.nets["model"](xin)
        rec = self.recon_error(out, x).mean()
        loss = rec
        metrics: dict[str, Any] = {"recon": rec.detach()}
        if o.l1_code:
            pen = code.float().abs().sum(1).mean()
            loss = loss + o.l1_code * pen
            metrics["l1_code"] = pen.detach()
        if o.kl_sparsity:
            pen = kl_bernoulli(o.rho, code.float().mean(0)).sum()
            loss = loss + o.kl_sparsity * pen
            metrics["kl_sparsity"] = pen.detach()
        if o.contractive:
            pen = jacobian_frobenius(self.unwrapped(), xin, code).mean()
            loss = loss + o.contractive * pen
            metrics["jacobian_fro2"] = pen.detach()
        ctx.optimize(loss)
        metrics["loss"] = loss.detach()
        metrics["code_mean"] = code.detach().float().mean()
        return metrics

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def _scores_labels(self, batches: Any) -> tuple[Tensor, Tensor]:
        model = self.unwrapped()
        scores, labels = [], []
        for x, y in batches.batches(0):
            out, _ = model(x)
            scores.append(self.recon_error(out, x).cpu())
            labels.append(y.cpu())
        return torch.cat(scores), torch.cat(labels)

    def threshold(self) -> float:
        """The anomaly threshold: the ``anomaly_quantile`` quantile of the normal validation scores."""
        val = self.val_data if isinstance(self.val_data, Batches) else self._val_for_threshold
        if val is None:  # built without data (profond eval): rebuild the seeded validation split
            _, val = self.build_loaders()
            self._val_for_threshold = val
        assert val is not None
        scores, _ = self._scores_labels(val)
        return float(torch.quantile(scores.double(), self.opts.anomaly_quantile))

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        o, model = self.opts, self.unwrapped()
        g = self.generator(o.eval_seed)
        loss_sum = sq_sum = psnr_sum = psnr_noisy_sum = code_sum = 0.0
        n, pixels = 0, 0
        scores, labels = [], []
        for x, y in batches.batches(0):
            xin = corrupt(x, o.noise, o.noise_level, generator=g)
            with ctx.autocast():
                out, code = model(xin)
            rec = self.recon_error(out, x)
            loss_sum += rec.sum().item()
            img = self.to_image(out)
            sq_sum += (img - x).pow(2).sum().item()
            psnr_sum += psnr(img, x).sum().item()
            if o.noise != "none":
                psnr_noisy_sum += psnr(xin, x).sum().item()
            code_sum += code.float().mean(1).sum().item()
            if o.normal_class is not None:
                if o.noise != "none":  # the score is the error on the clean image
                    with ctx.autocast():
                        rec = self.recon_error(model(x)[0], x)
                scores.append(rec.cpu())
                labels.append(y.cpu())
            n += len(x)
            pixels += x[0].numel() * len(x)
        n = max(n, 1)
        res: dict[str, Any] = {"loss": loss_sum / n, "mse": sq_sum / max(pixels, 1), "psnr": psnr_sum / n,
                               "code_mean": code_sum / n}
        if o.noise != "none":
            res["psnr_noisy"] = psnr_noisy_sum / n
            res["psnr_gain"] = res["psnr"] - res["psnr_noisy"]
        if scores:
            res.update(self._anomaly_metrics(torch.cat(scores), torch.cat(labels), detailed))
        return res

    def _anomaly_metrics(self, scores: Tensor, labels: Tensor, detailed: bool) -> dict[str, Any]:
        is_anomaly = (labels != self.opts.normal_class).numpy()
        if is_anomaly.all() or not is_anomaly.any():  # e.g. the (normal-only) validation split
            return {}
        from sklearn.metrics import precision_recall_fscore_support, roc_auc_score, roc_curve

        s = scores.double().numpy()
        thr = self.threshold()
        pred = s > thr
        p, r, f1, _ = precision_recall_fscore_support(is_anomaly, pred, average="binary", zero_division=0)
        out: dict[str, Any] = {"roc_auc": float(roc_auc_score(is_anomaly, s)), "threshold": thr,
                               "precision": float(p), "recall": float(r), "f1": float(f1),
                               "false_alarm_rate": float(pred[~is_anomaly].mean())}
        if detailed:
            fpr, tpr, _ = roc_curve(is_anomaly, s)
            out["roc_fpr"] = [round(float(v), 6) for v in fpr]
            out["roc_tpr"] = [round(float(v), 6) for v in tpr]
            out["anomaly_fraction"] = float(is_anomaly.mean())
        return out

    def eval_figures(self, metrics: dict[str, Any], folder: Path, title: str) -> dict[str, Path]:
        """roc.png of an anomaly run (``normal_class`` set): the ROC curve of the test set."""
        if "roc_fpr" not in metrics or "roc_tpr" not in metrics or "roc_auc" not in metrics:
            return {}
        from ..viz.images import save_roc

        c = self.opts.normal_class
        name = f"normal class {c} ({self.classes[c]})" if c is not None else "reconstruction error"
        curve = (metrics["roc_fpr"], metrics["roc_tpr"], metrics["roc_auc"])
        return {"roc_png": save_roc({name: curve}, folder / "roc.png", title=f"{title}: anomaly ROC")}

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {**super().describe(), "loss": o.loss, "noise": o.noise, "normal_class": o.normal_class}

    # -- generative hooks ------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Codes ``f_φ(x)`` of clean [0, 1] images."""
        with self.eval_mode() as model:
            return batched(lambda xx: model.encode(xx).float(), self.to_device(x)).cpu()

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        with self.eval_mode() as model:
            return batched(lambda zz: self.to_image(model.decode(zz)), self.to_device(z)).cpu()

    @torch.no_grad()
    def anomaly_scores(self, x: Tensor) -> Tensor:
        """Per-image reconstruction error of clean [0, 1] images (CPU): the anomaly score."""
        with self.eval_mode() as model:
            return batched(lambda xx: self.recon_error(model(xx)[0], xx), self.to_device(x)).cpu()


def anomaly_scores(method: AutoencoderMethod, x01: Tensor) -> Tensor:
    """Anomaly scores of [0, 1] images ``(N, C, H, W)``: the per-image reconstruction error
    (the method's ``loss``, on the clean image), higher = more anomalous. CPU tensor ``(N,)``."""
    return method.anomaly_scores(x01)


__all__ = ["AutoencoderMethod", "AutoencoderOptions", "anomaly_scores", "corrupt", "psnr",
           "jacobian_frobenius", "kl_bernoulli"]
