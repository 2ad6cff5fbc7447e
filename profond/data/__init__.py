"""Data: datasets in memory, device-side batching and batched augmentation.

* :mod:`profond.data.idx` - the IDX file format of (Fashion-)MNIST;
* :mod:`profond.data.download` - verified, atomic downloads;
* :mod:`profond.data.vision` - the registered image datasets and where their files are found;
* :mod:`profond.data.loader` - :class:`Batches`, reproducible, resumable mini-batches;
* :mod:`profond.data.augment` - crop, flip, affine, Mixup, CutMix on whole batches (§3.7);
* :mod:`profond.data.text` - the text datasets of chapters 5-6 (fortunes, French numbers);
* :mod:`profond.data.tokenize` - character and byte-level BPE tokenizers;
* :mod:`profond.data.series` - real time series and sliding windows (exercise 5.3).
"""

from .augment import Augment, build_augment
from .download import fetch
from .idx import read_idx, read_idx_bytes, write_idx
from .loader import Batches
from .vision import ImageData, load_dataset, train_val_split

__all__ = [
    "Augment",
    "Batches",
    "ImageData",
    "build_augment",
    "fetch",
    "load_dataset",
    "read_idx",
    "read_idx_bytes",
    "train_val_split",
    "write_idx",
]
