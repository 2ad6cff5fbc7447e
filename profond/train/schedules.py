r"""Learning-rate schedules from a :class:`~profond.config.SchedConfig` (course §2.5).

Every schedule here is stepped **once per optimizer step** (not once per epoch): the loop
calls ``optimizer.step(); scheduler.step()``. Epoch-valued settings (``step_epochs``,
``warmup_epochs``) are converted to steps with ``steps_per_epoch``.

With :math:`T` the total number of optimizer steps, :math:`t` the index of the step
(0-based: :math:`\eta_t` is the LR *used by* step :math:`t`) and :math:`\eta_0` the
reference LR (``optim.lr``):

* ``constant``      -- :math:`\eta_t = \eta_0`;
* ``step``          -- §2.5.1, :math:`\eta_t = \eta_0 \gamma^{\lfloor t / P \rfloor}` with
  :math:`P` = ``step_epochs`` x ``steps_per_epoch``;
* ``cosine``        -- §2.5.2, :math:`\eta_t = \eta_{min} + \frac12(\eta_0-\eta_{min})(1+\cos\frac{\pi t}{T})`
  (reaches ``min_lr`` at :math:`t = T`, i.e. just after the last step, like torch's
  ``CosineAnnealingLR`` with ``T_max = T``);
* ``warmup-cosine`` -- §2.5.3, linear warm-up :math:`\eta_t = \eta_0 (t+1)/W` during the
  first :math:`W` = ``warmup_epochs`` x ``steps_per_epoch`` steps (starts at
  :math:`\eta_0/W \approx 0`, reaches :math:`\eta_0` at the last warm-up step), then the
  cosine above over the remaining :math:`T - W` steps;
* ``onecycle``      -- the LR curve of torch's ``OneCycleLR`` (cosine annealing, two phases):
  from ``max_lr/25`` up to ``max_lr`` during the first ``pct_start`` of the steps, then down
  to ``max_lr/25/1e4``. ``max_lr`` defaults to ``optim.lr``. Unlike ``OneCycleLR``, the
  momentum is **not** cycled (it stays at ``optim.momentum`` / ``optim.betas[0]``).

``warmup_epochs > 0`` also adds the linear warm-up to ``constant``, ``step`` and ``cosine``
(``cosine`` with a warm-up is ``warmup-cosine``); ``onecycle`` has its own rise and ignores it.

Implementation: a :class:`torch.optim.lr_scheduler.LambdaLR` whose multiplier is the closed
form above divided by :math:`\eta_0`. Hence

* parameter groups with their own LR (``optim.lr_groups``, course §4.7) are scaled
  proportionally: a group at :math:`0.1\eta_0` follows the same curve at one tenth, its
  floor ``min_lr`` and its one-cycle peak included;
* the multiplier is a plain function, which ``LambdaLR.state_dict()`` records as ``None``:
  the state dict holds only numbers (``base_lrs``, ``last_epoch``, ``_last_lr``, ...) and
  round-trips through JSON. To resume, build the scheduler again from the same config with
  :func:`build_scheduler`, then ``load_state_dict`` (the schedule itself is the config).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from ..config import SchedConfig
from ..errors import ConfigError

#: the schedule names accepted in ``sched.name``
SCHEDULES = ("constant", "step", "cosine", "warmup-cosine", "onecycle")

# torch.optim.lr_scheduler.OneCycleLR defaults, reproduced by the ``onecycle`` schedule
ONECYCLE_DIV_FACTOR = 25.0
ONECYCLE_FINAL_DIV_FACTOR = 1e4


def _cos_between(start: float, end: float, frac: float) -> float:
    """Half-cosine from ``start`` (frac=0) to ``end`` (frac=1)."""
    frac = min(max(frac, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * frac))


def lr_at(cfg: SchedConfig, step: int, *, steps_per_epoch: int, epochs: int, base_lr: float) -> float:
    """Closed-form learning rate used by optimizer step ``step`` (0-based), for a group whose
    LR is ``base_lr``. Steps past the end stay at the final value."""
    total, warm = _lengths(cfg, steps_per_epoch, epochs)
    t = max(int(step), 0)
    name = cfg.name
    if name == "onecycle":
        peak = cfg.max_lr if cfg.max_lr is not None else base_lr
        start = peak / ONECYCLE_DIV_FACTOR
        floor = start / ONECYCLE_FINAL_DIV_FACTOR
        t = min(t, total - 1)
        end_rise = float(cfg.pct_start * total) - 1.0  # same phase boundaries as OneCycleLR
        end_all = float(total - 1)
        if t <= end_rise:
            return _cos_between(start, peak, t / end_rise if end_rise > 0 else 1.0)
        span = end_all - max(end_rise, 0.0)
        return _cos_between(peak, floor, (t - max(end_rise, 0.0)) / span if span > 0 else 1.0)

    warmup = (t + 1) / warm if t < warm else 1.0
    if name == "constant":
        return base_lr * warmup
    if name == "step":
        period = max(1, round(cfg.step_epochs * steps_per_epoch))
        return base_lr * warmup * cfg.gamma ** (t // period)
    # cosine / warmup-cosine: warm-up, then cosine over the remaining steps
    if t < warm:
        return base_lr * warmup
    return _cos_between(base_lr, cfg.min_lr, (t - warm) / max(total - warm, 1))


def _lengths(cfg: SchedConfig, steps_per_epoch: int, epochs: int) -> tuple[int, int]:
    """(total optimizer steps, warm-up steps), validated."""
    if cfg.name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {cfg.name!r} in 'sched.name'. Valid names: {', '.join(SCHEDULES)}.")
    if steps_per_epoch < 1 or epochs < 1:
        raise ConfigError(
            f"a schedule needs at least one step: got steps_per_epoch={steps_per_epoch}, epochs={epochs} "
            "(is the training set empty or smaller than one batch?)."
        )
    total = steps_per_epoch * epochs
    if cfg.warmup_epochs < 0:
        raise ConfigError(f"bad value for 'sched.warmup_epochs': {cfg.warmup_epochs!r}; it must be >= 0.")
    warm = 0 if cfg.name == "onecycle" else round(cfg.warmup_epochs * steps_per_epoch)
    if warm >= total and cfg.name in ("cosine", "warmup-cosine"):
        raise ConfigError(
            f"sched.warmup_epochs={cfg.warmup_epochs} covers the whole run ({epochs} epochs): "
            "lower it so the cosine decay has steps left."
        )
    if cfg.name == "step" and cfg.step_epochs <= 0:
        raise ConfigError(f"bad value for 'sched.step_epochs': {cfg.step_epochs!r}; it must be > 0.")
    if cfg.name == "onecycle" and not 0.0 < cfg.pct_start < 1.0:
        raise ConfigError(f"bad value for 'sched.pct_start': {cfg.pct_start!r}; it must be in (0, 1).")
    if cfg.min_lr < 0:
        raise ConfigError(f"bad value for 'sched.min_lr': {cfg.min_lr!r}; it must be >= 0.")
    return total, warm


def _multiplier(cfg: SchedConfig, steps_per_epoch: int, epochs: int, base_lr: float) -> Callable[[int], float]:
    """The LambdaLR factor: closed-form LR divided by the reference LR."""

    def factor(step: int) -> float:
        return lr_at(cfg, step, steps_per_epoch=steps_per_epoch, epochs=epochs, base_lr=base_lr) / base_lr

    return factor


def build_scheduler(
    cfg: SchedConfig,
    optimizer: torch.optim.Optimizer,
    *,
    steps_per_epoch: int,
    epochs: int,
    base_lr: float | None = None,
) -> LRScheduler:
    """A per-optimizer-step LR scheduler for ``optimizer`` following ``cfg``.

    ``base_lr`` is the reference LR :math:`\\eta_0` against which ``min_lr`` and ``max_lr``
    are expressed (default: the optimizer's default LR, i.e. ``optim.lr``). Each parameter
    group's own LR is scaled by the same factor. Its ``state_dict()`` is JSON-serializable.
    """
    _lengths(cfg, steps_per_epoch, epochs)  # validate eagerly
    if base_lr is None:
        base_lr = float(optimizer.defaults.get("lr", optimizer.param_groups[0]["lr"]))
    if base_lr <= 0:
        raise ConfigError(f"the reference learning rate must be > 0, got {base_lr!r}.")
    return LambdaLR(optimizer, _multiplier(cfg, steps_per_epoch, epochs, base_lr))


def lr_curve(cfg: SchedConfig, steps_per_epoch: int, epochs: int, base_lr: float) -> list[float]:
    """The LR of each of the ``steps_per_epoch * epochs`` optimizer steps, for plotting.

    It runs the real scheduler on a dummy one-parameter SGD optimizer, so the curve is
    exactly what training sees.
    """
    dummy = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([dummy], lr=base_lr)
    sched = build_scheduler(cfg, opt, steps_per_epoch=steps_per_epoch, epochs=epochs, base_lr=base_lr)
    curve = []
    for _ in range(steps_per_epoch * epochs):
        curve.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradient: a no-op, keeps torch's "step order" check quiet
        sched.step()
    return curve
