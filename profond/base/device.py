"""Which device a run uses, and its data-parallel position (set by ``torchrun``)."""

from __future__ import annotations

import os

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
    when the asked-for device is absent."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available; use --device cpu.")
        if name == "cuda":
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device=mps but MPS is not available; use --device cpu.")
    return torch.device(name)
