"""The image-data set-up that the image families share (classifier, generative, autoencoder,
image-to-image): the dataset from ``cfg.data``, the seeded train / validation split and the
batches of each split."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..config import RunConfig
from ..contract import Env
from ..data import Batches, ImageData, load_dataset, train_val_split
from ..data.corrupt import corrupt
from ..data.loader import PoissonBatches
from ..data.vision import default_val_size
from ..errors import ConfigError


def load_image_data(cfg: RunConfig, env: Env) -> ImageData:
    """``cfg.data``'s dataset (a progress bar on the main process unless ``train.quiet``)."""
    d = cfg.data
    return load_dataset(d.name, data_dir=d.data_dir, download=d.download,
                        progress=env.is_main and not cfg.train.quiet)


def split_loaders(cfg: RunConfig, env: Env, x: Tensor, y: Tensor, *, norm: dict[str, Any],
                  augment: Any = None, keep_class: int | None = None, num_classes: int | None = None,
                  channels_last: bool = False, poisson: bool = False) -> tuple[Batches, Batches | None]:
    """Training and validation batches of ``x, y``: the seeded split of ``data.val_size``
    examples (``null``: a tenth of ``x``, at most 5000, see
    :func:`~profond.data.vision.default_val_size`), then ``data.corrupt`` on the training part
    only (seeded by ``train.seed``, :func:`~profond.data.corrupt.corrupt`; the validation part
    stays clean), then ``keep_class`` (only that class in both parts), then ``data.subset``.
    ``norm``: the ``mean`` / ``std`` the batches standardise with; the validation batches are
    ``None`` when ``data.val_size`` is 0. ``num_classes`` (one-hot soft targets for Mixup /
    CutMix) and ``channels_last`` as in :class:`~profond.data.Batches`."""
    d = cfg.data
    val_size = default_val_size(d.val_size, len(x))
    if val_size >= len(x):
        raise ConfigError(f"data.val_size={val_size} leaves no training data ({len(x)} examples in "
                          f"{d.name!r}): lower it, or set data.val_size=null (a tenth of them).")
    tx, ty, vx, vy = train_val_split(x, y, val_size, seed=cfg.train.seed)
    if d.corrupt != "none":
        # random labels are drawn among the classes of the whole data set (not only the split's)
        tx, ty = corrupt(tx, ty, d.corrupt, fraction=d.corrupt_fraction, seed=cfg.train.seed,
                         num_classes=num_classes if num_classes is not None else int(y.max()) + 1)
    if keep_class is not None:
        tx, ty, vx, vy = tx[ty == keep_class], ty[ty == keep_class], vx[vy == keep_class], vy[vy == keep_class]
    if d.subset is not None:
        tx, ty = tx[: d.subset], ty[: d.subset]
    common = dict(device=env.device, channels_last=channels_last, num_classes=num_classes, **norm)
    # poisson: DP-SGD's sampling (each example in a batch with probability batch_size / N)
    train = (PoissonBatches if poisson else Batches)(tx, ty, batch_size=d.batch_size, shuffle=True, seed=cfg.train.seed, augment=augment,
                    rank=env.rank, world_size=env.world_size, **common)
    val = Batches(vx, vy, batch_size=d.eval_batch_size, shuffle=False, **common) if len(vx) else None
    return train, val


def eval_loader(cfg: RunConfig, env: Env, x: Tensor, y: Tensor, *, norm: dict[str, Any],
                num_classes: int | None = None, channels_last: bool = False) -> Batches:
    """Evaluation batches of ``x, y`` (in order, ``data.eval_batch_size`` at a time)."""
    return Batches(x, y, batch_size=cfg.data.eval_batch_size, shuffle=False, device=env.device,
                   channels_last=channels_last, num_classes=num_classes, **norm)
