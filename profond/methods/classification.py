"""Supervised image classification (course ch. 1, 3, 4): cross-entropy training step and
accuracy / per-class accuracy / confusion-matrix evaluation.

The loss is the cross-entropy ``L_CE`` of course §1.3.2 (unnumbered there: chapters 1–2 of the
course number no equations), optionally with label smoothing
(targets ``(1-ε)·onehot + ε/K``). When Mixup or CutMix is on (§3.7), the data layer yields
soft targets and the same cross-entropy is taken against them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from ..base.coerce import Prob, Range
from ..config import RunConfig
from ..contract import Callback, Env, Method, StepContext
from ..data import Batches, build_augment
from ..errors import ConfigError, ProfondError
from ..models.transfer import freeze, load_weights
from ..registry import METHODS, MODELS
from .capabilities import ExplainsImages
from .imagedata import eval_loader, load_image_data, split_loaders


def confusion_figure(metrics: dict[str, Any], classes: list[str], folder: Path, title: str) -> dict[str, Path]:
    """confusion.png of a detailed evaluation's ``confusion_matrix`` (rows: true class)."""
    if "confusion_matrix" not in metrics or not classes:
        return {}
    from ..viz.curves import plot_confusion

    return {"confusion_png": plot_confusion(metrics["confusion_matrix"], classes, folder / "confusion.png",
                                            title=f"{title}: test accuracy {metrics['accuracy']:.4f}")}


class _ReportEpsilon(Callback):
    """Adds ``epsilon``, the privacy spent so far, to each epoch's row (metrics.csv, TensorBoard)."""

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        metrics["epsilon"] = loop.method.epsilon()


@dataclass
class DPOptions:
    #: σ, the noise multiplier of DP-SGD (course §12.7.1): noise N(0, σ²C²I) on the clipped sum
    noise: Annotated[float, Range(0), "0: no DP-SGD"] = 0.0
    #: C, the per-example gradient norm bound
    clip: Annotated[float, Range(0, lo_open=True)] = 1.0
    #: δ of the (ε, δ) guarantee reported (choose δ below 1/N)
    delta: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 1e-5


@dataclass
class ClassifierOptions:
    #: ε of label smoothing (0 = plain cross-entropy)
    label_smoothing: Annotated[Prob, "0: plain cross-entropy"] = 0.0
    #: λ of an L1 penalty λ·Σ|w| on weight matrices/kernels (biases and norms excluded), course §3.3
    l1: Annotated[float, Range(0), "0: no penalty"] = 0.0
    #: DP-SGD (course §12.7.1, def. 12.4): Poisson-sampled batches of data.batch_size on average,
    #: per-example clipping, Gaussian noise; ε reported every epoch
    dp: DPOptions = field(default_factory=DPOptions)


@METHODS.register("classifier", help="image classification with cross-entropy (ch. 1, 3, 4)")
class Classifier(Method, ExplainsImages):
    Options = ClassifierOptions
    monitor = ("val_accuracy", "max")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)  # options: types and ranges from ClassifierOptions' annotations
        self.data = load_image_data(cfg, env)
        self.classes = list(self.data.classes)
        model = MODELS.build(cfg.model.name, in_shape=tuple(self.data.shape),
                             num_classes=len(self.classes), **cfg.model.args)
        self.init_report = None
        if cfg.model.init_from:
            self.init_report = load_weights(model, cfg.model.init_from, strict=cfg.model.init_strict)
        if cfg.model.freeze:
            freeze(model, cfg.model.freeze)
        self.nets = {"model": model}
        self.dp_steps = 0  # DP-SGD steps taken (the accountant's T), across resumes
        if self.dp:
            self._check_dp(model)
        if with_data:
            self._build_loaders()

    @property
    def dp(self) -> bool:
        return self.opts.dp.noise > 0

    def _check_dp(self, model: torch.nn.Module) -> None:
        """What DP-SGD's per-example gradients and its accountant need, refused with the fix."""
        from ..privacy.dpsgd import check_per_example

        try:
            check_per_example(model)
        except ValueError as e:
            raise ConfigError(f"method.dp needs per-example gradients: {e}") from None
        c = self.cfg
        clashes = [(c.train.clip_grad_norm is not None, "train.clip_grad_norm (DP-SGD clips per example)"),
                   (c.optim.sam_rho > 0, "optim.sam_rho (SAM)"),
                   (c.data.mixup_alpha > 0 or c.data.cutmix_alpha > 0, "Mixup / CutMix"),
                   (self.opts.l1 > 0, "method.l1"), (bool(c.model.freeze), "model.freeze")]
        bad = [name for hit, name in clashes if hit]
        if bad:
            raise ConfigError(f"method.dp (DP-SGD) does not combine with {', '.join(bad)}: turn "
                              f"{'it' if len(bad) == 1 else 'them'} off or set method.dp.noise=0.")

    def _build_loaders(self) -> None:
        d, k = self.cfg.data, len(self.classes)
        aug = build_augment(d.augment, mixup_alpha=d.mixup_alpha, cutmix_alpha=d.cutmix_alpha, num_classes=k)
        self.train_data, self.val_data = split_loaders(
            self.cfg, self.env, self.data.train_x, self.data.train_y, norm=self._norm(), augment=aug,
            num_classes=k, channels_last=self.cfg.train.channels_last, poisson=self.dp)

    def _norm(self) -> dict[str, Any]:
        return {"mean": self.data.mean, "std": self.data.std}

    def test_data(self) -> Batches:
        d = self.data
        return eval_loader(self.cfg, self.env, d.test_x, d.test_y, norm=self._norm(), num_classes=len(self.classes),
                           channels_last=self.cfg.train.channels_last)

    def describe(self) -> dict[str, Any]:
        d = self.data
        privacy = None
        if self.dp:
            o = self.opts.dp
            privacy = {"mechanism": "DP-SGD, Poisson sampling, RDP accountant", "epsilon": self.epsilon(),
                       "delta": o.delta, "noise_multiplier": o.noise, "clip": o.clip,
                       "sample_rate": getattr(self.train_data, "sample_rate", None), "steps": self.dp_steps}
        return {"privacy": privacy, "dataset": d.name, "data_source": d.source, "classes": self.classes,
                "train_examples": getattr(self.train_data, "num_samples", None),
                "test_examples": len(d.test_y),
                "init_from": (None if self.init_report is None else
                              {"path": self.cfg.model.init_from, "loaded": len(self.init_report.loaded),
                               "skipped": [str(k) for k in self.init_report.skipped]})}

    def eval_figures(self, metrics: dict[str, Any], folder: Path, title: str) -> dict[str, Path]:
        return confusion_figure(metrics, self.classes, folder, title)

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        if self.dp:
            return self._dp_step(batch, ctx)
        x, y = batch
        logits = self.nets["model"](x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.opts.label_smoothing)
        out = {"loss": loss.detach()}
        if self.opts.l1:
            penalty = sum(p.abs().sum() for p in self.raw_nets["model"].parameters()
                          if p.requires_grad and p.dim() > 1)
            out["l1_penalty"] = penalty.detach()
            loss = loss + self.opts.l1 * penalty
        ctx.optimize(loss)
        hard = y.argmax(1) if y.is_floating_point() else y
        out["accuracy"] = (logits.detach().argmax(1) == hard).float().mean()
        return out

    # -- explanations (course §12.5) -------------------------------------------------------------
    def pixel_model(self) -> torch.nn.Module:
        from ..explain import standardised

        return standardised(self.raw_nets["model"], self.data.mean, self.data.std).eval()

    def test_image(self, index: int) -> tuple[torch.Tensor, str]:
        d = self.data
        n = len(d.test_y)
        if not 0 <= index < n:
            raise ProfondError(f"--index {index} is out of range: the test set of {d.name!r} has {n} images "
                               f"(0..{n - 1}).")
        x = d.test_x[index: index + 1].float() / 255.0
        return x, f"test image {index} of {d.name} (label: {self.classes[int(d.test_y[index])]})"

    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    # -- DP-SGD (course §12.7.1) ---------------------------------------------------------------
    def _dp_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        """g̃ = (1/B)(Σ_i clip(g_i, C) + N(0, σ²C²I)) with B = q·N, the expected batch size
        (dividing by the realised size would make the scale depend on the data); the optimizer
        steps with g̃ through a surrogate loss whose gradient is exactly g̃. The noise of step t
        is seeded by (train.seed, t): a resumed run draws the same noise."""
        from ..data.loader import mix_seed
        from ..privacy.dpsgd import dp_gradient, surrogate_loss

        x, y = batch
        net, o = self.raw_nets["model"], self.opts.dp
        smoothing = self.opts.label_smoothing
        gen = torch.Generator(device=x.device).manual_seed(mix_seed(self.cfg.train.seed, self.dp_steps, 0xD9))
        expected = float(self.cfg.data.batch_size)  # B = q·N
        g = dp_gradient(net, lambda out, t: F.cross_entropy(out.float(), t, label_smoothing=smoothing), x, y,
                        max_norm=o.clip, noise_multiplier=o.noise, batch_size=expected, generator=gen)
        ctx.optimize(surrogate_loss(net, g))
        self.dp_steps += 1
        if len(y) == 0:  # a Poisson batch may be empty: noise only, nothing to report
            return {}
        with torch.no_grad():
            logits = self.nets["model"](x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=smoothing)
        return {"loss": loss, "accuracy": (logits.argmax(1) == y).float().mean()}

    def epsilon(self) -> float | None:
        """ε of the (ε, δ) guarantee after the DP-SGD steps taken so far (RDP accountant)."""
        if not self.dp or getattr(self.train_data, "sample_rate", None) is None:
            return None
        from ..privacy import epsilon

        return epsilon(self.train_data.sample_rate, self.opts.dp.noise, self.dp_steps, self.opts.dp.delta)

    def callbacks(self) -> list[Any]:
        return [*super().callbacks(), _ReportEpsilon()] if self.dp else super().callbacks()

    def state_dict(self) -> dict[str, Any]:
        return {"dp_steps": self.dp_steps} if self.dp else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dp_steps = int(state.get("dp_steps", 0))

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        k = len(self.classes)
        confusion = torch.zeros(k, k, dtype=torch.long, device=self.env.device)
        loss_sum, n = 0.0, 0
        for x, y in batches.batches(0):
            with ctx.autocast():
                logits = self.nets["model"](x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").item()
            pred = logits.argmax(1)
            confusion += torch.bincount(y * k + pred, minlength=k * k).view(k, k)
            n += len(y)
        confusion = confusion.cpu()
        out: dict[str, Any] = {
            "loss": loss_sum / max(n, 1),
            "accuracy": confusion.diag().sum().item() / max(n, 1),
        }
        if detailed:
            per_class = confusion.diag().float() / confusion.sum(1).clamp(min=1).float()
            out["per_class_accuracy"] = {c: round(a, 4) for c, a in zip(self.classes, per_class.tolist(), strict=True)}
            out["confusion_matrix"] = confusion.tolist()
            out["examples"] = n
        return out
