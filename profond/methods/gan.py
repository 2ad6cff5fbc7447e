"""GAN training (course chapter 8): minimax / non-saturating / Wasserstein (clipping or
gradient penalty) / hinge / least-squares losses, n_critic, TTUR, conditional GANs.

The model (:mod:`profond.models.gan`, ``model.name=gan`` or ``dcgan``) holds a generator
``G`` and a discriminator / critic ``D``; the method trains them as two nets with **two
optimizers named ``D`` and ``G``**, so each can have its own settings (TTUR, Heusel et al.
2017: ``--set optim.per_optimizer={D: {lr: 4e-4}}``). The course's Adam betas (0.5, 0.999)
(§8.7) are set in the recipes (``optim.betas: [0.5, 0.999]``).

The game (eq. 8.1)::

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))]

with the losses of :mod:`profond.methods.gan_losses` (table there; ``non-saturating`` is the
generator loss ``-log D(G(z))`` of §8.3.2, ``wasserstein`` the critic of WGAN, made 1-Lipschitz
by weight clipping ``method.clip`` or by the gradient penalty of eq. 8.16 with weight
``method.gp_weight`` (λ = 10 in the course); the conditional game is eq. 8.17).

Schedule: each training step (one data batch) makes one D update; the generator is updated
on every ``n_critic``-th step (``step % n_critic == 0``, after that step's D update; step 0
included, so that each optimizer steps before its LR scheduler), so ``n_critic = 5`` gives 5 D
updates (each on a fresh real batch) per G update, as in WGAN. The schedule follows the
loop's step counter, which is saved in checkpoints: a resumed run continues it exactly.

Images are scaled to [-1, 1] inside (Tanh generator), [0, 1] at the interface.

Logged per step: ``loss_D``, ``loss_G`` (the generator loss on the D step's fake scores, i.e.
before that step's D update, so it is logged on every step), ``D_x`` / ``D_G_z`` (mean
``sigmoid(D)`` for the logit losses minimax / non-saturating; mean raw output otherwise),
``grad_norm_D`` / ``grad_norm_G`` (the L2 norm of the last update's gradient before any
clipping, as the loop's ``ctx.optimize`` returns it; G's is the last G update's), ``gp`` and ``wasserstein`` (``E D(x) - E D(G(z))``, the critic's estimate of W1,
for the wasserstein loss).

Divergence guard: besides the loop's NaN/Inf guard (``ctx.optimize``), when the discriminator
wins outright (``D_x > 1 - collapse_eps`` and ``D_G_z < collapse_eps``) for ``collapse_steps``
consecutive steps, :class:`~profond.errors.TrainingDiverged` is raised (the loop marks the run
``diverged``; its last checkpoint is the last good epoch). It applies to the losses whose D
output reads as a probability/target in [0, 1] (minimax, non-saturating, least-squares);
``collapse_steps: 0`` turns it off. The counter is saved in checkpoints (``Method.state_dict``),
so a resumed run continues it.

Mode-collapse monitor (per step): every ``monitor_every``-th step, ``monitor_n`` of that step's
fakes are classified by the shipped Fashion-MNIST net (28x28 grayscale data only) and the step
logs ``class_entropy`` (normalised entropy of the predicted-class histogram: 1 = uniform, 0 =
one class), ``missing_classes`` and ``max_class_fraction``, plus ``label_accuracy`` (fakes
classified as their conditioning label) for a conditional model. The loop averages each over
the steps that logged it. Cost: one feature-net pass on 64 images every 25 steps by default
(small next to the training steps).

LR schedules follow the loop's step counter (one step = one data batch) for both optimizers,
so with ``n_critic > 1`` G's schedule advances on the steps where only D is updated: both
nets see the same schedule as a function of training progress.

Evaluation (``val_*``): FID (eq. of Heusel et al., :func:`profond.metrics.generative.fid`) of
``eval_n`` samples against the validation images on the features of the shipped Fashion-MNIST
net, and the class histogram of the samples as a mode-collapse monitor (``class_entropy``,
normalised to [0, 1]; ``missing_classes``; ``max_class_fraction``). The best checkpoint is the
lowest ``val_fid``. A fixed-noise grid is written at every epoch end to
``RUN/samples/epoch-NNN.png`` and ``RUN/samples/evolution.gif`` at the end of training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from torch import Tensor, nn

from ..base.coerce import NonNegInt, PosInt, Range, Seed
from ..config import RunConfig
from ..contract import Callback, Env, StepContext
from ..errors import ConfigError, ProfondError, TrainingDiverged
from ..registry import METHODS
from .capabilities import Artifacts, ExploresLatent, LatentRequest, SamplesImages
from .gan_losses import LOSSES, GANLoss, d_loss, g_loss, gradient_penalty
from .generative import GenerativeMethod, slerp

#: losses whose D output is a logit: D(x) is reported as sigmoid(logit)
LOGIT_LOSSES = ("minimax", "non-saturating")
#: losses for which "D(x) ≈ 1 and D(G(z)) ≈ 0" is meaningful (collapse guard)
GUARDED_LOSSES = ("minimax", "non-saturating", "least-squares")
#: an adversarial loss option (GAN, pix2pix, SRGAN, CycleGAN): the choices of gan_losses.LOSSES,
#: which a test keeps equal


@dataclass
class GANOptions:
    #: minimax (eq. 8.1) | non-saturating (§8.3.2) | wasserstein | hinge | least-squares
    loss: GANLoss = "non-saturating"
    #: D (critic) updates per G update (5 for WGAN / WGAN-GP)
    n_critic: Annotated[PosInt, "1: alternate D and G"] = 1
    #: weight λ of the gradient penalty (eq. 8.16; 10 for WGAN-GP, 0 = none)
    gp_weight: Annotated[float, Range(0), "0: no gradient penalty"] = 0.0
    #: WGAN weight clipping: clamp D's parameters to [-clip, clip] after each D update (0 = none)
    clip: Annotated[float, Range(0), "0: no clipping"] = 0.0
    #: consecutive steps with D(x) > 1 - eps and D(G(z)) < eps before TrainingDiverged (0 = off)
    collapse_steps: Annotated[NonNegInt, "0: no collapse guard"] = 500
    #: the eps of that test
    collapse_eps: Annotated[float, Range(0, 0.5, lo_open=True, hi_open=True)] = 0.01
    #: samples of the per-epoch FID / class histogram (0 = no sample metrics; 1 is refused: an
    #: FID needs two samples)
    eval_n: Annotated[NonNegInt, "0: no sample metrics"] = 1000
    #: feature net of that FID (profond.metrics.features.FEATURE_NETS)
    eval_features: Literal["fmnist", "inception"] = "fmnist"
    #: seed of the evaluation samples
    eval_seed: Seed = 0
    #: images in the fixed-noise grid written each epoch (0 = no grid)
    grid_n: Annotated[NonNegInt, "0: no grid"] = 64
    #: seed of the grid's fixed noise
    grid_seed: Seed = 1234
    #: mode-collapse monitor during training: every ``monitor_every``-th step (0 = off), the
    #: class histogram of ``monitor_n`` of that step's fakes under the eval feature net
    monitor_every: Annotated[NonNegInt, "0: no monitor"] = 25
    #: fakes classified by that monitor
    monitor_n: PosInt = 64


class SampleGrid(Callback):
    """Writes the same fixed-noise samples at every epoch end (``samples/epoch-NNN.png``, with the
    EMA generator when there is one) and a GIF of their evolution at the end of training."""

    def __init__(self, method: GANMethod):
        self.method = method

    def folder(self, loop: Any) -> Path:
        return Path(loop.run_dir) / "samples"

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        from ..viz.images import save_grid

        m = self.method
        n = m.opts.grid_n
        if n <= 0:
            return
        labels = m.default_labels(n)
        with loop.ema_weights():
            imgs = m.sample(n, seed=m.opts.grid_seed, labels=labels)
        nrow = m.num_classes if m.conditional else None
        save_grid(imgs, self.folder(loop) / f"epoch-{epoch + 1:03d}.png", nrow=nrow)

    def on_train_end(self, loop: Any) -> None:
        import numpy as np
        from PIL import Image

        from ..viz.images import animate_grids

        files = sorted(self.folder(loop).glob("epoch-*.png"))
        if not files:
            return
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        titles = [f"epoch {int(f.stem.split('-')[1])}" for f in files]
        animate_grids(frames, self.folder(loop) / "evolution.gif", titles=titles, duration_ms=300)


@METHODS.register("gan", help="GAN: minimax / non-saturating / WGAN(-GP) / hinge / LSGAN, n_critic, "
                              "TTUR, conditional (ch. 8)")
class GANMethod(GenerativeMethod, SamplesImages, ExploresLatent):
    Options = GANOptions
    ema_nets = ("G",)
    monitor = ("val_fid", "min")
    track_grad_norm = ("D", "G")
    #: no encoder: ``profond latent`` (encode/decode of data) does not apply
    has_latent = False

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env, with_data=with_data)
        self.check_options(self.opts)
        model = self.build_model()
        if not (hasattr(model, "G") and hasattr(model, "D") and hasattr(model, "latent_dim")):
            raise ConfigError(f"method 'gan' needs a model with a generator .G and a discriminator .D; "
                              f"model {cfg.model.name!r} has none: use model.name=gan or dcgan.")
        self.latent_dim = int(model.latent_dim)
        self.conditional = bool(getattr(model, "conditional", False))
        self.num_classes = int(getattr(model, "num_classes", len(self.classes)))
        if self.opts.gp_weight > 0 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.D.modules()):
            # eq. 8.16 penalises each example's own input gradient; with batch statistics D(x̂_i)
            # depends on the other interpolates of the batch, so that is not the critic's gradient
            raise ConfigError(f"method.gp_weight={self.opts.gp_weight:g} with a BatchNorm critic: the gradient "
                              "penalty is per example and batch statistics mix the examples; set "
                              "model.d_norm=layer (or none), or method.gp_weight=0.")
        self.nets = {"G": model.G, "D": model.D}
        self._collapse_run = 0
        self._last_gnorm_G = 0.0
        self._feature_net: nn.Module | None = None
        # the feature net classifies 28x28 grayscale garments: the monitor (and the label
        # accuracy of a conditional model) only means something on such images
        self.monitor_on = (self.opts.monitor_every > 0 and self.opts.eval_features == "fmnist"
                           and tuple(self.image_shape) == (1, 28, 28))

    def state_dict(self) -> dict[str, Any]:
        """The collapse guard's counter and G's last gradient norm (a resumed run goes on with them)."""
        return {"collapse_run": self._collapse_run, "last_gnorm_G": self._last_gnorm_G}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._collapse_run = int(state.get("collapse_run", 0))
        self._last_gnorm_G = float(state.get("last_gnorm_G", 0.0))

    @staticmethod
    def check_options(o: GANOptions) -> None:
        """What the annotations of :class:`GANOptions` (types, choices, ranges) cannot say."""
        if o.eval_n == 1:
            raise ConfigError("method.eval_n=1: the FID needs at least 2 samples (0 = off).")

    # -- pieces ----------------------------------------------------------------------------
    def optimizer_params(self) -> dict[str, Any]:
        """Two optimizers: ``D`` for the discriminator, ``G`` for the generator."""
        return {name: [p for p in self.raw_nets[name].parameters() if p.requires_grad] for name in ("D", "G")}

    def callbacks(self) -> list[Any]:
        return [SampleGrid(self)]

    def default_labels(self, n: int) -> Tensor | None:
        """``0, 1, ..., K-1, 0, 1, ...`` for a conditional model (a grid with one class per column)."""
        return torch.arange(n) % self.num_classes if self.conditional else None

    def z(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn((n, self.latent_dim), device=self.env.device, generator=generator)

    def d_prob(self, scores: Tensor) -> Tensor:
        """The reported D(·): mean sigmoid for the logit losses, mean raw score otherwise."""
        s = scores.detach().float()
        return (torch.sigmoid(s) if self.opts.loss in LOGIT_LOSSES else s).mean()

    # -- training --------------------------------------------------------------------------
    def train_step(self, batch: Any, ctx: StepContext) -> dict[str, Any]:
        o = self.opts
        G, D = self.nets["G"], self.nets["D"]
        x = batch[0] * 2.0 - 1.0                       # [0, 1] -> [-1, 1]
        y = batch[1] if self.conditional else None
        kw = {"labels": y} if self.conditional else {}
        n = len(x)

        # -- D step: maximise the game's value over D (minimise d_loss), G fixed
        with torch.no_grad():
            fake = G(self.z(n), y)
        real_s, fake_s = D(x, **kw), D(fake.detach(), **kw)
        loss_d = d_loss(o.loss, real_s, fake_s)
        out: dict[str, Any] = {}
        if o.gp_weight > 0:                            # eq. 8.16
            gp = gradient_penalty(D, x, fake, **kw)
            loss_d = loss_d + o.gp_weight * gp
            out["gp"] = gp.detach()
        gn_d = ctx.optimize(loss_d, "D")
        if o.clip > 0:                                 # WGAN weight clipping
            with torch.no_grad():
                for p in self.raw_nets["D"].parameters():
                    p.clamp_(-o.clip, o.clip)
        d_x, d_gz = self.d_prob(real_s), self.d_prob(fake_s)
        out.update({"loss_D": loss_d.detach(), "loss_G": g_loss(o.loss, fake_s.detach()),
                    "D_x": d_x, "D_G_z": d_gz, "grad_norm_D": gn_d})
        if o.loss == "wasserstein":
            out["wasserstein"] = (real_s.detach().float().mean() - fake_s.detach().float().mean())
        self.check_collapse(float(d_x), float(d_gz), ctx)
        if self.monitor_on and ctx.step % o.monitor_every == 0:
            out.update(self.class_monitor(fake[: o.monitor_n], None if y is None else y[: o.monitor_n]))

        # -- G step every n_critic-th step: minimise g_loss through D, D fixed
        if ctx.step % o.n_critic == 0:
            d_params = list(self.raw_nets["D"].parameters())
            flags = [p.requires_grad for p in d_params]
            for p in d_params:
                p.requires_grad_(False)
            try:
                loss_g = g_loss(o.loss, D(G(self.z(n), y), **kw))
                gn_g = ctx.optimize(loss_g, "G")
            finally:
                for p, f in zip(d_params, flags, strict=True):
                    p.requires_grad_(f)
            if gn_g is not None:
                self._last_gnorm_G = gn_g
        out["grad_norm_G"] = self._last_gnorm_G
        return out

    @torch.no_grad()
    def class_monitor(self, fake: Tensor, labels: Tensor | None) -> dict[str, float]:
        """Mode-collapse monitor on a batch of fakes in [-1, 1]: the normalised entropy of their
        predicted-class histogram (1 = uniform over the classes, 0 = one class), the number of
        classes no fake falls in (``missing_classes``), the largest class share, and, for a
        conditional model, the share of fakes classified as their conditioning label
        (``label_accuracy``, eq. 8.17's G should reach the feature net's accuracy on real data)."""
        from ..metrics.generative import class_histogram

        net = self.feature_net()
        _, logits = net(((fake.detach().float() + 1) / 2).clamp(0, 1))
        pred = logits.argmax(1)
        hist = class_histogram(torch.nn.functional.one_hot(pred.cpu(), logits.shape[1]).double())
        res = {"class_entropy": hist["normalised_entropy"],
               "missing_classes": float(sum(c == 0 for c in hist["counts"].values())),
               "max_class_fraction": hist["max_fraction"]}
        if labels is not None and self.monitor_labels_ok(net):
            res["label_accuracy"] = float((pred == labels.to(pred.device)).float().mean())
        return res

    def check_collapse(self, d_x: float, d_gz: float, ctx: StepContext) -> None:
        """Raise TrainingDiverged after ``collapse_steps`` consecutive steps with D(x) ≈ 1, D(G(z)) ≈ 0."""
        o = self.opts
        if o.collapse_steps <= 0 or o.loss not in GUARDED_LOSSES:
            return
        if not (math.isfinite(d_x) and math.isfinite(d_gz)):
            raise TrainingDiverged(f"D outputs became non-finite at step {ctx.step}: D(x)={d_x}, D(G(z))={d_gz}.")
        if d_x > 1 - o.collapse_eps and d_gz < o.collapse_eps:
            self._collapse_run += 1
        else:
            self._collapse_run = 0
        if self._collapse_run >= o.collapse_steps:
            raise TrainingDiverged(
                f"GAN collapse: the discriminator wins outright (D(x) > {1 - o.collapse_eps:g} and "
                f"D(G(z)) < {o.collapse_eps:g}) for {self._collapse_run} consecutive steps (step {ctx.step}, "
                f"D(x)={d_x:.4f}, D(G(z))={d_gz:.4f}): the generator gets no useful gradient. Try "
                "method.loss=non-saturating, a lower D learning rate (optim.per_optimizer={D: {lr: 1e-4}}), "
                "model.spectral_norm=true, or method.collapse_steps=0 to disable this guard.")

    # -- evaluation ------------------------------------------------------------------------
    def feature_net(self) -> nn.Module:
        if self._feature_net is None:
            from ..metrics.generative import load_feature_net

            self._feature_net = load_feature_net(self.opts.eval_features, device=self.env.device)
        return self._feature_net

    @torch.no_grad()
    def evaluate(self, batches: Any, ctx: StepContext, detailed: bool = False) -> dict[str, Any]:
        """FID of ``eval_n`` samples vs the images of ``batches``, the samples' class histogram,
        and the discriminator's mean D(x) on those real images. ``detailed=True`` (``profond eval``)
        suffixes the sample metrics with ``_n<eval_n>`` (e.g. ``fid_n1000``), so that the
        command's own ``--n`` samples keep the plain names ``fid`` / ``class_histogram``."""
        from ..metrics.generative import class_histogram, extract, fid

        o = self.opts
        reals, ds = [], []
        with self.eval_mode("D") as D:
            for x, y in batches.batches(0):
                reals.append(x.detach().float().cpu())
                with ctx.autocast():
                    ds.append(self.d_prob(D(x * 2 - 1, **({"labels": y} if self.conditional else {}))) * len(x))
        real = torch.cat(reals)
        res: dict[str, Any] = {"D_x": float(torch.stack(ds).sum()) / max(len(real), 1)}
        if o.eval_n > 0 and len(real) >= 2:
            n = o.eval_n
            labels = None
            if self.conditional:  # classes as in the evaluation data
                ys = torch.cat([b[1].cpu() for b in batches.batches(0)])
                labels = ys[torch.arange(n) % len(ys)]
            fake = self.sample(n, seed=o.eval_seed, labels=labels)
            net = self.feature_net()
            f_real, _ = extract(net, real)
            f_fake, p_fake = extract(net, fake)
            hist = class_histogram(p_fake, getattr(net, "class_names", None) or None)
            scores = {"fid": fid(f_real, f_fake), "class_entropy": hist["normalised_entropy"],
                      "missing_classes": len(hist["missing"]), "max_class_fraction": hist["max_fraction"]}
            if labels is not None and self.monitor_labels_ok(net):
                scores["label_accuracy"] = float((p_fake.argmax(1) == labels.cpu()).double().mean())
            if detailed:  # `profond eval`: its own --n samples give fid / class_histogram; keep ours apart
                scores = {f"{k}_n{n}": v for k, v in scores.items()}
            res.update(scores)
        return res

    def monitor_labels_ok(self, net: nn.Module) -> bool:
        """The feature net's classes are this data's classes (so its prediction can grade labels)."""
        names = list(getattr(net, "class_names", []) or [])
        return bool(names) and names == [str(c) for c in self.classes]

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {**super().describe(), "loss": o.loss, "n_critic": o.n_critic, "gp_weight": o.gp_weight,
                "clip": o.clip, "conditional": self.conditional}

    # -- generative hooks ------------------------------------------------------------------
    def _labels(self, n: int, labels: Tensor | None) -> Tensor | None:
        if not self.conditional:
            return None
        if labels is None:
            labels = self.default_labels(n)
        labels = torch.as_tensor(labels).long().view(-1)
        if len(labels) != n:
            raise ConfigError(f"got {len(labels)} labels for {n} samples.")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ConfigError(f"labels must be in [0, {self.num_classes - 1}].")
        return labels.to(self.env.device)

    @torch.no_grad()
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images in [0, 1] (CPU) generated from latent codes ``z`` ``(N, latent_dim)``
        (labels default to ``i mod K`` for a conditional model)."""
        z = self.to_device(z)
        lab = self._labels(len(z), labels)
        with self.eval_mode("G") as G:
            outs = [G(z[i: i + 1000], None if lab is None else lab[i: i + 1000]).float()
                    for i in range(0, len(z), 1000)]
        x = torch.cat(outs) if outs else z.new_zeros((0, *self.image_shape))
        return ((x + 1) / 2).clamp(0, 1).cpu()

    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` images ``(G(z) + 1) / 2``, ``z ~ N(0, I)`` from a ``seed``-ed generator (the global
        RNG is untouched); ``labels`` (conditional models) default to ``0, 1, ..., K-1, 0, ...``."""
        z = self.z(n, generator=self.generator(seed))
        return self.decode(z, labels)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        raise ProfondError("a GAN has no encoder: `profond latent` interpolates between sampled codes only.")

    # -- presentation: `profond latent RUN` ---------------------------------------------------
    def latent_figures(self, req: LatentRequest) -> Artifacts:
        """interpolation.png: ``req.pairs`` pairs of codes z_a, z_b drawn from N(0, I) with
        ``req.seed``, each decoded along a linear path and a spherical one (:func:`slerp`), and
        the mean norms of both midpoints; for a conditional GAN (§8.5) also class_grid.png, one
        row per class and one column per fixed z, so each column shows the same noise rendered
        as every class. A GAN has no encoder: ``--a/--b/--dims/--range/--center/--points`` do
        not apply."""
        from ..viz.images import save_traversal

        steps, pairs, seed, label = req.steps, req.pairs, req.seed, req.label
        if steps < 2 or pairs < 1:
            raise ProfondError("--steps must be >= 2 and --pairs >= 1.")
        k_cls, cls = int(self.num_classes), self.classes

        def tagged(c: int) -> str:  # "class 3" on digits, "3: dress" on Fashion-MNIST
            name = cls[c] if c < len(cls) else str(c)
            return f"class {c}" if name == str(c) else f"{c}: {name}"

        if label is not None and not self.conditional:
            raise ProfondError("--label is for class-conditional GANs (model.conditional=true); drop it.")
        if label is not None and not 0 <= label < k_cls:
            raise ProfondError(f"--label {label}: use a class index in 0..{k_cls - 1}.")
        z = self.z(2 * pairs, generator=self.generator(seed)).cpu().float()
        t = torch.linspace(0, 1, steps)
        rows, names = [], []
        mid_lin, mid_sph, ends = [], [], []
        for k in range(pairs):
            za, zb = z[2 * k], z[2 * k + 1]
            lab, tag = None, ""
            if self.conditional:
                c = label if label is not None else k % k_cls
                lab = torch.full((steps,), c, dtype=torch.long)
                tag = f", {tagged(c)}"
            lin = (1 - t)[:, None] * za + t[:, None] * zb
            sph = slerp(za, zb, t)
            rows += [self.decode(lin, lab).cpu(), self.decode(sph, lab).cpu()]
            names += [f"pair {k + 1} linear{tag}", f"pair {k + 1} slerp{tag}"]
            mid_lin.append(float(((za + zb) / 2).norm()))
            mid_sph.append(float(slerp(za, zb, 0.5).norm()))
            ends += [float(za.norm()), float(zb.norm())]
        files = [save_traversal(torch.stack(rows), req.folder / "interpolation.png", row_labels=names,
                                values=t.tolist(), value_format="{:.2f}",
                                title=f"{req.run_name}: {pairs} pairs of z ~ N(0, I) (seed {seed}), linear vs "
                                      f"spherical, t = 0..1")]
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        line = (f"‖z‖ mean over {pairs} pairs: endpoints {mean(ends):.2f} (√d = {self.latent_dim ** 0.5:.2f}), "
                f"midpoint linear {mean(mid_lin):.2f}, slerp {mean(mid_sph):.2f}")
        if self.conditional:
            zc = self.z(steps, generator=self.generator(seed)).cpu().float()
            labels = torch.arange(k_cls).repeat_interleave(steps)
            imgs = self.decode(zc.repeat(k_cls, 1), labels).cpu()
            files.append(save_traversal(imgs.reshape(k_cls, steps, *imgs.shape[1:]), req.folder / "class_grid.png",
                                        row_labels=[tagged(c) for c in range(k_cls)],
                                        values=list(range(1, steps + 1)), value_format="z{:d}",
                                        title=f"{req.run_name}: each column one z (seed {seed}) rendered as every "
                                              "class (§8.5)"))
        return Artifacts(files=files, lines=[line])


__all__ = ["GANMethod", "GANOptions", "SampleGrid", "LOSSES"]
