"""Multi-process data parallelism with ``torch.distributed`` (DDP).

Launch with ``torchrun --nproc_per_node N -m profond train ...`` (or ``profond train``
under torchrun): the environment variables ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` that
torchrun sets switch the run to DDP. Backend: NCCL on CUDA, gloo on CPU. Each rank sees
its contiguous slice of every global batch (``data.batch_size`` stays the *global* batch),
DDP averages gradients, so a 2-process run follows the single-process trajectory on the
same global batch (up to float summation order). Only rank 0 logs and checkpoints.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..base.device import env_world, resolve_device

__all__ = ["barrier", "broadcast_flag", "env_world", "init", "resolve_device", "shutdown"]


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
