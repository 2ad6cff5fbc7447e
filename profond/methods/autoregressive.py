r"""The ``autoregressive`` method: PixelCNN over pixels, or as the prior of a VQ-VAE (course §9.7).

**Objective.** The model (:mod:`profond.models.pixelcnn`) gives in one pass the ``K``-way
logits of every pixel given the earlier ones, so the exact negative log-likelihood of an image
is a sum of cross-entropies; the loss is its mean in **bits per dimension**

.. math:: \mathrm{bpd}(x) = -\frac{1}{D \ln 2} \sum_{i=1}^{D} \log p(x_i \mid x_{<i}),

computed by :func:`~profond.metrics.likelihood.bpd_from_logits` (``D = C·H·W``; uniform over
256 levels is 8 bits). Evaluation reports ``loss`` and ``bpd`` (the same number).

The net reads pixels as scalars in [0, 1] (``model.categorical: true``: each of the 256
levels embedded instead) and gives 256 free logits per pixel (``model.mixtures: M``: the
log-probabilities of a mixture of M discretised logistics, PixelCNN++); the loss and the sampler
are the same for all of them.

**Sampling** is sequential: ``H·W`` forward passes in raster order, each drawing pixel ``i``
from ``softmax(logits_i / τ)`` (temperature τ: ``method.temperature`` or
``profond sample --temperature``; τ < 1 sharpens every factor, τ → 0 is greedy decoding).
Output ``i`` depends on the rows up to its own only, so pass ``i`` reads those rows alone.

**A prior over VQ-VAE codes** (``method.vqvae=RUN_DIR``, course §9.7, van den Oord et al.
2017 §3.2): a VQ-VAE has no prior of its own over its ``h × w`` grids of code indices. This
method opens the finished VQ-VAE run frozen (:func:`profond.contract.open_frozen_run`), encodes
the training images into code grids once, and trains the PixelCNN on the grids (``K`` = the
code-book size, codes embedded: ``categorical``); its samples are sampled grids decoded by the
VQ-VAE into images, so ``profond sample`` and ``profond eval`` (FID, ...) work on the run. Its
numbers are then **bits per code**, ``bits_per_code`` (and ``loss``), against the
``log2 K`` of a uniform prior, not bits per pixel: the decoder is deterministic and gives
no likelihood of pixels. The code-book size is recorded as ``model.levels`` in the run's
config.yaml, and the VQ-VAE path as an absolute path (the VQ-VAE run must stay there: opening
this run reopens it); opening the run later checks that the VQ-VAE there still has ``K`` codes.

Code grids travel through the data layer as float ``(N, 1, h, w)`` tensors of the indices
(mean 0, std 1: the batches hold the indices themselves).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from torch import Tensor

from ..base.coerce import NonNegInt, Range, Seed
from ..config import RunConfig
from ..contract import Env, StepContext, open_frozen_run
from ..errors import ConfigError, ProfondError
from ..metrics.likelihood import bpd_from_logits, mutate_levels, nats_to_bpd, to_levels
from ..registry import METHODS
from .capabilities import SamplesAtTemperature, SamplesImages, ScoresLikelihood
from .gan import SampleGrid
from .generative import GenerativeMethod, batched
from .vqvae import VQVAEMethod

__all__ = ["AutoregressiveMethod", "AutoregressiveOptions"]

#: sampling shows a progress bar (stderr a terminal) from this many forward passes on
PROGRESS_MIN_PASSES = 256


@dataclass
class AutoregressiveOptions:
    #: a finished VQ-VAE run folder: train a prior over its code grids (§9.7); null: model the pixels
    vqvae: Path | None = None
    #: default sampling temperature τ (logits / τ); `profond sample --temperature` overrides it
    temperature: Annotated[float, Range(0, lo_open=True), "1: the model's own distribution"] = 1.0
    #: samples of the grid written at the end of every epoch (0: none; H·W passes each)
    grid_n: Annotated[NonNegInt, "0: no grid"] = 16
    #: seed of that grid (the same draws every epoch)
    grid_seed: Seed = 0
    #: train a background model (Ren et al. 2019): each training pixel replaced by a random level with this probability
    mutation_rate: Annotated[float, Range(0, 1), "0: the plain model; 0.1-0.3 for a background model"] = 0.0


@contextmanager
def kept_rngs() -> Iterator[None]:
    """The global RNGs (torch, numpy, random) as they were before the block."""
    import random

    import numpy as np

    state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        yield
    random.setstate(state[0])
    np.random.set_state(state[1])


@contextmanager
def pixel_progress(total: int, label: str) -> Iterator[Callable[[], None]]:
    """``advance()`` of a transient rich bar on stderr over ``total`` forward passes, shown when
    stderr is a terminal and ``total >= PROGRESS_MIN_PASSES`` (a no-op otherwise)."""
    if total < PROGRESS_MIN_PASSES or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("pixels"),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)


@METHODS.register("autoregressive", help="PixelCNN / Gated PixelCNN: exact bits/dim, pixel-by-pixel sampling; "
                                         "method.vqvae=RUN: a prior over a VQ-VAE's codes (§9.7)")
class AutoregressiveMethod(GenerativeMethod, SamplesImages, ScoresLikelihood, SamplesAtTemperature):
    Options = AutoregressiveOptions
    monitor = ("val_loss", "min")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=False)  # the loaders (pixels or code grids) are built below
        o = self.opts
        self.temperature = float(o.temperature)
        self.vq: VQVAEMethod | None = None
        self._test_codes: Tensor | None = None
        kwargs: dict[str, Any] = dict(cfg.model.args)
        if o.vqvae is not None:
            if o.mutation_rate:
                raise ConfigError("method.mutation_rate perturbs pixels (a background model of images); a prior "
                                  "over VQ-VAE codes has none: leave method.mutation_rate at 0 with method.vqvae.")
            self.vq = self.open_vqvae(o.vqvae, training=with_data)
            k, (h, w) = self.vq.model.quantizer.num_codes, self.vq.grid
            self.check_prior_args(kwargs, k, training=with_data)
            cfg.model.args["levels"] = k  # recorded in config.yaml: checked when the run is opened again
            kwargs.update(levels=k, categorical=True)
            self.grid_shape: tuple[int, int, int] = (1, h, w)
        else:
            self.grid_shape = self.image_shape
        from ..registry import MODELS

        model = MODELS.build(cfg.model.name, **{"in_shape": self.grid_shape, "num_classes": len(self.classes),
                                                **kwargs})
        if not getattr(model, "is_autoregressive", False):
            raise ConfigError(f"method 'autoregressive' needs a PixelCNN model(x, y) -> logits (N, K, C, H, W); "
                              f"model {cfg.model.name!r} is not one: use model.name=gated-pixelcnn or pixelcnn.")
        self.levels = int(model.levels)
        self.categorical = bool(model.categorical)
        self.conditional = bool(model.num_classes)
        self.num_classes = len(self.classes)
        self.nets = {"model": model}
        if with_data:
            if self.vq is None:
                self.train_data, self.val_data = self.build_loaders()
            else:
                codes = self.encode(self.data.train_x)
                self.train_data, self.val_data = self.build_loaders(codes, self.data.train_y)

    # -- the VQ-VAE of a prior -------------------------------------------------------------------
    def open_vqvae(self, spec: Any, *, training: bool) -> VQVAEMethod:
        """The frozen VQ-VAE method of ``method.vqvae``, checked against this run's data. While
        training, the path is made absolute in ``cfg.method.args`` (config.yaml)."""
        if not isinstance(spec, (str, Path)):
            raise ConfigError(f"bad value for 'method.vqvae': {spec!r}; pass the folder of a finished VQ-VAE "
                              "run (`profond train --recipe fmnist-vqvae`).")
        path = Path(spec).expanduser()
        if not path.is_dir():
            raise ConfigError(f"method.vqvae={str(spec)!r}: no such folder; train the VQ-VAE first "
                              "(`profond train --recipe fmnist-vqvae --name fmnist-vqvae` makes runs/fmnist-vqvae) "
                              "or pass the folder of yours: --set method.vqvae=RUN_DIR.")
        if training:
            self.cfg.method.args["vqvae"] = str(path.resolve())
        with kept_rngs():  # opening a run seeds the RNGs with its own seed: this run's init stays its own
            vq = open_frozen_run(path, device=str(self.env.device), what="the VQ-VAE run")
        if not isinstance(vq, VQVAEMethod):
            raise ConfigError(f"method.vqvae={str(spec)!r} is a {vq.cfg.method.name!r} run, not a VQ-VAE: pass the "
                              "folder of a `profond train --recipe fmnist-vqvae` (method vqvae) run.")
        if vq.data.name != self.data.name or tuple(vq.image_shape) != tuple(self.image_shape):
            raise ConfigError(f"the VQ-VAE run {str(spec)!r} was trained on {vq.data.name!r} "
                              f"{tuple(vq.image_shape)}, this prior on {self.data.name!r}: set "
                              f"data.name={vq.data.name}.")
        return vq

    def check_prior_args(self, args: dict[str, Any], k: int, *, training: bool) -> None:
        """``model.levels`` of a prior is the code-book size ``k``: given at training, it must be
        ``k``; opening a saved run, the VQ-VAE must still have the ``k`` codes recorded then."""
        recorded = args.get("levels")
        if recorded is not None and int(recorded) != k:
            if training:
                raise ConfigError(f"model.levels={recorded}, but the VQ-VAE run has {k} codes: drop model.levels "
                                  "(a prior takes the code-book size of its VQ-VAE).")
            raise ConfigError(f"this prior was trained over {recorded} codes (model.levels in its config.yaml), "
                              f"but the VQ-VAE run {self.cfg.method.args.get('vqvae')!r} has {k}: point "
                              "method.vqvae in the run's config.yaml at the VQ-VAE run it was trained on.")
        if args.get("categorical") is False:
            raise ConfigError("model.categorical=false: the codes of a VQ-VAE have no order and are embedded; "
                              "drop model.categorical.")

    def encode(self, x: Tensor) -> Tensor:
        """Code grids ``(N, 1, h, w)`` (float indices) of uint8 images ``(N, C, H, W)``."""
        assert self.vq is not None
        idx = batched(lambda xb: self.vq.encode_indices(xb.float() / 255.0), x)  # (N, h, w) int64
        return idx[:, None].float()

    # -- facts ------------------------------------------------------------------------------------
    def default_labels(self, n: int) -> Tensor | None:
        """``0, 1, ..., K-1, 0, ...`` for a class-conditional model (one class per grid column)."""
        return torch.arange(n) % self.num_classes if self.conditional else None

    def callbacks(self) -> list[Any]:
        return [SampleGrid(self)] if self.opts.grid_n else []

    def describe(self) -> dict[str, Any]:
        d = {**super().describe(), "levels": self.levels, "conditional": self.conditional,
             "model_shape": list(self.grid_shape), "temperature": self.opts.temperature}
        if self.vq is not None:
            d.update(prior_of=self.cfg.method.args.get("vqvae"), num_codes=self.levels,
                     code_grid=list(self.grid_shape[1:]), uniform_bits_per_code=math.log2(self.levels))
        return d

    # -- training and evaluation ----------------------------------------------------------------
    def model_input(self, x: Tensor) -> Tensor:
        """What the net reads of a batch: pixels in [0, 1]; their 8-bit levels (int64) for a net
        with ``model.categorical: true``; the integer codes of a prior."""
        if self.vq is not None:
            return x.round().long()
        return to_levels(x, self.levels) if self.categorical else x

    def levels_input(self, k: Tensor) -> Tensor:
        """What the net reads of drawn levels ``k`` (int64): themselves, or pixels ``k / (K − 1)``."""
        return k if self.categorical else k.float() / (self.levels - 1)

    def bpd(self, net: Any, x: Tensor, y: Tensor | None) -> Tensor:
        """Exact bits per dimension ``(N,)`` of a batch (per pixel, or per code for a prior)."""
        inp = self.model_input(x)
        return bpd_from_logits(net(inp, y if self.conditional else None), inp)

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x, y = batch
        if self.vq is None:
            x = mutate_levels(x, self.opts.mutation_rate)                  # the input itself when the rate is 0
        with ctx.autocast():
            loss = self.bpd(self.nets["model"], x, y.to(x.device)).mean()
        ctx.optimize(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """``loss``: the mean exact NLL of ``batches``; also ``bpd`` (bits per pixel) for a pixel
        model, or ``bits_per_code`` and ``bits_per_image`` (``h·w`` codes; a uniform prior has
        ``log2 K`` per code) for a prior over VQ-VAE codes."""
        total, n = 0.0, 0
        with self.eval_mode() as model:
            for x, y in batches.batches(0):
                with ctx.autocast():
                    total += self.bpd(model, x, y.to(x.device)).double().sum().item()
                n += len(x)
        mean = total / max(n, 1)
        if self.vq is None:
            return {"loss": mean, "bpd": mean}
        dims = math.prod(self.grid_shape)
        return {"loss": mean, "bits_per_code": mean, "bits_per_image": mean * dims}

    def test_data(self) -> Any:
        if self.vq is None:
            return super().test_data()
        if self._test_codes is None:
            self._test_codes = self.encode(self.data.test_x)
        return self.eval_batches(self._test_codes, self.data.test_y)

    # -- likelihood of images ---------------------------------------------------------------------
    @torch.no_grad()
    def image_bpd(self, x: Tensor, *, seed: int = 0) -> Tensor:
        """Exact bits per dimension ``(N,)`` (float64, CPU) of images ``x`` in [0, 1] of the run's
        shape, read as 8-bit levels (``seed`` is unused: no dequantization). A class-conditional
        model scores ``p(x) = (1/M) Σ_c p(x | c)`` over its ``M`` classes (uniform class prior)."""
        if self.vq is not None:
            raise ProfondError("this run is a prior over VQ-VAE codes: it has a likelihood of code grids "
                               "(bits per code, `profond eval RUN`), not of pixels; score images with a "
                               "PixelCNN run over pixels (no method.vqvae) or a flow run.")
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ProfondError(f"images of shape {tuple(x.shape)}: this run models (N, "
                               f"{', '.join(map(str, self.image_shape))}) images in [0, 1].")
        if x.is_floating_point() and x.numel() and not (0 <= float(x.min()) and float(x.max()) <= 1):
            raise ProfondError("images must lie in [0, 1] (they are read as 8-bit levels k = round(255 x)).")
        with self.eval_mode() as model:
            def score(xb: Tensor) -> Tensor:
                xb = self.model_input(self.to_device(xb))
                if not self.conditional:
                    return bpd_from_logits(model(xb, None), xb).double().cpu()
                dims = xb[0].numel()
                nats = torch.stack([bpd_from_logits(model(xb, torch.full((len(xb),), c, device=xb.device)), xb)
                                    .double() * dims * math.log(2) for c in range(self.num_classes)])  # (M, N)
                log_p = torch.logsumexp(-nats, 0) - math.log(self.num_classes)  # log (1/M) Σ_c p(x | c)
                return nats_to_bpd(-log_p, dims).cpu()
            return batched(score, x, 500)

    # -- sampling ---------------------------------------------------------------------------------
    def set_temperature(self, tau: float) -> None:
        if not (math.isfinite(tau) and tau > 0):
            raise ProfondError(f"temperature {tau}: use a temperature > 0 (1: the model's own distribution).")
        self.temperature = float(tau)

    @torch.no_grad()
    def sample_grids(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` draws ``(n, C, H, W)`` of the model's own variable (levels as int64, on the device),
        pixel by pixel in raster order at the current temperature; deterministic in ``seed``."""
        g = self.generator(seed)
        c, h, w = self.grid_shape
        dev = self.env.device
        y = None
        if self.conditional:
            y = (self.default_labels(n) if labels is None else labels.long()).to(dev)
            if y.shape != (n,) or (len(y) and not (0 <= int(y.min()) and int(y.max()) < self.num_classes)):
                raise ProfondError(f"labels: pass {n} class indices in 0..{self.num_classes - 1}.")
        k = torch.zeros((n, c, h, w), dtype=torch.long, device=dev)
        what = "codes" if self.vq is not None else "pixels"
        with self.eval_mode() as model, pixel_progress(h * w, f"sampling {what}") as advance:
            for i in range(h):
                for j in range(w):
                    inp = self.levels_input(k[:, :, : i + 1])                          # the rows <= i
                    logits = model(inp, y)[:, :, :, i, j].float() / self.temperature    # (n, K, C): logits / τ
                    probs = torch.softmax(logits.transpose(1, 2).reshape(n * c, self.levels), dim=1)
                    k[:, :, i, j] = torch.multinomial(probs, 1, generator=g).view(n, c)  # x_ij ~ p(· | x_<ij)
                    advance()
        return k

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` images in [0, 1] (CPU): sampled pixels, or sampled code grids decoded by the
        VQ-VAE for a prior; deterministic in ``seed``. Conditional runs: ``labels`` ``(n,)`` or
        the classes in turn."""
        k = self.sample_grids(n, seed=seed, labels=labels)
        if self.vq is None:
            return (k.float() / (self.levels - 1)).cpu()
        return self.vq.decode_indices(k[:, 0].cpu())

