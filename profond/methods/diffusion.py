r"""Diffusion models and flow matching (course ch. 10): training, evaluation and sampling.

The three parts stay apart, as in diffusers: the **denoiser** is a plain ``nn.Module``
(:mod:`profond.models.diffusion`, called ``model(x_t, t, y)``); the **noise process**
(:class:`~profond.methods.noise.NoiseSchedule`, re-exported here) and the **samplers**
(:mod:`profond.methods.samplers`) know nothing of training; this module is what the family
does with them in the one loop.

Two processes (``method.process``):

* ``ddpm`` — the Gaussian diffusion of def. 10.1. A training step draws ``t ~ U{1..T}`` and
  ``ε ~ N(0, I)``, forms ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`` (eq. 10.8) and regresses the
  network on the target of ``method.prediction`` (``eps``: eq. 10.16; ``x0``; ``v``), each
  optionally min-SNR weighted; ``method.loss=vlb`` trains on the variational bound instead
  (theorem 10.5, eq. 10.15). Samplers: ``ddpm`` (ancestral, eq. 10.20, σ² = β̃ or β),
  ``ddim`` (eq. 10.21 with η ∈ [0, 1], on a sub-sequence of S steps: remark 10.7).
* ``flow`` — flow matching / rectified flow (course §10.10): ``x_τ = (1 − τ) ε + τ x_0``,
  the network regresses the constant velocity ``x_0 − ε``; samplers ``euler`` and ``heun``
  integrate ``dx/dτ = v(x, τ)`` from noise (τ = 0) to data (τ = 1).

Classifier-free guidance (def. 10.8, eq. 10.22, exercise 10.5): a conditional denoiser
(``model.conditional: true``) sees the learned null class ∅ instead of the label with
probability ``method.cond_drop`` (10 %) in training, and samples with
``ε̂ = (1 + w) ε(x, c) − w ε(x, ∅)``.

Pixels: the data layer gives [0, 1]; the process runs on [-1, 1] (``x = 2·pixel − 1``) and
samples come back on [0, 1].

Latent diffusion (Rombach et al. 2022; course seed 000 "Stable Diffusion"): with
``method.autoencoder=RUN_DIR`` the process runs in the latent space of a finished AE or VAE
run, frozen. Each training and test image is encoded once (a VAE's posterior mean), each
latent dimension standardised with the training codes' mean and standard deviation (the role
of Stable Diffusion's latent scale factor: the noise of eq. 10.8 then has the codes' scale),
a vector denoiser (``model.name=diffusion-mlp``) learns them, and samples are decoded back to
images: ``profond sample`` / ``eval`` / ``latent`` work as on a pixel run. The autoencoder's
run folder must stay where it is: loading this run reopens it. With ``train.ema_decay`` the loop keeps an EMA of the denoiser:
the validation loss, the epoch grids and every sample of a saved run use the EMA weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch import Tensor

from ..base.coerce import NonNegInt, PosInt, Range, Seed
from ..config import RunConfig
from ..contract import Env, StepContext
from ..errors import ConfigError, ProfondError
from ..registry import METHODS
from .capabilities import (
    Artifacts,
    ChoosesSampler,
    ExploresLatent,
    LatentRequest,
    SamplerRequest,
    SamplesImages,
)
from .gan import SampleGrid
from .generative import GenerativeMethod, slerp
from .noise import NoiseSchedule
from .samplers import guided, sample_ddim, sample_ddpm, sample_flow

__all__ = ["DiffusionMethod", "DiffusionOptions", "NoiseSchedule"]

#: the samplers of each process
SAMPLERS = {"ddpm": ("ddpm", "ddim"), "flow": ("euler", "heun")}


def to_pixels(x: Tensor) -> Tensor:
    """Images of the process's [-1, 1] scale back to [0, 1] pixels, on the CPU."""
    return ((x.float().clamp(-1, 1) + 1) / 2).cpu()


@dataclass
class DiffusionOptions:
    #: ddpm: Gaussian diffusion (def. 10.1) | flow: flow matching / rectified flow (§10.10)
    process: Literal["ddpm", "flow"] = "ddpm"
    #: noise schedule of the ddpm process: linear (eq. 10.17), cosine (eq. 10.18), sigmoid
    schedule: Literal["linear", "cosine", "sigmoid"] = "linear"
    #: T, the number of diffusion steps (also the time scale the network sees for flow)
    timesteps: Annotated[int, Range(2, 100_000), "the T of def. 10.1"] = 1000
    #: what the network predicts (ddpm): eps (eq. 10.16) | x0 | v
    prediction: Literal["eps", "x0", "v"] = "eps"
    #: simple: the regression loss (eq. 10.16) | vlb: the variational bound (eq. 10.15)
    loss: Literal["simple", "vlb"] = "simple"
    #: min-SNR-γ loss weighting (Hang et al. 2023); null: none
    min_snr_gamma: Annotated[float, Range(0, lo_open=True), "e.g. 5; null: off"] | None = None
    #: conditional nets: probability of training on the null class ∅ (exercise 10.5)
    cond_drop: Annotated[float, Range(0, 1), "a probability"] = 0.1
    #: default sampler: ddpm | ddim (ddpm process), euler | heun (flow); auto: ddim / heun
    sampler: Literal["auto", "ddpm", "ddim", "euler", "heun"] = "auto"
    #: default number of sampling steps S (null: T for ddpm, 50 for ddim, 20 for euler / heun)
    sample_steps: Annotated[int, Range(1), "null: the sampler's default"] | None = None
    #: default DDIM η (0: deterministic, 1: DDPM's variance)
    eta: Annotated[float, Range(0, 1), "0: deterministic"] = 0.0
    #: default guidance scale w of eq. 10.22 (conditional nets; 0: the plain conditional model)
    guidance: Annotated[float, Range(0), "w of eq. 10.22"] = 0.0
    #: DDPM sampler variance: beta_tilde (σ² = β̃_t) | beta (σ² = β_t), eq. 10.20
    sigma: Literal["beta_tilde", "beta"] = "beta_tilde"
    #: clip the predicted x_0 to [-1, 1] inside each sampling step (pixel runs; latent runs never clip)
    clip_x0: bool = True
    #: samples of the grid written at the end of every epoch (0: none)
    grid_n: Annotated[NonNegInt, "0: no grid"] = 64
    #: seed of that grid (the same noise every epoch)
    grid_seed: Seed = 0
    #: evaluate(detailed=True): images of the variational-bound estimate in bits/dim (ddpm)
    bpd_images: Annotated[NonNegInt, "0: skip"] = 200
    #: timesteps drawn per image for that estimate (unbiased; T: the exact sum)
    bpd_timesteps: Annotated[PosInt, "t per image"] = 20
    #: seed of all evaluation randomness (t, ε)
    eval_seed: Seed = 0
    #: latent diffusion: the run folder of a finished AE / VAE whose latent space the process runs in (null: pixels)
    autoencoder: str | None = None


@METHODS.register("diffusion", help="diffusion: DDPM / DDIM / classifier-free guidance / flow matching (ch. 10)")
class DiffusionMethod(GenerativeMethod, SamplesImages, ChoosesSampler, ExploresLatent):
    Options = DiffusionOptions
    monitor = ("val_loss", "min")

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=False)
        o = self.opts
        self.schedule = NoiseSchedule(o.schedule, o.timesteps)
        #: shape of one x_0 of the process: the image's, or (d,) in an autoencoder's latent space
        self.x_shape: tuple[int, ...] = self.image_shape
        self.autoencoder: Any = None
        if o.autoencoder is not None:
            self.open_autoencoder(o.autoencoder)
        model = self.build_model()
        if not getattr(model, "is_denoiser", False):
            raise ConfigError(f"method 'diffusion' needs a denoiser model(x_t, t, y); model {cfg.model.name!r} "
                              "is not one: use model.name=diffusion-unet.")
        self.conditional = bool(getattr(model, "num_classes", 0))
        self.num_classes = len(self.classes)
        self.check_options(o)
        self.nets = {"model": model}
        self._sampler = self.resolve(SamplerRequest())
        if with_data:
            if self.autoencoder is None:
                self.train_data, self.val_data = self.build_loaders()
            else:
                self.train_data, self.val_data = self.build_loaders(self.latents(self.data.train_x), self.data.train_y)

    # -- latent diffusion ---------------------------------------------------------------------
    def open_autoencoder(self, run_dir: str) -> None:
        """Open the frozen AE / VAE run and fit the standardisation of its latent codes."""
        from ..contract import open_frozen_run

        ae = open_frozen_run(run_dir, device=str(self.env.device), what="method.autoencoder")
        if not getattr(ae, "has_latent", False) or not getattr(ae, "latent_dim", None):
            raise ConfigError(f"method.autoencoder={run_dir!r} is a {ae.cfg.method.name!r} run without a vector latent "
                              "space: pass the run folder of an autoencoder or VAE (`profond train --recipe fmnist-vae`).")
        if tuple(ae.image_shape) != tuple(self.image_shape):
            raise ConfigError(f"method.autoencoder={run_dir!r} was trained on {list(ae.image_shape)} images, this run's "
                              f"data ({self.data.name}) has {list(self.image_shape)}: use the same data.name as the "
                              "autoencoder run.")
        if self.cfg.model.name == "diffusion-unet":
            raise ConfigError("latent diffusion denoises the autoencoder's latent vectors: set model.name=diffusion-mlp "
                              "(diffusion-unet is for images).")
        self.autoencoder = ae
        self.x_shape = (int(ae.latent_dim),)
        z = self.encode_images(self.data.train_x)                                      # (N, d)
        self.z_mean = z.mean(0)
        self.z_std = z.std(0).clamp_min(1e-4)  # a collapsed VAE dimension keeps a finite scale

    def encode_images(self, x_uint8: Tensor) -> Tensor:
        """The autoencoder's codes (a VAE's posterior means) of uint8 images, ``(N, d)`` on the device."""
        from .generative import batched

        ae = self.autoencoder
        return batched(lambda v: ae.encode(v.float().div(255.0).to(self.env.device)).float(), x_uint8, 1000)

    def latents(self, x_uint8: Tensor) -> Tensor:
        """Standardised codes ``(z − mean) / std`` of uint8 images: the x_0 of the process (CPU)."""
        return ((self.encode_images(x_uint8) - self.z_mean) / self.z_std).cpu()

    def to_images(self, x: Tensor) -> Tensor:
        """Samples of the process as [0, 1] images on the CPU: pixels rescaled, or latents
        un-standardised and decoded by the autoencoder."""
        if self.autoencoder is None:
            return to_pixels(x)
        z = x.float().to(self.z_mean.device) * self.z_std + self.z_mean
        return self.autoencoder.decode(z).float().clamp(0, 1).cpu()

    def build_model(self) -> Any:
        from ..registry import MODELS

        return MODELS.build(self.cfg.model.name, in_shape=self.x_shape, num_classes=len(self.classes),
                            **self.cfg.model.args)

    def test_data(self) -> Any:
        if self.autoencoder is None:
            return super().test_data()
        return self.eval_batches(self.latents(self.data.test_x), self.data.test_y)

    @staticmethod
    def check_options(o: DiffusionOptions) -> None:
        """What the annotations of :class:`DiffusionOptions` cannot say."""
        if o.sampler != "auto" and o.sampler not in SAMPLERS[o.process]:
            raise ConfigError(f"method.sampler={o.sampler} is not a sampler of the {o.process} process: use one of "
                              f"{', '.join(SAMPLERS[o.process])}.")
        if o.process == "flow" and o.loss == "vlb":
            raise ConfigError("method.loss=vlb is the bound of the Gaussian diffusion (eq. 10.15); flow matching "
                              "regresses a velocity: set method.loss=simple (or method.process=ddpm).")
        if o.process == "flow" and o.prediction != "eps":
            raise ConfigError("method.prediction applies to the ddpm process; flow matching predicts the velocity: "
                              "leave method.prediction at eps.")
        if o.loss == "vlb" and (o.prediction != "eps" or o.min_snr_gamma is not None):
            raise ConfigError("method.loss=vlb is written for ε-prediction without reweighting: set "
                              "method.prediction=eps and method.min_snr_gamma=null.")
        if o.sample_steps is not None and o.sample_steps > o.timesteps:
            raise ConfigError(f"method.sample_steps={o.sample_steps} is more steps than T={o.timesteps}: "
                              f"use at most {o.timesteps}.")

    def default_labels(self, n: int) -> Tensor | None:
        """``0, 1, ..., K-1, 0, ...`` for a conditional denoiser (one class per grid column)."""
        return torch.arange(n) % self.num_classes if self.conditional else None

    def callbacks(self) -> list[Any]:
        return [SampleGrid(self)] if self.opts.grid_n else []

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {**super().describe(), "process": o.process, "schedule": o.schedule, "timesteps": o.timesteps,
                "prediction": o.prediction, "loss": o.loss, "conditional": self.conditional,
                "sampler": self._sampler, "autoencoder": o.autoencoder,
                "latent_shape": list(self.x_shape) if self.autoencoder is not None else None}

    # -- the training objective ---------------------------------------------------------------
    def to_model_scale(self, x: Tensor) -> Tensor:
        if self.autoencoder is not None:
            return x  # standardised latent codes already
        return x * 2.0 - 1.0  # [0, 1] -> [-1, 1]

    def drop_labels(self, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Labels with each one replaced by the null class ∅ (index K) with probability ``cond_drop``."""
        drop = torch.rand(y.shape, device=y.device, generator=generator) < self.opts.cond_drop
        return torch.where(drop, torch.full_like(y, self.num_classes), y)

    def losses(self, net: Any, x0: Tensor, y: Tensor | None, generator: torch.Generator | None = None) -> Tensor:
        """Per-image loss ``(N,)`` of a batch ``x0`` on [-1, 1] (``generator``: seeded draws for evaluation)."""
        o, n, dev = self.opts, len(x0), x0.device
        noise = torch.randn(x0.shape, device=dev, generator=generator)
        if o.process == "flow":
            tau = torch.rand(n, device=dev, generator=generator)
            tb = tau.view(-1, *([1] * (x0.dim() - 1)))
            xt = (1 - tb) * noise + tb * x0                               # the linear path, noise -> data
            out = net(xt, tau * (o.timesteps - 1), y)
            return (out.float() - (x0 - noise)).pow(2).flatten(1).mean(1)  # velocity regression
        t = torch.randint(0, o.timesteps, (n,), device=dev, generator=generator)
        xt = self.schedule.q_sample(x0, t, noise)                          # (10.8)
        out = net(xt, t.float(), y).float()
        if o.loss == "vlb":
            return self.schedule.vlb_loss(x0, xt, t, out, sigma=o.sigma)   # (10.15), nats per dimension
        err = (out - self.schedule.target(x0, noise, t, o.prediction)).pow(2).flatten(1).mean(1)  # (10.16)
        if o.min_snr_gamma is not None:
            err = err * self.schedule.loss_weight(t, o.prediction, o.min_snr_gamma).flatten()
        return err

    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        x0 = self.to_model_scale(batch[0])
        y = self.drop_labels(batch[1].to(x0.device)) if self.conditional else None
        with ctx.autocast():
            loss = self.losses(self.nets["model"], x0, y).mean()
        ctx.optimize(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """``loss``: the training objective on ``batches`` with seeded ``t`` and ε (the same draws
        at every evaluation, so epochs compare); ``detailed=True`` adds ``bpd``, the variational
        bound in bits per dimension on the first ``bpd_images`` images (ddpm process)."""
        o = self.opts
        g = self.generator(o.eval_seed)
        total, n = 0.0, 0
        bpd_sum, bpd_n = 0.0, 0
        with self.eval_mode() as model:
            for x, y in batches.batches(0):
                x0 = self.to_model_scale(x)
                yy = y.to(x0.device) if self.conditional else None
                with ctx.autocast():
                    total += self.losses(model, x0, yy, generator=g).double().sum().item()
                n += len(x0)
                if detailed and o.process == "ddpm" and self.autoencoder is None and bpd_n < o.bpd_images:
                    xb = x0[: o.bpd_images - bpd_n]
                    yb = None if yy is None else yy[: len(xb)]
                    bpd = self.schedule.bits_per_dim(lambda xt, t, _y=yb: model(xt, t.float(), _y).float(), xb,
                                                     timesteps=o.bpd_timesteps, generator=g, sigma=o.sigma)
                    bpd_sum += bpd.double().sum().item()
                    bpd_n += len(xb)
        res: dict[str, Any] = {"loss": total / max(n, 1)}
        if detailed and bpd_n:
            res["bpd"] = bpd_sum / bpd_n
            res["bpd_images"] = bpd_n
            res["bpd_timesteps"] = o.bpd_timesteps
        return res

    # -- sampling -----------------------------------------------------------------------------
    def resolve(self, req: SamplerRequest) -> dict[str, Any]:
        """The sampler settings of ``req`` on top of this run's defaults, checked."""
        o = self.opts
        sampler = req.sampler or (o.sampler if o.sampler != "auto" else "ddim" if o.process == "ddpm" else "heun")
        if sampler not in SAMPLERS[o.process]:
            raise ProfondError(f"--sampler {sampler}: this run was trained with method.process={o.process}; use "
                               f"one of {', '.join(SAMPLERS[o.process])}.")
        default_steps = {"ddpm": o.timesteps, "ddim": 50, "euler": 20, "heun": 20}[sampler]
        steps = req.steps if req.steps is not None else (o.sample_steps or default_steps)
        if sampler in ("ddpm", "ddim"):
            steps = min(steps, o.timesteps) if req.steps is None else steps
            if not 1 <= steps <= o.timesteps:
                raise ProfondError(f"--steps {steps}: use 1..{o.timesteps} (this run's T; more steps than T "
                                   "do not exist).")
        elif steps < 1:
            raise ProfondError(f"--steps {steps}: use at least 1 Euler/Heun step.")
        eta = o.eta if req.eta is None else req.eta
        if not (0.0 <= eta <= 1.0):
            raise ProfondError(f"--eta {eta}: use a value in [0, 1] (0: deterministic DDIM, 1: DDPM's variance).")
        if req.eta is not None and sampler != "ddim":
            raise ProfondError(f"--eta is DDIM's stochasticity; sampler {sampler!r} has none: drop --eta "
                               "(or use --sampler ddim).")
        w = o.guidance if req.guidance is None else req.guidance
        if not (w >= 0 and math.isfinite(w)):
            raise ProfondError(f"--guidance {w}: use a scale w >= 0 (eq. 10.22; 0: no guidance).")
        if req.guidance is not None and not self.conditional:
            raise ProfondError("--guidance needs a class-conditional run (model.conditional=true, trained with "
                               "method.cond_drop > 0); this run is unconditional: drop --guidance.")
        nfe = steps * (2 if sampler == "heun" else 1) - (1 if sampler == "heun" else 0)
        nfe *= 2 if (self.conditional and w > 0) else 1
        return {"sampler": sampler, "steps": steps, "eta": eta if sampler == "ddim" else None,
                "guidance": w if self.conditional else None, "nfe_per_image": nfe}

    def use_sampler(self, request: SamplerRequest) -> dict[str, Any]:
        self._sampler = self.resolve(request)
        return dict(self._sampler)

    def denoiser(self, model: Any, labels: Tensor | None, w: float):
        """``f(x_t, t) -> network output`` with labels and guidance (eq. 10.22) closed over."""
        if not self.conditional:
            return lambda x, t: model(x, t, None).float()
        null = torch.full_like(labels, self.num_classes)

        def f(x: Tensor, t: Tensor) -> Tensor:
            if w == 0:
                return model(x, t, labels).float()
            out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).float()
            cond, uncond = out.chunk(2)
            return guided(cond, uncond, w)                                 # (10.22)
        return f

    def run_sampler(self, n: int, *, generator: torch.Generator, labels: Tensor | None,
                    x_T: Tensor | None = None, trajectory: list | None = None, every: int | None = None) -> Tensor:
        """``n`` samples on [-1, 1] with the current settings (device tensors)."""
        s, o = self._sampler, self.opts
        shape = (n, *self.x_shape)
        if self.conditional:
            labels = (self.default_labels(n) if labels is None else labels).to(self.env.device)
        clip = o.clip_x0 and self.autoencoder is None  # [-1, 1] bounds pixels, not standardised latents
        with self.eval_mode() as model:
            f = self.denoiser(model, labels, s["guidance"] or 0.0)
            common = dict(generator=generator, x_T=x_T, trajectory=trajectory, trajectory_every=every)
            if s["sampler"] == "ddpm":
                res = sample_ddpm(f, self.schedule, shape, steps=s["steps"], sigma=o.sigma,
                                  prediction=o.prediction, clip_x0=clip, **common)
            elif s["sampler"] == "ddim":
                res = sample_ddim(f, self.schedule, shape, steps=s["steps"], eta=s["eta"],
                                  prediction=o.prediction, clip_x0=clip, **common)
            else:
                res = sample_flow(f, shape, steps=s["steps"], method=s["sampler"],
                                  time_scale=o.timesteps - 1, **common)
        return res.x

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` images in [0, 1] (CPU) from the current sampler (:meth:`use_sampler`; the run's
        defaults otherwise), deterministic in ``seed``. Conditional runs: ``labels`` (N,) or the
        classes in turn."""
        x = self.run_sampler(n, generator=self.generator(seed), labels=labels)
        return self.to_images(x)

    def trajectory_figures(self, folder: Path, run_name: str, *, n: int = 8, seed: int = 0,
                           label: int | None = None) -> Artifacts:
        """trajectory.png (for each of ``n`` samples, x_t above the predicted x_0 at about 10
        points of the reverse process) and trajectory.gif (the grid of x_t, frame by frame)."""
        from ..viz.images import animate_grids, save_traversal

        s = self._sampler
        labels = None if label is None else torch.full((n,), label, dtype=torch.long)
        traj: list = []
        every = max(1, s["steps"] // 10)
        self.run_sampler(n, generator=self.generator(seed), labels=labels, trajectory=traj, every=every)
        steps = [int(k) for k, _, _ in traj]
        rows = []
        for i in range(min(n, 4)):
            rows.append(torch.cat([self.to_images(xt[i: i + 1]) for _, xt, _ in traj]))
            rows.append(torch.cat([self.to_images(x0[i: i + 1]) for _, _, x0 in traj]))
        what = (f"{s['sampler']}, {s['steps']} steps" + (f", w={s['guidance']:g}" if s.get("guidance") else ""))
        png = save_traversal(torch.stack(rows), folder / "trajectory.png",
                             row_labels=[f"#{i // 2} {'x_t' if i % 2 == 0 else 'pred x_0'}" for i in range(len(rows))],
                             values=steps, title=f"{run_name}: reverse trajectory ({what}), step of the sampler",
                             value_format="{:.0f}")
        gif = animate_grids([self.to_images(xt) for _, xt, _ in traj], folder / "trajectory.gif",
                            nrow=max(1, math.ceil(math.sqrt(n))), titles=[f"step {k}" for k in steps],
                            duration_ms=200)
        return Artifacts(files=[png, gif])

    # -- latent: DDIM interpolation between two x_T ------------------------------------------
    def latent_figures(self, req: LatentRequest) -> Artifacts:
        """interpolation.png: for ``req.pairs`` pairs of noises x_T, the deterministic sampler
        (DDIM η = 0, or the flow ODE) applied along the spherical path between them
        (exercise 10.6.3: DDIM maps each x_T to one image, so a smooth path in x_T gives a
        smooth path of images)."""
        from ..viz.images import save_traversal

        if req.steps < 2 or req.pairs < 1:
            raise ProfondError("--steps must be >= 2 and --pairs >= 1.")
        if req.label is not None and not self.conditional:
            raise ProfondError("--label needs a class-conditional run; this one is unconditional: drop --label.")
        if req.label is not None and not 0 <= req.label < self.num_classes:
            raise ProfondError(f"--label {req.label}: use a class index in 0..{self.num_classes - 1}.")
        saved = self._sampler
        if self._sampler["sampler"] in ("ddpm", "ddim"):
            self._sampler = {**saved, "sampler": "ddim", "eta": 0.0,
                             "steps": saved["steps"] if saved["sampler"] == "ddim" else 50}
        g = self.generator(req.seed)
        d = math.prod(self.x_shape)
        rows, labels_txt = [], []
        t = torch.linspace(0, 1, req.steps)
        try:
            for p in range(req.pairs):
                a, b = torch.randn((2, d), generator=g, device=self.env.device)
                zs = slerp(a, b, t.to(a.device)).view(req.steps, *self.x_shape)
                lab = None
                if self.conditional:
                    k = req.label if req.label is not None else p % self.num_classes
                    lab = torch.full((req.steps,), k, dtype=torch.long)
                    labels_txt.append(f"pair {p} ({self.classes[k]})")
                else:
                    labels_txt.append(f"pair {p}")
                x = self.run_sampler(req.steps, generator=self.generator(req.seed + p), labels=lab, x_T=zs)
                rows.append(self.to_images(x))
        finally:
            used, self._sampler = self._sampler, saved
        png = save_traversal(torch.stack(rows), req.folder / "interpolation.png", row_labels=labels_txt,
                             values=t.tolist(), title=f"{req.run_name}: slerp between two x_T, "
                                                      f"{used['sampler']} {used['steps']} steps (deterministic)")
        return Artifacts(files=[png])

    # -- helpers for experiments --------------------------------------------------------------
    def sample_noise(self, n: int, seed: int) -> Tensor:
        """The x_T of ``n`` samples drawn as :meth:`sample` would (for fixed-noise comparisons)."""
        return torch.randn((n, *self.x_shape), generator=self.generator(seed), device=self.env.device)
