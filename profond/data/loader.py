"""Mini-batches sliced from tensors that live on the device (mini-batch SGD, course §2.1.2).

The whole dataset is small (Fashion-MNIST is 47 MB of uint8), so :class:`Batches` moves
it to the device once and builds each batch by indexing: no ``DataLoader``, no worker
processes, no per-sample Python. Each batch is converted to float, augmented (§3.7) and
normalised ``(x / 255 - mean) / std`` on the device.

Reproducibility and resuming
    Epoch ``e``'s order is a permutation drawn from a generator seeded from
    ``(seed, e)`` only, and batch ``k``'s augmentation from a generator seeded from
    ``(seed, e, k)`` only. So epoch ``e`` is the same whatever ran before, and
    ``batches(e, start=k)`` yields exactly batches ``k, k+1, ...`` of the full epoch: a
    run resumed mid-epoch continues with the very batches it would have seen.

Data parallelism
    With ``world_size`` W, every rank computes the same global batch of ``batch_size``
    indices (the same permutation and augmentation seeds), augments it as a whole (so
    Mixup pairs and CutMix boxes are those of the single-process run), and keeps its
    contiguous share ``[r*B/W, (r+1)*B/W)``: the ranks' slices concatenate to the
    single-process batch. A last partial batch is split as evenly as possible; if it has
    fewer than W examples it is dropped, so every rank runs the same number of steps.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import torch

from ..errors import ConfigError
from .augment import Augment

Tensor = torch.Tensor


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well spread even for neighbouring inputs."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


class Batches:
    """Shuffled, augmented, normalised mini-batches of in-memory images.

    ``x`` is ``uint8 (N, C, H, W)`` (scaled by 1/255) or float already in [0, 1];
    ``y`` int64 labels ``(N,)``. Iterate with :meth:`batches`; ``len()`` is the number of
    batches per epoch (the same on every rank), :attr:`num_samples` the examples this
    rank sees per epoch.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        augment: Augment | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        num_classes: int | None = None,
    ):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
        if len(x) == 0:
            raise ConfigError("cannot batch an empty dataset (0 examples).")
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad distributed setup: rank {rank} of world size {world_size}.")
        if batch_size % world_size:
            raise ConfigError(
                f"batch size {batch_size} is not divisible by the world size {world_size}: "
                f"the global batch is split evenly between processes; use a multiple of "
                f"{world_size} (e.g. {batch_size - batch_size % world_size or world_size})."
            )
        if len(std) != len(mean) or any(s <= 0 for s in std):
            raise ValueError(f"bad normalisation mean={tuple(mean)} std={tuple(std)}")
        self.device = torch.device(device)
        self.x = x.to(self.device)  # once: uint8 on the device
        self.y = y.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.augment = augment
        self.drop_last = drop_last
        self.rank, self.world_size = int(rank), int(world_size)
        self.channels_last = channels_last
        if augment is not None and augment.soft_targets:
            if num_classes is not None and num_classes != augment.num_classes:
                raise ConfigError(
                    f"the augmentation makes {augment.num_classes}-class soft targets "
                    f"but the data has {num_classes} classes."
                )
            num_classes = augment.num_classes
        self.num_classes = num_classes
        shape = (1, len(mean)) + (1,) * (x.dim() - 2)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(shape)
        self._div = 255.0 if x.dtype == torch.uint8 else 1.0

        n, b = len(self.x), self.batch_size
        full, rest = divmod(n, b)
        if drop_last or (rest and rest < world_size):
            rest = 0
        self._num_batches = full + (1 if rest else 0)
        self.num_samples = full * (b // world_size) + (self._share(rest) if rest else 0)

    # -- sizes ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._num_batches

    @property
    def soft_targets(self) -> bool:
        return self.augment is not None and self.augment.soft_targets

    def _bounds(self, size: int) -> tuple[int, int]:
        """This rank's ``[lo, hi)`` within a global batch of ``size`` examples."""
        base, extra = divmod(size, self.world_size)  # like torch.tensor_split
        r = self.rank
        lo = r * base + min(r, extra)
        return lo, lo + base + (1 if r < extra else 0)

    def _share(self, size: int) -> int:
        lo, hi = self._bounds(size)
        return hi - lo

    # -- iteration -----------------------------------------------------------------------
    def order(self, epoch: int) -> Tensor:
        """The epoch's example order (on the device): a seeded permutation, or 0..N-1."""
        n = len(self.x)
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        return torch.randperm(n, generator=g).to(self.device)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(x, y)`` for batches ``start, start+1, ...`` of ``epoch``.

        ``x`` is float32, normalised, on the device; ``y`` int64 labels, or float
        ``(B, num_classes)`` soft targets when Mixup/CutMix is on.
        """
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        order = self.order(epoch)
        for k in range(start, len(self)):
            yield self._batch(order, epoch, k)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Epoch 0: handy for evaluation loaders (``shuffle=False``)."""
        return self.batches(0)

    def _batch(self, order: Tensor, epoch: int, k: int) -> tuple[Tensor, Tensor]:
        b = self.batch_size
        return self._gather(order[k * b : (k + 1) * b], epoch, k)

    def _gather(self, idx: Tensor, epoch: int, k: int) -> tuple[Tensor, Tensor]:
        """Batch ``k`` of ``epoch``: the examples ``idx`` (this rank's share), augmented, normalised."""
        lo, hi = self._bounds(len(idx))
        if self.augment is None:
            idx = idx[lo:hi]  # only this rank's share is ever gathered
            x = self.x[idx].to(torch.float32).div_(self._div)
            y = self.y[idx]
        else:
            x = self.x[idx].to(torch.float32).div_(self._div)
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, k))
            x, y = self.augment(x, self.y[idx], g)
            x, y = x[lo:hi], y[lo:hi]
        x = (x - self._mean) / self._std
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


class PoissonBatches(Batches):
    """Poisson-sampled batches, the sampling DP-SGD's privacy accounting assumes (course §12.7.1;
    :func:`profond.privacy.epsilon`): in batch ``k`` of ``epoch`` every one of the N examples is
    included independently with probability ``q = batch_size / N``, so a batch holds
    ``Binomial(N, q)`` examples (``batch_size`` on average, possibly none) and an epoch is
    ``round(1/q)`` batches. The draw of batch ``k`` is seeded by ``(seed, epoch, k)``: the same
    batches on a resume, whatever batch it starts at. One process only (no ``world_size > 1``).
    """

    def __init__(self, x: Tensor, y: Tensor, **kw):
        if kw.get("world_size", 1) != 1:
            raise ConfigError("Poisson sampling (DP-SGD) runs on one process; drop torchrun / WORLD_SIZE.")
        kw["shuffle"] = True
        super().__init__(x, y, **kw)
        n = len(self.x)
        if self.batch_size > n:
            raise ConfigError(f"data.batch_size={self.batch_size} is larger than the {n} training examples: "
                              "the Poisson sampling rate batch_size / N must be at most 1.")
        #: q, the probability that an example is in a batch
        self.sample_rate = self.batch_size / n
        self._num_batches = max(1, round(1 / self.sample_rate))
        self.num_samples = n  # in expectation: q·N per batch, 1/q batches

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        n = len(self.x)
        for k in range(start, len(self)):
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, k, 0x9015))
            idx = (torch.rand(n, generator=g) < self.sample_rate).nonzero().flatten().to(self.device)
            yield self._gather(idx, epoch, k)
