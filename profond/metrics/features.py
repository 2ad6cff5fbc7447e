"""Feature networks for the generative evaluation kit (:mod:`profond.metrics.generative`).

FID, KID, precision/recall and the Inception Score compare images through the eyes of a
trained classifier: its penultimate-layer *features* and its class *probabilities*. The
standard choice, InceptionV3 trained on ImageNet (Heusel et al. 2017; the course's
"Distance d'Inception de Fréchet", course seed 004), knows little about 28×28 grayscale clothes, needs a
299×299 RGB input and downloaded weights. This module ships a small network trained on
Fashion-MNIST instead:

* ``fmnist-features`` (registered model): the ``fmnist-cnn`` trunk
  ``[conv3×3(w)-BN-ReLU]×2 → pool → [conv3×3(2w)-BN-ReLU]×2 → pool`` followed by a compact
  embedding ``dropout → FC(2w·7·7 → dim) → BN → ReLU`` (``dim = 128``: the 128-d
  embedding keeps FID's covariance matrices small, unlike the 3136-d flattened map) and a
  Linear classifier ``dim → 10``.
* its trained weights, ``profond/assets/fmnist_features.safetensors``, with
  ``fmnist_features.json`` next to them: SHA-256, size, the training command
  (``python scripts/train_feature_net.py``), the data it saw, the recipe and the measured
  test accuracy.

:func:`load_feature_net` returns a :class:`FeatureNet`: ``forward(x01) -> (features,
logits)`` on images in [0, 1] of shape ``(N, 1, H, W)``; it resizes to 28×28 (bilinear)
and normalises with the training statistics itself. ``name="inception"`` gives the
standard InceptionV3 (2048-d pool features, 1008 logits) through torchmetrics /
torch-fidelity when those and the weights are installed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import CheckpointError, ConfigError, ProfondError
from ..models.cnn import _after_pools, _TrunkHead
from ..nn.layers import check_in_shape, check_int, check_prob, conv2d
from ..registry import MODELS

#: folder of the shipped weights
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets"
#: the feature networks :func:`load_feature_net` knows
FEATURE_NETS = ("fmnist", "inception")
#: the command that regenerates the shipped weights (recorded in the JSON, quoted in errors)
TRAIN_COMMAND = "python scripts/train_feature_net.py"
#: Fashion-MNIST training-set statistics on the [0, 1] scale (profond.data.vision.STATS)
FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530


# ----------------------------------------------------------------------------------------
# the model


@MODELS.register(
    "fmnist-features",
    help="fmnist-cnn trunk + 128-d embedding: the feature net of FID/KID/IS (profond.metrics)",
)
def fmnist_features(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    width: int = 32,
    dim: int = 128,
    dropout: float = 0.25,
) -> nn.Module:
    """``fmnist-cnn`` trunk, then ``dropout → FC(2w·H/4·W/4 → dim, no bias) → BN → ReLU →
    Linear(dim → num_classes)``.

    ``features`` is the convolutional trunk, ``head[:-1]`` the embedding (its output, the
    ``dim``-d input of the last Linear, is what FID compares) and ``head[-1]`` the
    classifier.
    """
    shape = check_in_shape(in_shape)
    num_classes = check_int("num_classes", num_classes)
    width = check_int("width", width)
    dim = check_int("dim", dim)
    dropout = check_prob("dropout", dropout)
    h, w = _after_pools(shape, 2)

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [conv2d(cin, cout, 3, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    features = nn.Sequential(
        *block(shape[0], width), *block(width, width), nn.MaxPool2d(2),
        *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
    )  # fmt: skip
    head = nn.Sequential(
        nn.Dropout(dropout), nn.Flatten(),
        nn.Linear(2 * width * h * w, dim, bias=False), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        nn.Linear(dim, num_classes),
    )  # fmt: skip
    return _TrunkHead(features, head)


# ----------------------------------------------------------------------------------------
# the feature extractor


def check_images(x: Tensor, channels: int = 1, what: str = "images") -> Tensor:
    """``x`` as a float tensor ``(N, C, H, W)``; ProfondError for another layout.

    A ``(N, H, W)`` batch gets its channel axis. The images must be on the [0, 1] scale
    (not checked value by value: a uint8 tensor is divided by 255).
    """
    if not torch.is_tensor(x):
        raise ProfondError(f"{what} must be a torch.Tensor of shape (N, {channels}, H, W), "
                           f"got {type(x).__name__}.")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise ProfondError(f"{what} must be float in [0, 1] (or uint8), got dtype {x.dtype}.")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ProfondError(f"{what} must have shape (N, {channels}, H, W), got {tuple(x.shape)}.")
    if x.shape[1] != channels:
        hint = (" This feature net was trained on grayscale Fashion-MNIST: convert RGB images "
                "to one channel first (e.g. x.mean(1, keepdim=True)) or use features='inception'."
                if channels == 1 else "")
        raise ProfondError(f"{what} have {x.shape[1]} channels, the feature net takes {channels}: "
                           f"shape {tuple(x.shape)}.{hint}")
    return x


class FeatureNet(nn.Module):
    """Images in [0, 1], ``(N, 1, H, W)`` -> ``(features (N, D), logits (N, K))``.

    Other sizes than 28×28 are resized bilinearly; the input is normalised with the
    Fashion-MNIST training statistics as during training. Always in eval mode (BatchNorm
    running statistics, no dropout) with frozen weights (gradients still flow to the
    input). ``info`` is the JSON record of the weights.
    """

    def __init__(self, model: nn.Module, info: dict[str, Any], mean: float = FMNIST_MEAN,
                 std: float = FMNIST_STD, size: tuple[int, int] = (28, 28)):
        super().__init__()
        # channels_last convolutions are faster on CPU for this net
        self.model = model.to(memory_format=torch.channels_last).requires_grad_(False)
        self.info = info
        self.size = tuple(size)
        self.name = str(info.get("name", "fmnist"))
        self.class_names = list(info.get("classes", []))
        self.feature_dim = int(info.get("feature_dim", 0))
        self.num_classes = int(info.get("num_classes", 0))
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> FeatureNet:  # a metric must not change: stay in eval
        return super().train(False)

    def forward(self, x01: Tensor) -> tuple[Tensor, Tensor]:
        x = check_images(x01, 1).to(self.mean.device, torch.float32)
        if tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=False)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        h = self.model.features(x)
        feats = self.model.head[:-1](h)
        return feats, self.model.head[-1](feats)


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def asset_paths(name: str = "fmnist") -> tuple[Path, Path]:
    """``(weights .safetensors, record .json)`` of a shipped feature net."""
    return ASSET_DIR / f"{name}_features.safetensors", ASSET_DIR / f"{name}_features.json"


def read_feature_record(name: str = "fmnist") -> dict[str, Any]:
    _, record = asset_paths(name)
    fix = f"reinstall profond or regenerate the weights with `{TRAIN_COMMAND}`"
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"feature-net record {str(record)!r} is missing; {fix}.") from None
    except ValueError as e:
        raise CheckpointError(f"feature-net record {str(record)!r} is not valid JSON ({e}); {fix}.") from None


def load_fmnist_state(name: str = "fmnist") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The shipped weights (SHA-256 checked against the JSON record) and the record."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    weights, record = asset_paths(name)
    info = read_feature_record(name)
    fix = (f"restore the file from the profond package (reinstall, or `git checkout {weights.name}`) "
           f"or regenerate it and its record with `{TRAIN_COMMAND}`")
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"feature-net weights {str(weights)!r} are missing; {fix}.") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.get("sha256") or len(data) != info.get("bytes", len(data)):
        raise CheckpointError(
            f"feature-net weights {str(weights)!r} fail their checksum: sha256 {digest} "
            f"({len(data)} B), {record.name} expects {info.get('sha256')} ({info.get('bytes')} B); "
            f"the file is corrupt or was changed: {fix}.")
    try:
        return st_load(data), info
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{str(weights)!r} is not a valid safetensors file ({e}); {fix}.") from None


def build_fmnist_net(state: dict[str, Tensor], info: dict[str, Any]) -> FeatureNet:
    """A :class:`FeatureNet` around ``fmnist-features`` built from ``info['model']``."""
    arch = dict(info.get("model", {}))
    arch.pop("name", None)
    model = fmnist_features(**arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"the fmnist feature-net weights do not match the architecture of its "
                              f"record ({e}); regenerate both with `{TRAIN_COMMAND}`.") from None
    norm = info.get("normalisation", {})
    return FeatureNet(model, info, mean=norm.get("mean", FMNIST_MEAN), std=norm.get("std", FMNIST_STD))


def load_feature_net(name: str = "fmnist", device: str | torch.device = "cpu") -> nn.Module:
    """The feature network ``name`` on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``...), in eval mode.

    ``"fmnist"``: the shipped Fashion-MNIST net (128-d features, 10 logits); its weights'
    SHA-256 is checked against ``fmnist_features.json`` (mismatch or missing file:
    :class:`~profond.errors.CheckpointError`). ``"inception"``: InceptionV3 of FID's paper
    (2048-d pool3 features, 1008 logits) via torchmetrics + torch-fidelity; a
    :class:`~profond.errors.ProfondError` says what to install when they are missing.
    """
    if isinstance(device, str):
        from ..base.device import resolve_device

        try:
            device = resolve_device(device)  # "auto" -> cuda if available, else cpu
        except RuntimeError as e:  # torch's own parse error for a malformed name
            raise ConfigError(f"device={device!r} is not a device name: {e}") from None
    if name == "fmnist":
        state, info = load_fmnist_state("fmnist")
        return build_fmnist_net(state, info).to(device)
    if name == "inception":
        return InceptionFeatureNet().to(device)
    from ..registry import unknown_name_message

    raise ConfigError(unknown_name_message("feature net", str(name), list(FEATURE_NETS), "feature nets"))


# ----------------------------------------------------------------------------------------
# InceptionV3 (the standard FID network), optional

INCEPTION_FIX = (
    "install torch-fidelity (`pip install torch-fidelity`, the FID InceptionV3 of torchmetrics) and "
    "make its weights available (they are downloaded on first use from github.com/toshas/torch-fidelity "
    "into the torch hub cache, ~/.cache/torch/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth); "
    "offline, or for 28×28 grayscale data, use --features fmnist instead"
)


class InceptionFeatureNet(nn.Module):
    """InceptionV3 of Heusel et al. 2017 (torch-fidelity's port, as torchmetrics uses it):
    ``(N, 1 or 3, H, W)`` in [0, 1] -> grayscale repeated to RGB, resized to 299×299
    (bilinear), quantised to uint8 as torch-fidelity expects -> ``(2048-d pool3 features,
    1008 logits)``."""

    def __init__(self):
        super().__init__()
        try:
            import torch_fidelity  # noqa: F401
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as e:
            raise ProfondError(f"features='inception' needs torch-fidelity ({e}): {INCEPTION_FIX}.") from None
        try:
            self.net = NoTrainInceptionV3(name="inception-v3-compat",
                                          features_list=["2048", "logits_unbiased"])
        except Exception as e:  # noqa: BLE001 (a failed download surfaces as many types)
            raise ProfondError(f"cannot load the InceptionV3 weights ({type(e).__name__}: {e}): "
                               f"{INCEPTION_FIX}.") from None
        self.name = "inception"
        self.class_names: list[str] = []
        self.feature_dim, self.num_classes = 2048, 1008
        self.info = {"name": "inception", "feature_dim": 2048, "num_classes": 1008}
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatureNet:
        return super().train(False)

    def forward(self, x01: Tensor) -> tuple[Tensor, Tensor]:
        x = x01.float() / 255.0 if x01.dtype == torch.uint8 else x01
        if torch.is_tensor(x) and x.dim() == 4 and x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = check_images(x, 3)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        # NoTrainInceptionV3.forward returns only the first feature; this returns both
        feats, logits = self.net._torch_fidelity_forward(x)
        return feats.reshape(len(x), -1), logits.reshape(len(x), -1)
