"""What a training run costs (course §12.8, exercise 12.2): FLOPs, energy and CO₂.

Every run records, in ``summary.json`` (``cost``) and on its final console line:

* **training FLOPs** -- the first optimizer step of the process is run under a FLOP-counting
  dispatch mode (:func:`count_flops`; forward *and* backward of the method's
  ``train_step``, SAM's two passes included); its count divided by the batch size is the cost of
  one training example, multiplied by the examples seen. Evaluation is not counted. The counter
  knows matrix products and convolutions (attention included), which is where the arithmetic
  of these nets is; element-wise operations are left out, as in the usual ``6N`` FLOPs per
  token rule of thumb (Kaplan et al. 2020).
* **energy** (joules, and kWh) of the training time, measured where the machine lets us:
  ``rapl`` -- the CPU package counters of Linux's powercap (``/sys/class/powercap/*/energy_uj``,
  read at the start and end of training, wrap-around handled); ``nvml`` -- the GPU's own
  energy counter through ``pynvml`` when it is installed; else ``power-model`` -- a documented
  estimate, ``CPU_WATTS_PER_THREAD`` W for each intra-op thread on CPU (a server core under
  full load draws 5-15 W), ``GPU_WATTS`` W on CUDA (the board power of a mid-range data-centre
  GPU), times the training time. ``method`` in the summary says which one produced the number.
* **CO₂** -- energy times ``train.grid_gco2_per_kwh`` (grams of CO₂-equivalent per kWh of the
  electricity used; the default is the world average).

codecarbon is the library of the field for this. It is not used: offline it falls back to the
same kind of constant-power model where RAPL is absent, it writes a lock file outside the run
folder, and its import and tracker cost about a second per run (measured in the closing note of
issue 20), a lot for the seconds-long runs of the tests and quick experiments.

On resume the counts continue from the checkpoint's (``state_dict`` / ``load_state_dict``).
"""

from __future__ import annotations

import glob
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

#: power model: watts per busy intra-op CPU thread
CPU_WATTS_PER_THREAD = 10.0
#: power model: watts of one busy CUDA device
GPU_WATTS = 300.0
JOULES_PER_KWH = 3.6e6


def count_flops(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` with its matrix-multiply FLOPs counted (forward, and backward when ``fn``
    backpropagates; element-wise ops such as exp are not counted), by the formulas of
    :mod:`torch.utils.flop_counter`, plus PyTorch's own SDPA formulas for the fused CPU attention
    kernel, which that module does not know.

    Not :class:`~torch.utils.flop_counter.FlopCounterMode` itself: its per-module tracking puts
    hooks on the autograd graph that ``torch.autograd.grad`` refuses (a WGAN-GP's gradient
    penalty, a contractive autoencoder), and it decomposes the operators it has no formula for,
    which can change a step's numerics and random draws. This mode only looks: every operator
    runs as it would without it."""
    import torch.utils.flop_counter as fc
    from torch.utils._python_dispatch import TorchDispatchMode

    registry = dict(fc.flop_registry)
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        registry[cpu_sdpa] = fc.shape_wrapper(
            lambda q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(q, k, v))
        back = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
        if back is not None:
            registry[back] = fc.shape_wrapper(
                lambda grad_out, q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_backward_flop_count(
                    grad_out, q, k, v))

    class Counting(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = registry.get(func._overloadpacket)
            if formula is not None:
                Counting.total += int(formula(*args, **kwargs, out_val=out))
            return out

    with Counting():
        out = fn()
    return out, Counting.total


class _Rapl:
    """Sum of the CPU package energy counters of Linux's powercap interface (microjoules)."""

    def __init__(self, root: str = "/sys/class/powercap"):
        # top-level packages only (intel-rapl:0, not intel-rapl:0:0, which is inside it)
        self.zones = [Path(p) for p in sorted(glob.glob(f"{root}/*-rapl:*"))
                      if Path(p).name.count(":") == 1 and (Path(p) / "energy_uj").is_file()]
        self.ranges = [self._read(z / "max_energy_range_uj") or 2**32 for z in self.zones]
        self.start = self.read()

    @staticmethod
    def _read(path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    def read(self) -> list[int] | None:
        vals = [self._read(z / "energy_uj") for z in self.zones]
        return None if not vals or any(v is None for v in vals) else vals  # type: ignore[return-value]

    def joules(self) -> float | None:
        now = self.read()
        if now is None or self.start is None:
            return None
        return sum((b - a) % r for a, b, r in zip(self.start, now, self.ranges, strict=True)) / 1e6


class _Nvml:
    """The GPU's total-energy counter (millijoules) through pynvml, when installed."""

    def __init__(self, index: int):
        import pynvml  # noqa: PLC0415 - optional

        pynvml.nvmlInit()
        self.nvml = pynvml
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.start = pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def joules(self) -> float | None:
        try:
            return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - self.start) / 1e3
        except Exception:  # noqa: BLE001 - a driver hiccup must not lose a run
            return None


class CostMeter:
    """FLOPs and energy of one run's training (see the module docstring).

    ``count_flops=False`` (``torch.compile``d nets, which the counter cannot look into) leaves
    the FLOPs unknown (``None``)."""

    def __init__(self, device: torch.device, grid_gco2_per_kwh: float, *, count_flops: bool = True):
        self.device = device
        self.grid = float(grid_gco2_per_kwh)
        self.count = count_flops
        self.flops_per_example: float | None = None
        self.flops = 0.0  # across resumes
        self.joules_before = 0.0  # energy of earlier processes of this run (resume)
        self.method_before: str | None = None
        self._counter: Any = None

    # -- FLOPs ---------------------------------------------------------------------------------
    def step(self, fn: Callable[[], Any], n_examples: int) -> Any:
        """Run one training step ``fn`` of ``n_examples``; the first one of the process is counted."""
        if not self.count:
            return fn()
        if self.flops_per_example is None and n_examples > 0:
            out, flops = count_flops(fn)
            self.flops_per_example = flops / n_examples
        else:
            out = fn()
        if self.flops_per_example is not None:
            self.flops += self.flops_per_example * n_examples
        return out

    # -- energy --------------------------------------------------------------------------------
    def start(self) -> None:
        """Open the energy counter (at the start of this process's training)."""
        self._counter = self._open_counter()

    def _open_counter(self) -> Any:
        if self.device.type == "cuda":
            try:
                return _Nvml(self.device.index or 0)
            except Exception:  # noqa: BLE001 - pynvml absent or no counter: the power model
                return None
        rapl = _Rapl()
        return rapl if rapl.start is not None else None

    def _model_watts(self, threads: int) -> float:
        """The power model's draw: one busy GPU, or ``threads`` busy CPU threads."""
        return GPU_WATTS if self.device.type == "cuda" else CPU_WATTS_PER_THREAD * max(threads, 1)

    def energy(self, seconds: float, threads: int) -> tuple[float, str]:
        """Joules of the training so far, and how they were got; ``seconds``: this process's
        training time (the power model's), ``threads``: its intra-op threads."""
        measured = self._counter.joules() if self._counter is not None else None
        if measured is not None:
            method = "rapl" if isinstance(self._counter, _Rapl) else "nvml"
        else:
            measured, method = self._model_watts(threads) * seconds, "power-model"
        if self.method_before and self.method_before != method:
            method = f"{self.method_before}+{method}"
        return self.joules_before + measured, method

    def summary(self, seconds: float, threads: int) -> dict[str, Any]:
        joules, method = self.energy(seconds, threads)
        kwh = joules / JOULES_PER_KWH
        known = self.count and (self.flops_per_example is not None or self.flops > 0)
        return {
            "train_flops": float(self.flops) if known else None,
            "flops_per_example": self.flops_per_example if known else None,
            "energy_j": round(joules, 3),
            "energy_kwh": kwh,
            "energy_method": method,
            "power_model_watts": self._model_watts(threads) if method.endswith("power-model") else None,
            "grid_gco2_per_kwh": self.grid,
            "co2_g": kwh * self.grid,
        }

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self, seconds: float, threads: int) -> dict[str, Any]:
        joules, method = self.energy(seconds, threads)
        return {"flops": self.flops, "energy_j": joules, "energy_method": method}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.flops = float(state.get("flops", 0.0))
        self.joules_before = float(state.get("energy_j", 0.0))
        self.method_before = state.get("energy_method")


def human(n: float | None, unit: str) -> str:
    """``1.23 TFLOP``-style text for the console."""
    if n is None or not math.isfinite(n):
        return f"? {unit}"
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {prefix}{unit}"
    return f"{n:.3g} {unit}"


__all__ = ["CostMeter", "count_flops", "human", "CPU_WATTS_PER_THREAD", "GPU_WATTS"]
