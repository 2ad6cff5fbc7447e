"""Which device and precision a run uses, and its data-parallel position (set by ``torchrun``)."""

from __future__ import annotations

import os
import platform
import re
from datetime import datetime
from pathlib import Path
from typing import Any

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


def cpu_has_native_bf16() -> bool:
    """True if the CPU advertises bf16 arithmetic (AVX512-BF16 or AMX-BF16) in /proc/cpuinfo
    (False where that file cannot be read). ``PROFOND_NATIVE_BF16=0`` (or ``1``) overrides the
    probe, e.g. to keep a test suite in fp32 on every machine."""
    forced = os.environ.get("PROFOND_NATIVE_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """The precision a run uses and why: ``requested`` itself, or for ``auto`` bf16 autocast
    where the device computes bf16 natively (a CUDA device with bf16, a CPU with AMX-BF16 or
    AVX512-BF16) and fp32 elsewhere (bf16 emulated in fp32 arithmetic is slower than fp32)."""
    if requested != "auto":
        return requested, "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: this GPU computes bf16"
        return "fp32", "auto: this GPU has no bf16"
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return "bf16", "auto: this CPU has AMX-BF16 / AVX512-BF16"
        return "fp32", "auto: this CPU has no native bf16 (no AMX-BF16 / AVX512-BF16)"
    return "fp32", f"auto: fp32 on {device.type}"


def machine_info() -> dict[str, Any]:
    """What a measurement ran on (CPU model, cores, bf16 hardware, versions) and how busy the
    machine was (load averages), with the date: recorded next to every benchmark and experiment."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "bf16_in_hardware": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_avg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.now().isoformat(timespec="seconds"),
    }
