r"""The ``flow`` method: normalizing flows (RealNVP, Glow) trained by exact maximum likelihood.

A flow ``z = f(x)`` gives the exact log-density of its input (change of variables, see
:mod:`profond.models.flow`). Images are discrete, so the method turns them into a continuous
variable and back (:mod:`profond.metrics.likelihood`, Theis et al. 2016):

1. **uniform dequantization**: ``y = (k + u) / 256``, ``u ~ U[0, 1)^D``, for the 8-bit levels ``k``;
2. **preprocessing** ``x = s(y)`` to the model's scale (``method.preprocess``):

   * ``logit`` (RealNVP §4.1): ``p = α + (1 − 2α) y``, ``x = log p − log(1 − p)``, with
     ``log|det ∂x/∂y| = Σ_d [log(1 − 2α) − log p_d − log(1 − p_d)]`` (``α = method.alpha``,
     0.05 as in the paper: it keeps ``x`` away from ±∞ at the black and white pixels);
   * ``affine``: ``x = 2y − 1``, ``log|det| = D log 2``;

3. the flow scores ``x``: ``log p(y) = log p_X(x) + log|det ∂s/∂y|``.

The training loss **is** the bits/dim bound of the discrete likelihood
(:func:`~profond.metrics.likelihood.bpd_from_density`)::

    bpd = −(log p_X(s(y)) + log|det ∂s/∂y| − D log 256) / (D ln 2)

so ``val_loss`` / ``test_loss`` compare directly with published numbers (RealNVP, Glow tables).
``evaluate`` draws its dequantization noise from ``method.eval_seed`` (the same ``u`` at every
epoch, so epochs compare) and reports ``loss`` and ``bpd`` (equal).

**Sampling** draws every latent from ``N(0, τ² I)`` and inverts the flow and the preprocessing:
``τ = 1`` is the model's own distribution; ``τ < 1`` (Glow §5, "temperature") gives smoother,
more typical images. The default is ``method.temperature``; ``profond sample --temperature``
sets it per call (:class:`~profond.methods.capabilities.SamplesAtTemperature`).

**2-D points.** Method ``flow-2d`` (:class:`PointFlowMethod`) trains a vector flow
(``model.name=realnvp-2d``) on points of a toy density generated here (:func:`toy_points`:
moons, rings, checkerboard), with the exact NLL in nats per point as its loss: the
``flow-toy`` experiment (:mod:`profond.experiments.flows`).

**Actnorm init.** Glow's actnorm layers initialise from the first batch they see. The method
runs the model once on the first training batch when it is built, before the loop copies the
weights into an optimizer or an EMA, so those start from the initialised values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..base.coerce import NonNegInt, Range, Seed
from ..config import RunConfig
from ..contract import Env, Method, StepContext
from ..data import Batches
from ..errors import ConfigError, ProfondError
from ..metrics.likelihood import LEVELS, bpd_from_density, dequantize, mutate_levels
from ..models.flow import MultiScaleFlow, VectorFlow, standard_normal_logp
from ..registry import METHODS
from .capabilities import SamplesAtTemperature, SamplesImages, ScoresLikelihood
from .gan import SampleGrid
from .generative import GenerativeMethod

__all__ = ["FlowMethod", "FlowOptions", "Preprocess", "PointFlowMethod", "toy_points", "DENSITIES"]


def model_fits(cfg: RunConfig, method: str) -> bool:
    """The model of ``cfg`` declares ``method`` as its own (its ``method:NAME`` tag), so building it
    for this method's data makes sense (an MLP or a 2-D flow built on images fails otherwise
    with a message about its own arguments, not about the model to choose)."""
    from ..registry import MODELS

    return f"method:{method}" in MODELS.entry(cfg.model.name).tags


@dataclass
class FlowOptions:
    #: logit: x = logit(α + (1 − 2α) y) (RealNVP) | affine: x = 2y − 1
    preprocess: Literal["logit", "affine"] = "logit"
    #: α of the logit preprocessing (keeps the black / white pixels finite)
    alpha: Annotated[float, Range(0, 0.5, lo_open=True, hi_open=True), "0.05 in RealNVP"] = 0.05
    #: default sampling temperature τ: latents drawn from N(0, τ² I) (1: the model itself)
    temperature: Annotated[float, Range(0, 10, lo_open=True), "1: the model's own distribution"] = 1.0
    #: samples of the grid written at the end of every epoch (0: none)
    grid_n: Annotated[NonNegInt, "0: no grid"] = 64
    #: seed of that grid (the same latents every epoch)
    grid_seed: Seed = 0
    #: seed of the dequantization noise of every evaluation (the same u at every epoch)
    eval_seed: Seed = 0
    #: train a background model (Ren et al. 2019): each training pixel replaced by a random level with this probability
    mutation_rate: Annotated[float, Range(0, 1), "0: the plain model; 0.1-0.3 for a background model"] = 0.0


class Preprocess:
    """``y ∈ [0, 1)^D -> x`` on the model's scale and back, with ``log|det ∂x/∂y|`` ``(N,)``."""

    def __init__(self, kind: str, alpha: float):
        self.kind, self.alpha = kind, float(alpha)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind == "affine":
            x = 2.0 * y - 1.0                                             # [0, 1) -> [-1, 1)
            return x, torch.full((len(y),), y[0].numel() * math.log(2.0), dtype=y.dtype, device=y.device)
        a = self.alpha
        p = a + (1 - 2 * a) * y                                           # p = α + (1 − 2α) y
        x = torch.log(p) - torch.log1p(-p)                                # logit(p)
        ld = math.log(1 - 2 * a) - torch.log(p) - torch.log1p(-p)         # log dx/dy = log(1−2α) − log p(1−p)
        return x, ld.flatten(1).sum(1)

    def inverse(self, x: Tensor) -> Tensor:
        """Pixels in [0, 1] of model-scale images (clamped: a sample may leave the data's range)."""
        if self.kind == "affine":
            y = (x + 1.0) / 2.0
        else:
            y = (torch.sigmoid(x) - self.alpha) / (1 - 2 * self.alpha)
        return y.clamp(0.0, 1.0)


@METHODS.register("flow", help="normalizing flows (RealNVP, Glow): exact likelihood in bits/dim, "
                               "temperature sampling")
class FlowMethod(GenerativeMethod, SamplesImages, ScoresLikelihood, SamplesAtTemperature):
    Options = FlowOptions
    monitor = ("val_loss", "min")
    #: unconditional: the epoch grid is not laid out by class
    conditional = False

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)
        o = self.opts
        model = self.build_model() if model_fits(cfg, "flow") else None
        if not isinstance(model, MultiScaleFlow):
            raise ConfigError(f"method 'flow' needs an image flow; model {cfg.model.name!r} is not one: use "
                              "model.name=realnvp or model.name=glow.")
        self.nets = {"model": model}
        self.pre = Preprocess(o.preprocess, o.alpha)
        self.dims = math.prod(self.image_shape)
        self.num_classes = len(self.classes)
        self._temperature = float(o.temperature)
        if with_data and self.train_data is not None:
            self.data_init(model)

    @torch.no_grad()
    def data_init(self, model: MultiScaleFlow) -> None:
        """One forward pass on the first training batch: actnorm's data-dependent init (Glow §3.1)."""
        x, _ = next(iter(self.train_data.batches(0)))
        dev = next(model.parameters()).device
        y = dequantize(x.to(dev), generator=torch.Generator(device=dev).manual_seed(self.opts.eval_seed))
        model(self.pre.forward(y)[0])

    def default_labels(self, n: int) -> None:
        return None

    def callbacks(self) -> list[Any]:
        return [SampleGrid(self)] if self.opts.grid_n else []

    def describe(self) -> dict[str, Any]:
        m = self.unwrapped()
        return {**super().describe(), "flow": m.kind, "levels": m.levels, "z_shapes": [list(s) for s in m.z_shapes],
                "preprocess": self.opts.preprocess,
                "alpha": self.opts.alpha if self.opts.preprocess == "logit" else None,
                "temperature": self.opts.temperature}

    # -- the objective ------------------------------------------------------------------------------
    def bpd(self, model: Any, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Bits/dim ``(N,)`` of images ``x`` in [0, 1] (device) at one dequantization draw."""
        y = dequantize(x, generator=generator, levels=LEVELS)              # (k + u) / 256
        xs, log_det_scale = self.pre.forward(y)                           # model scale, log|ds/dy|
        zs, logdet = model(xs)
        log_pz = sum(standard_normal_logp(z.float()) for z in zs)          # Σ_scales log N(z_l; 0, I)
        log_p = log_pz + logdet.float()                                   # change of variables
        return bpd_from_density(log_p, self.dims, log_det_scale=log_det_scale)

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x = mutate_levels(batch[0], self.opts.mutation_rate)               # the input itself when the rate is 0
        with ctx.autocast():
            loss = self.bpd(self.nets["model"], x).mean()
        ctx.optimize(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """``loss`` = ``bpd``: the mean bits/dim bound on ``batches``, with the dequantization
        noise drawn from ``method.eval_seed`` (the same at every evaluation)."""
        g = self.generator(self.opts.eval_seed)
        total, n = 0.0, 0
        with self.eval_mode() as model:
            for x, _ in batches.batches(0):
                with ctx.autocast():
                    total += self.bpd(model, x, g).double().sum().item()
                n += len(x)
        mean = total / max(n, 1)
        return {"loss": mean, "bpd": mean}

    # -- capabilities -----------------------------------------------------------------------------
    @torch.no_grad()
    def image_bpd(self, x: Tensor, *, seed: int = 0) -> Tensor:
        """Bits/dim ``(N,)`` (float64, CPU) of images ``x`` ``(N, C, H, W)`` in [0, 1] of this run's
        shape, one dequantization draw from ``seed``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ProfondError(f"images of shape {tuple(x.shape)}: this run models {tuple(self.image_shape)} "
                               "images; resize / convert them to that shape.")
        if x.dtype == torch.uint8:
            x = x.float() / 255.0                                          # levels -> [0, 1]
        g = self.generator(seed)
        out = []
        with self.eval_mode() as model:
            for i in range(0, len(x), 500):
                out.append(self.bpd(model, self.to_device(x[i:i + 500]), g).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def set_temperature(self, tau: float) -> None:
        if not (math.isfinite(tau) and tau > 0):
            raise ProfondError(f"temperature {tau}: use a temperature > 0 (1: the model's own distribution).")
        self._temperature = float(tau)

    @property
    def temperature(self) -> float:
        return self._temperature

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` images in [0, 1] (CPU): ``x = s⁻¹(f⁻¹(τ ε))``, ``ε ~ N(0, I)`` from ``seed`` at the
        current temperature τ (``labels`` are ignored: the flow is unconditional)."""
        with self.eval_mode() as model:
            xs = model.sample(n, temperature=self._temperature, generator=self.generator(seed))
        return self.pre.inverse(xs.float()).cpu()


# -- 2-D points: toy densities (the flow-toy experiment) ---------------------------------------------
#: the toy densities of ``flow-2d``, generated here (numpy / scikit-learn, no download)
DENSITIES = ("moons", "rings", "checkerboard")


def toy_points(density: str, n: int, seed: int, noise: float = 0.05) -> Tensor:
    """``n`` points ``(n, 2)`` (float32) of a 2-D toy density, each roughly inside [-4, 4]²:

    * ``moons``: scikit-learn's two interleaved half circles, scaled by 2 and centred;
    * ``rings``: three concentric circles of radii 1, 2, 3 (points spread evenly over the
      total length), Gaussian radial noise ``4·noise``;
    * ``checkerboard``: uniform on the 8 dark squares of a 4x4 board of side 2 on [-4, 4]²."""
    rng = np.random.default_rng(seed)
    if density == "moons":
        from sklearn.datasets import make_moons

        pts, _ = make_moons(n, noise=noise, random_state=int(rng.integers(2**31)))
        pts = 2.0 * (pts - np.array([0.5, 0.25]))
    elif density == "rings":
        radii = np.array([1.0, 2.0, 3.0])
        r = rng.choice(radii, size=n, p=radii / radii.sum()) + 4 * noise * rng.standard_normal(n)
        theta = rng.uniform(0, 2 * np.pi, n)
        pts = np.stack([r * np.cos(theta), r * np.sin(theta)], 1)
    elif density == "checkerboard":
        x1 = rng.uniform(-4, 4, n)
        col = np.floor((x1 + 4) / 2)                                      # 0..3
        row = 2 * rng.integers(0, 2, n) + (col % 2)                       # a dark square of that column
        x2 = rng.uniform(0, 2, n) + 2 * row - 4
        pts = np.stack([x1, x2], 1)
    else:
        raise ConfigError(f"bad value for 'method.density': {density!r}. Valid values: {', '.join(DENSITIES)}.")
    return torch.tensor(pts, dtype=torch.float32)


@dataclass
class PointFlowOptions:
    #: the 2-D toy density the points are drawn from
    density: Literal["moons", "rings", "checkerboard"] = "moons"
    #: training points (validation: a tenth as many, test: a fifth, from other seeds)
    points: Annotated[int, Range(100, 10_000_000), "training points"] = 10_000
    #: noise of moons (sklearn's) and rings
    noise: Annotated[float, Range(0, 1), "0: exact curves"] = 0.05
    #: seed of the points (train, val and test draw from seed, seed + 1, seed + 2)
    data_seed: Seed = 0


@METHODS.register("flow-2d", help="a normalizing flow on 2-D toy densities (moons, rings, checkerboard): "
                                  "exact NLL in nats per point")
class PointFlowMethod(Method):
    """Maximum likelihood of a vector flow (``model.name=realnvp-2d``) on 2-D points generated by
    :func:`toy_points` (``data.*`` is not read but ``data.batch_size``); the loss is the exact
    negative log-likelihood ``−log p(x) = −log N(f(x); 0, I) − log|det ∂f/∂x|`` in nats per point.
    """

    Options = PointFlowOptions
    monitor = ("val_loss", "min")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)
        from ..registry import MODELS

        model = MODELS.build(cfg.model.name, in_shape=(2,), **cfg.model.args) if model_fits(cfg, "flow-2d") else None
        if not isinstance(model, VectorFlow):
            raise ConfigError(f"method 'flow-2d' needs a flow on vectors; model {cfg.model.name!r} is not one: use "
                              "model.name=realnvp-2d.")
        self.nets = {"model": model}
        if with_data:
            o = self.opts
            self.train_data = self.loader(toy_points(o.density, o.points, o.data_seed, o.noise), shuffle=True)
            self.val_data = self.loader(toy_points(o.density, max(o.points // 10, 1), o.data_seed + 1, o.noise))
            with torch.no_grad():                                          # actnorm: data-dependent init
                model(next(iter(self.train_data.batches(0)))[0].to(next(model.parameters()).device))

    def loader(self, x: Tensor, shuffle: bool = False) -> Batches:
        return Batches(x, torch.zeros(len(x), dtype=torch.long), batch_size=self.cfg.data.batch_size,
                       shuffle=shuffle, seed=self.env.seed, device=self.env.device, mean=(0.0,), std=(1.0,),
                       rank=self.env.rank, world_size=self.env.world_size)

    def test_points(self) -> Tensor:
        o = self.opts
        return toy_points(o.density, max(o.points // 5, 1), o.data_seed + 2, o.noise)

    def test_data(self) -> Batches:
        return self.loader(self.test_points())

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {"dataset": f"toy-{o.density}", "density": o.density, "train_examples": o.points,
                "test_examples": max(o.points // 5, 1)}

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        with ctx.autocast():
            loss = -self.nets["model"].log_prob(batch[0]).float().mean()  # nats per point
        ctx.optimize(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """``loss`` = ``nll``: the mean exact negative log-likelihood, nats per point."""
        model = self.raw_nets.get("model", self.nets["model"])
        total, n = 0.0, 0
        for x, _ in batches.batches(0):
            total += -model.log_prob(x).double().sum().item()
            n += len(x)
        return {"loss": total / max(n, 1), "nll": total / max(n, 1)}

    @torch.no_grad()
    def log_density(self, pts: Tensor) -> Tensor:
        """``log p(x)`` ``(N,)`` (float64, CPU) of points ``(N, 2)``, in eval mode."""
        model = self.raw_nets.get("model", self.nets["model"])
        was = model.training
        model.eval()
        try:
            dev = next(model.parameters()).device
            return torch.cat([model.log_prob(pts[i:i + 10_000].to(dev).float()).double().cpu()
                              for i in range(0, len(pts), 10_000)])
        finally:
            model.train(was)

    @torch.no_grad()
    def sample_points(self, n: int, *, seed: int = 0, temperature: float = 1.0) -> Tensor:
        """``n`` points ``(n, 2)`` (CPU) from ``z ~ N(0, τ² I)``, deterministic in ``seed``."""
        model = self.raw_nets.get("model", self.nets["model"])
        dev = next(model.parameters()).device
        g = torch.Generator(device=dev).manual_seed(int(seed))
        return model.sample(n, temperature=temperature, generator=g).float().cpu()
