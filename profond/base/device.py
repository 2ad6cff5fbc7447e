"""Which device a run uses, and its data-parallel position (set by ``torchrun``)."""

from __future__ import annotations

import os
import re

import torch

from ..errors import ConfigError


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process if unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` -> this rank's GPU; a clear error
    when the name is not a device or the asked-for device is absent."""
    name = str(name).strip().lower()
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ConfigError(f"bad device {name!r}: use auto, cpu, cuda or cuda:N (--device / train.device).")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available; use --device cpu.")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if int(name.split(":")[1]) >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device=mps but MPS is not available; use --device cpu.")
    return torch.device(name)
