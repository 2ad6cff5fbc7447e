"""What every generative family (AE, VAE, VQ-VAE, GAN, diffusion, flows) offers beyond
the training step, so that one set of tools works for all of them:

* ``profond sample RUN``  -> :meth:`GenerativeMethod.sample`
* ``profond latent RUN``  -> :meth:`encode` / :meth:`decode` (interpolation, traversal, scatter)
* ``profond eval RUN``    -> :meth:`evaluate` (likelihood-type metrics on the test set) and the
  evaluation kit of :mod:`profond.metrics.generative` on :meth:`sample` output (FID, KID, IS, ...)

Images cross this interface as float tensors in **[0, 1]**, shape ``(N, C, H, W)``, on the
CPU (the method moves them to its device). Inside, a family is free to work on another scale
(e.g. [-1, 1] for a Tanh generator) and converts at the boundary.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..contract import Env, Method
from ..data import Batches
from ..data.inputs import pick_indices
from ..errors import ConfigError, ProfondError
from .capabilities import Artifacts, ExploresLatent, LatentRequest, SamplesImages, supports
from .imagedata import eval_loader, load_image_data, split_loaders

#: pixel scale of the data layer for generative families: x/255 in [0, 1], no standardisation
PIXELS = dict(mean=(0.0,), std=(1.0,))


class GenerativeMethod(Method):
    """Base of the generative families. Subclasses build ``self.nets`` and implement
    :meth:`train_step`, :meth:`evaluate` and the generative hooks they support.

    ``self.data`` is the :class:`~profond.data.ImageData`; ``self.train_data`` /
    ``self.val_data`` yield ``(x, y)`` with ``x`` float in [0, 1] on the device.
    """

    monitor = ("val_loss", "min")
    #: it encodes images to a vector latent (``encode`` / ``decode``)
    has_latent: bool = False
    #: size of the latent vector (None when there is none)
    latent_dim: int | None = None

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        self.data = load_image_data(cfg, env)
        self.classes = list(self.data.classes)
        self.image_shape: tuple[int, int, int] = tuple(self.data.shape)  # type: ignore[assignment]
        if with_data:
            self.train_data, self.val_data = self.build_loaders()

    @property
    def can_sample(self) -> bool:
        """``profond sample`` draws new images (the method declares :class:`SamplesImages`)."""
        return supports(self, SamplesImages)

    # -- the model ----------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """``cfg.model`` built for this data's image shape (and class count, for conditional nets)."""
        from ..registry import MODELS

        return MODELS.build(self.cfg.model.name, in_shape=self.image_shape,
                            num_classes=len(self.classes), **self.cfg.model.args)

    def unwrapped(self, name: str = "model") -> nn.Module:
        """Net ``name`` without its DDP / compile wrapper (``raw_nets`` once the loop placed it)."""
        return self.raw_nets.get(name, self.nets[name])

    @contextmanager
    def eval_mode(self, name: str = "model") -> Iterator[nn.Module]:
        """The unwrapped net in eval mode for the block, restoring its train/eval state after."""
        model = self.unwrapped(name)
        was = model.training
        model.eval()
        try:
            yield model
        finally:
            model.train(was)

    # -- data ---------------------------------------------------------------------------
    def build_loaders(self, x: Tensor | None = None, y: Tensor | None = None,
                      keep_class: int | None = None) -> tuple[Batches, Batches | None]:
        """Seeded train/val split of the training set (or of ``x, y``) as [0, 1] batches
        (only class ``keep_class`` when given)."""
        d = self.cfg.data
        if d.augment or d.mixup_alpha or d.cutmix_alpha:
            raise ConfigError("data augmentation is for classifiers; a generative model learns the data "
                              "as it is: remove data.augment / mixup_alpha / cutmix_alpha.")
        x = self.data.train_x if x is None else x
        y = self.data.train_y if y is None else y
        return split_loaders(self.cfg, self.env, x, y, norm=PIXELS, keep_class=keep_class)

    def test_data(self) -> Batches:
        return self.eval_batches(self.data.test_x, self.data.test_y)

    def eval_batches(self, x: Tensor, y: Tensor) -> Batches:
        """Evaluation batches of images ``x`` (uint8, as the dataset holds them) in [0, 1]."""
        return eval_loader(self.cfg, self.env, x, y, norm=PIXELS)

    def test_images(self, n: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``n`` test images as float [0, 1] CPU tensors, with their labels."""
        x, y = self.data.test_x, self.data.test_y
        if n is not None:
            x, y = x[:n], y[:n]
        return x.float() / 255.0, y

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {"dataset": d.name, "data_source": d.source, "classes": self.classes,
                "image_shape": list(self.image_shape), "latent_dim": self.latent_dim,
                "train_examples": getattr(self.train_data, "num_samples", None),
                "test_examples": len(d.test_y)}

    # -- generative hooks (override what the family supports) ----------------------------
    @torch.no_grad()
    def sample(self, n: int, *, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """``n`` new images, float [0, 1], ``(n, C, H, W)`` on the CPU; deterministic in ``seed``.
        ``labels`` conditions class-conditional models (ignored otherwise)."""
        raise ProfondError(f"method {self.cfg.method.name!r} cannot sample new images "
                           "(it has no prior); use a VAE, GAN or diffusion model.")

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Latent codes ``(N, latent_dim)`` (posterior means for a VAE) of [0, 1] images."""
        raise ProfondError(f"method {self.cfg.method.name!r} has no encoder.")

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """Images in [0, 1] (CPU) decoded from latent codes ``(N, latent_dim)``."""
        raise ProfondError(f"method {self.cfg.method.name!r} has no decoder of latent vectors.")

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructions in [0, 1] (CPU) of [0, 1] images (deterministic: posterior means)."""
        return self.decode(self.encode(x))

    def generator(self, seed: int) -> torch.Generator:
        """A seeded RNG on the method's device (sampling never touches the global RNG)."""
        g = torch.Generator(device=self.env.device)
        g.manual_seed(int(seed))
        return g

    def to_device(self, x: Tensor) -> Tensor:
        return x.to(self.env.device, non_blocking=True).float()


class EncodedLatent(ExploresLatent):
    """``profond latent`` for a family that encodes images to a vector latent (AE, VAE):
    interpolation.png (a linear path between the codes of test images ``a`` and ``b``),
    traversal.png (one latent dimension at a time around a centre) and latent_scatter.png
    (test codes by class; PCA when the latent has more than 2 dimensions)."""

    def latent_figures(self, req: LatentRequest) -> Artifacts:
        from ..viz.images import save_latent_scatter, save_strip, save_traversal

        if req.label is not None:
            raise ProfondError("--label is for conditional GAN runs; drop it.")
        if req.steps < 2 or req.dims < 1 or req.range <= 0 or req.points < 2:
            raise ProfondError("--steps must be >= 2, --dims >= 1, --range > 0 and --points >= 2.")
        if req.center not in ("image", "zero"):
            raise ProfondError(f"--center {req.center!r}: use image or zero.")
        x, y = self.test_images()
        for flag, i in (("--a", req.a), ("--b", req.b)):
            if not 0 <= i < len(x):
                raise ProfondError(f"{flag} {i}: use a test image index in 0..{len(x) - 1}.")
        cls, a, b, steps = self.classes, req.a, req.b, req.steps
        files = []
        # interpolation: original a, decoded path, original b
        za, zb = self.encode(x[[a, b]]).cpu().float()
        t = torch.linspace(0, 1, steps).unsqueeze(1)
        path_imgs = self.decode((1 - t) * za + t * zb).cpu()
        strip = torch.cat([x[a: a + 1], path_imgs, x[b: b + 1]])
        files.append(save_strip(strip, req.folder / "interpolation.png",
                                title=f"test #{a} ({cls[int(y[a])]}) -> #{b} ({cls[int(y[b])]}): "
                                      f"{steps} linear steps in latent space"))
        # codes of the scatter set: posterior means; their per-dim variance ranks the traversal dims
        idx = torch.arange(len(x)) if req.points >= len(x) else pick_indices(len(x), req.points, req.seed).sort().values
        z = batched(lambda v: self.encode(v).cpu().float(), x[idx], 1000)
        var = z.var(0) if len(z) > 1 else torch.ones(z.shape[1])
        k = min(req.dims, z.shape[1])
        top = torch.argsort(var, descending=True)[:k]
        base = za.clone() if req.center == "image" else torch.zeros_like(za)
        vals = torch.linspace(-req.range, req.range, steps)
        scale = torch.ones_like(var) if self.can_sample else var.sqrt()  # prior units for a VAE
        rows = []
        for d in top.tolist():
            zs = base.repeat(steps, 1)
            zs[:, d] = base[d] + vals * scale[d]
            rows.append(self.decode(zs).cpu())
        centre = f"the code of test #{a}" if req.center == "image" else "z = 0"
        files.append(save_traversal(torch.stack(rows), req.folder / "traversal.png",
                                    row_labels=[f"z{d} (var {var[d]:.2f})" for d in top.tolist()],
                                    values=vals.tolist(),
                                    title=f"{req.run_name}: traversal around {centre}, {k} most active of "
                                          f"{z.shape[1]} dims"
                                          + ("" if self.can_sample else ", values x each dim's std")))
        files.append(save_latent_scatter(z.numpy(), np.asarray(y[idx]), cls, req.folder / "latent_scatter.png",
                                         title=f"{req.run_name} ({len(z)} test means)"))
        return Artifacts(files=files)


def batched(fn, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Apply ``fn`` to ``x`` in chunks and concatenate (bounded memory for 10k-sample evals)."""
    outs = [fn(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(outs) if outs else x[:0]


def slerp(a: Tensor, b: Tensor, t: Tensor | float, eps: float = 1e-7) -> Tensor:
    """Spherical linear interpolation between latent vectors (White 2016, "Sampling generative
    networks"; ``profond latent`` on a GAN, course 004 "Interprétation de l'Espace Latent des GANs")::

        z(t) = sin((1 − t)Ω) / sin Ω · a + sin(tΩ) / sin Ω · b,     Ω = ∠(a, b)

    ``a``, ``b``: ``(..., d)`` (the angle is taken along the last dimension); ``t``: a float or a
    tensor whose shape, with a trailing 1 appended, broadcasts against ``a`` (``t`` of shape
    ``(T,)`` and ``a`` of shape ``(d,)`` give ``(T, d)``). ``t = 0`` and ``t = 1`` return ``a`` and
    ``b`` exactly; for equal norms every ``z(t)`` keeps that norm (the path stays on the sphere
    where most of ``N(0, I)``'s mass lies, whereas the linear midpoint of two independent
    draws has norm ≈ ``‖a‖ / √2``). Where ``sin Ω < eps`` (parallel or opposite vectors) it falls
    back to the linear path ``(1 − t) a + t b``.
    """
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device).unsqueeze(-1)
    an = a / a.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    bn = b / b.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(b.dtype).tiny)
    # Ω = 2 atan2(‖â − b̂‖, ‖â + b̂‖): accurate for small and large angles (acos is not near 0 and π)
    omega = 2.0 * torch.atan2((an - bn).norm(dim=-1, keepdim=True), (an + bn).norm(dim=-1, keepdim=True))
    so = torch.sin(omega)
    linear = so.abs() < eps
    safe = torch.where(linear, torch.ones_like(so), so)
    wa = torch.where(linear, 1.0 - t, torch.sin((1.0 - t) * omega) / safe)
    wb = torch.where(linear, t, torch.sin(t * omega) / safe)
    return wa * a + wb * b
