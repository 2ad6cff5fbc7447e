"""Supervised image classification (course ch. 1, 3, 4): cross-entropy training step and
accuracy / per-class accuracy / confusion-matrix evaluation.

The loss is the cross-entropy ``L_CE`` of course §1.3.2 (unnumbered there: chapters 1–2 of the
course number no equations), optionally with label smoothing
(targets ``(1-ε)·onehot + ε/K``). When Mixup or CutMix is on (§3.7), the data layer yields
soft targets and the same cross-entropy is taken against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F

from ..base.coerce import Prob, Range
from ..config import RunConfig
from ..contract import Env, Method, StepContext
from ..data import Batches, build_augment
from ..models.transfer import freeze, load_weights
from ..registry import METHODS, MODELS
from .imagedata import eval_loader, load_image_data, split_loaders


def confusion_figure(metrics: dict[str, Any], classes: list[str], folder: Path, title: str) -> dict[str, Path]:
    """confusion.png of a detailed evaluation's ``confusion_matrix`` (rows: true class)."""
    if "confusion_matrix" not in metrics or not classes:
        return {}
    from ..viz.curves import plot_confusion

    return {"confusion_png": plot_confusion(metrics["confusion_matrix"], classes, folder / "confusion.png",
                                            title=f"{title}: test accuracy {metrics['accuracy']:.4f}")}


@dataclass
class ClassifierOptions:
    #: ε of label smoothing (0 = plain cross-entropy)
    label_smoothing: Annotated[Prob, "0: plain cross-entropy"] = 0.0
    #: λ of an L1 penalty λ·Σ|w| on weight matrices/kernels (biases and norms excluded), course §3.3
    l1: Annotated[float, Range(0), "0: no penalty"] = 0.0


@METHODS.register("classifier", help="image classification with cross-entropy (ch. 1, 3, 4)")
class Classifier(Method):
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
        if with_data:
            self._build_loaders()

    def _build_loaders(self) -> None:
        d, k = self.cfg.data, len(self.classes)
        aug = build_augment(d.augment, mixup_alpha=d.mixup_alpha, cutmix_alpha=d.cutmix_alpha, num_classes=k)
        self.train_data, self.val_data = split_loaders(
            self.cfg, self.env, self.data.train_x, self.data.train_y, norm=self._norm(), augment=aug,
            num_classes=k, channels_last=self.cfg.train.channels_last)

    def _norm(self) -> dict[str, Any]:
        return {"mean": self.data.mean, "std": self.data.std}

    def test_data(self) -> Batches:
        d = self.data
        return eval_loader(self.cfg, self.env, d.test_x, d.test_y, norm=self._norm(), num_classes=len(self.classes),
                           channels_last=self.cfg.train.channels_last)

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {"dataset": d.name, "data_source": d.source, "classes": self.classes,
                "train_examples": getattr(self.train_data, "num_samples", None),
                "test_examples": len(d.test_y),
                "init_from": (None if self.init_report is None else
                              {"path": self.cfg.model.init_from, "loaded": len(self.init_report.loaded),
                               "skipped": [str(k) for k in self.init_report.skipped]})}

    def eval_figures(self, metrics: dict[str, Any], folder: Path, title: str) -> dict[str, Path]:
        return confusion_figure(metrics, self.classes, folder, title)

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
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
