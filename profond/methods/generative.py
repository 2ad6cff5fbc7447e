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

import torch
from torch import Tensor, nn

from ..config import RunConfig
from ..data import Batches, load_dataset, train_val_split
from ..errors import ConfigError, ProfondError
from .base import Env, Method

#: pixel scale of the data layer for generative families: x/255 in [0, 1], no standardisation
PIXELS = dict(mean=(0.0,), std=(1.0,))


class GenerativeMethod(Method):
    """Base of the generative families. Subclasses build ``self.nets`` and implement
    :meth:`train_step`, :meth:`evaluate` and the generative hooks they support.

    ``self.data`` is the :class:`~profond.data.ImageData`; ``self.train_data`` /
    ``self.val_data`` yield ``(x, y)`` with ``x`` float in [0, 1] on the device.
    """

    monitor = ("val_loss", "min")
    #: ``profond sample`` works (False for a plain autoencoder: it has no prior to sample)
    can_sample: bool = True
    #: ``profond latent`` works (needs encode/decode of a vector latent)
    has_latent: bool = False
    #: size of the latent vector (None when there is none)
    latent_dim: int | None = None

    def __init__(self, cfg: RunConfig, env: Env, *, with_data: bool = True):
        super().__init__(cfg, env)
        d = cfg.data
        self.data = load_dataset(d.name, data_dir=d.data_dir, download=d.download,
                                 progress=env.is_main and not cfg.train.quiet)
        self.classes = list(self.data.classes)
        self.image_shape: tuple[int, int, int] = tuple(self.data.shape)  # type: ignore[assignment]
        if with_data:
            self.train_data, self.val_data = self.build_loaders()

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
    def build_loaders(self, x: Tensor | None = None, y: Tensor | None = None) -> tuple[Batches, Batches | None]:
        """Seeded train/val split of the training set (or of ``x, y``) as [0, 1] batches."""
        cfg, env, d = self.cfg, self.env, self.cfg.data
        x = self.data.train_x if x is None else x
        y = self.data.train_y if y is None else y
        if d.val_size >= len(x):
            raise ConfigError(f"data.val_size={d.val_size} leaves no training data ({len(x)} examples).")
        if d.augment or d.mixup_alpha or d.cutmix_alpha:
            raise ConfigError("data augmentation is for classifiers; a generative model learns the data "
                              "as it is: remove data.augment / mixup_alpha / cutmix_alpha.")
        tx, ty, vx, vy = train_val_split(x, y, d.val_size, seed=cfg.train.seed)
        if d.subset is not None:
            tx, ty = tx[: d.subset], ty[: d.subset]
        train = Batches(tx, ty, batch_size=d.batch_size, shuffle=True, seed=cfg.train.seed,
                        device=env.device, rank=env.rank, world_size=env.world_size, **PIXELS)
        val = (Batches(vx, vy, batch_size=d.eval_batch_size, shuffle=False, device=env.device, **PIXELS)
               if len(vx) else None)
        return train, val

    def test_data(self) -> Batches:
        d = self.data
        return Batches(d.test_x, d.test_y, batch_size=self.cfg.data.eval_batch_size, shuffle=False,
                       device=self.env.device, **PIXELS)

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
