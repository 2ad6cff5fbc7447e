"""Multi-process data parallelism with ``torch.distributed`` (DDP).

Launch with ``torchrun --nproc_per_node N -m profond train ...`` (or ``profond train``
under torchrun): the environment variables ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` that
torchrun sets switch the run to DDP. Backend: NCCL on CUDA, gloo on CPU. Each rank sees
its contiguous slice of every global batch (``data.batch_size`` stays the *global* batch),
DDP averages gradients, so a 2-process run follows the single-process trajectory on the
same global batch (up to float summation order). Only rank 0 logs and checkpoints.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment (1 process if unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    from ..errors import ConfigError

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


def init(device: torch.device) -> tuple[int, int]:
    """Initialise the process group if launched by torchrun; returns (rank, world_size)."""
    rank, world, _ = env_world()
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return rank, world


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's boolean, on every rank (e.g. 'stop now')."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
