"""The one training loop of profond.

Every family plugs in through a :class:`~profond.contract.Method`; this module owns
everything around its ``train_step``: devices and seeds, precision (bf16 autocast on CPU
and CUDA, fp16 + GradScaler on CUDA), channels_last, ``torch.compile``, gradient clipping
by norm, LR schedules stepped per optimizer step, EMA of weights, evaluation, early
stopping, atomic checkpoints with exact resume, metrics.csv / TensorBoard / summary.json,
the progress bar, Ctrl-C handling, NaN guards and DDP.

Usage::

    from profond.config import resolve
    from profond.train import train
    result = train(resolve(overrides=["model.name=mlp", "train.epochs=1"]))
    print(result.summary["final"]["test_accuracy"])
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import random
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.markup import escape
from torch import nn

from .. import __version__
from ..base.checkpoint import (
    DAMAGED,
    META_FILE,
    CheckpointManager,
    load_checkpoint,
    read_meta,
    rng_state,
    set_rng_state,
)
from ..base.device import cpu_has_native_bf16, env_world, resolve_device, resolve_precision
from ..base.io import atomic_write_json, os_error_message
from ..base.lock import RunLock, lock_run_folder
from ..config import RunConfig, check_run_name, resolve_method
from ..contract import Callback, Env, Method, install_run_opener
from ..errors import CheckpointError, ConfigError, ProfondError, TrainingDiverged
from ..registry import METHODS
from . import distributed as dist_utils
from . import resume as resume_rules
from .callbacks import EarlyStopping
from .cost import CostMeter, human
from .ema import EMA
from .logging import Console_, MetricAccumulator, MetricsCSV, TensorBoard, fmt
from .optim import build_optimizer, optimizer_cfg_for
from .schedules import build_scheduler

#: errnos that only writing raises: an OSError without a file name (e.g. from TensorBoard's
#: writer thread) is still the run's files failing
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class RunWriteError(ProfondError):
    """The filesystem refused a run file (full, read-only, ...); the message says how to resume."""


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def count_params(net: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def versions() -> dict[str, str]:
    return {"profond": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


class LoopContext:
    """The loop's :class:`~profond.contract.StepContext`: its services for one step."""

    def __init__(self, trainer: Trainer):
        self._t = trainer
        #: gradient norms measured by :meth:`optimize` during the current step (reset by the loop)
        self.grad_norms: dict[str, float] = {}
        #: SAM's pass of the current step: ``"ascent"`` (at θ), ``"descent"`` (at θ + ε̂), or None
        self.sam_pass: str | None = None

    @property
    def step(self) -> int:
        return self._t.step

    @property
    def epoch(self) -> int:
        return self._t.epoch

    @property
    def device(self) -> torch.device:
        return self._t.env.device

    @property
    def env(self) -> Env:
        return self._t.env

    def autocast(self) -> contextlib.AbstractContextManager:
        return self._t.autocast()

    def optimize(self, loss: torch.Tensor, name: str = "model") -> float | None:
        """Backward ``loss`` and step optimizer ``name`` (scaling, clipping, NaN guard); returns
        the gradient norm before clipping when it is measured (clipping on, or ``name`` in the
        method's ``track_grad_norm``), else ``None``."""
        t = self._t
        if name not in t.optimizers:
            raise ConfigError(f"method asked for optimizer {name!r}; it has {sorted(t.optimizers)}.")
        if not torch.isfinite(loss.detach()).all():
            raise TrainingDiverged(
                f"loss became {loss.detach().float().item()} at step {t.step} (epoch {t.epoch + 1}); "
                f"weights were not updated. Last good checkpoint: {t.last_checkpoint or 'none'}. "
                "Try a lower optim.lr, train.clip_grad_norm=1.0, or train.precision=fp32."
            )
        opt = t.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if t.scaler is not None:
            t.scaler.scale(loss).backward()
        else:
            loss.backward()
        if self.sam_pass == "ascent":  # SAM, pass 1: θ ← θ + ρ g/‖g‖ (course §11.8, eq. 11.14)
            opt.first_step(zero_grad=True)
            return None
        clip = t.cfg.train.clip_grad_norm
        norm = None
        if clip is not None or name in t.method.track_grad_norm:
            if t.scaler is not None:
                t.scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            max_norm = clip if clip is not None else float("inf")
            norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
            self.grad_norms[name] = norm
        if self.sam_pass == "descent":  # SAM, pass 2: back to θ, base step with ∇L(θ + ε̂)
            opt.second_step()
        elif t.scaler is not None:
            t.scaler.step(opt)
            t.scaler.update()
        else:
            opt.step()
        return norm


class Trainer:
    """One run: builds the method, optimizers, schedules, EMA and checkpoints from ``cfg``,
    then :meth:`fit` trains it. :meth:`for_evaluation` rebuilds a saved run without
    optimizers or training data (``profond eval`` / ``sample`` / ...)."""

    def __init__(self, cfg: RunConfig, *, run_dir: Path | None = None, resume: bool = False,
                 callbacks: Sequence[Callback] = ()):
        tc = cfg.train
        if tc.threads:
            torch.set_num_threads(tc.threads)
        rank, world, local = env_world()
        device = resolve_device(tc.device, local)
        rank, world = dist_utils.init(device)
        if resolve_precision(tc.precision, device)[0] == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs CUDA (GradScaler); on CPU use auto, bf16 or fp32.")
        env = Env(device=device, rank=rank, world_size=world, seed=tc.seed)
        run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
        self._lock: RunLock | None = None
        self._build(cfg, env, run_dir, with_data=True)
        m = self.method
        if m.train_data is None:
            raise ConfigError(f"method {cfg.method.name!r} built no training data.")
        self.optimizers = {
            name: build_optimizer(optimizer_cfg_for(cfg.optim, name) if name != "model" else cfg.optim, params)
            for name, params in m.optimizer_params().items()
        }
        self.steps_per_epoch = len(m.train_data)
        if self.steps_per_epoch == 0:
            raise ConfigError("the training set gives no batch: lower data.batch_size or data.val_size.")
        self.schedulers = {
            name: build_scheduler(cfg.sched, opt, steps_per_epoch=self.steps_per_epoch, epochs=tc.epochs)
            for name, opt in self.optimizers.items()
        }
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.sam = self._check_sam()
        self.cost = CostMeter(env.device, tc.grid_gco2_per_kwh, count_flops=not tc.compile)
        self._wrap_nets()

        self.callbacks: list[Callback] = (list(callbacks) + fault_injection_from_env()
                                          + (m.callbacks() if env.is_main else []))
        self.early = EarlyStopping(tc.early_stop) if tc.early_stop.patience is not None else None
        if self.early:
            self.callbacks.append(self.early)
        monitor, mode = m.monitor
        self.ckpt = CheckpointManager(self.run_dir, keep_last=tc.keep_last, monitor=monitor, mode=mode)

        self.start_batch = 0
        self.should_stop = False
        self.last_checkpoint: Path | None = None
        #: running means of this epoch's step metrics (saved in checkpoints: exact resume)
        self.epoch_metrics = MetricAccumulator()
        self.elapsed_before = 0.0
        self.samples_seen = 0
        self.history: list[dict[str, Any]] = []
        #: one entry per resume of this run: {step, changed} (see profond.train.resume)
        self.resumed: list[dict[str, Any]] = []
        self._interrupt = False
        # one process per run folder, from before anything is read or written there to the
        # end of fit (see profond.base.lock); only rank 0 writes
        if env.is_main:
            self._lock = lock_run_folder(run_dir)
        try:
            if not resume and (run_dir / "checkpoints").exists() and env.is_main:
                raise ConfigError(
                    f"run folder {str(run_dir)!r} already holds a run; resume it with "
                    f"--resume {run_dir} or choose another --name/--out."
                )
            if resume:
                self._restore()
        except BaseException:
            self.release_lock()
            raise

    def _check_sam(self) -> bool:
        """Whether the optimizer is SAM; SAM is refused where its two passes would be wrong."""
        from ..scratch.optim import SAM

        sams = [n for n, o in self.optimizers.items() if isinstance(o, SAM)]
        if not sams:
            return False
        if len(self.optimizers) > 1:
            raise ConfigError(f"optim.sam_rho (SAM) needs a method with one optimizer; {self.cfg.method.name!r} has "
                              f"{', '.join(sorted(self.optimizers))}. Set optim.sam_rho=0.")
        if self.scaler is not None:
            raise ConfigError("optim.sam_rho (SAM) does not combine with train.precision=fp16 (loss scaling); "
                              "use bf16 or fp32.")
        return True

    def _build(self, cfg: RunConfig, env: Env, run_dir: Path, *, with_data: bool) -> None:
        """What training and evaluation share: the method and its nets on the device, EMA shadows."""
        self.cfg, self.env, self.run_dir = cfg, env, run_dir
        #: the precision the run computes in (``auto`` resolved for this device) and why
        self.precision, self.precision_reason = resolve_precision(cfg.train.precision, env.device)
        self.t_start = time.perf_counter()
        self.console = Console_(quiet=cfg.train.quiet, enabled=env.is_main)
        seed_everything(cfg.train.seed)
        resolve_method(cfg)
        self.method: Method = METHODS.get(cfg.method.name)(cfg, env, with_data=with_data)
        place_nets(self.method, env.device, cfg.train.channels_last)
        self.param_counts = {name: count_params(net) for name, net in self.method.raw_nets.items()}
        self.emas = build_emas(self.method, cfg.train.ema_decay)
        self.ctx = LoopContext(self)
        self.step = 0
        self.epoch = 0

    @classmethod
    def for_evaluation(cls, cfg: RunConfig, run_dir: Path) -> Trainer:
        """A trainer of the saved run in ``run_dir`` without optimizers or data loaders: the
        method is built with ``with_data=False``; load weights with :func:`load_run`."""
        self = cls.__new__(cls)
        device = resolve_device(cfg.train.device)
        self._build(cfg, Env(device=device, seed=cfg.train.seed), Path(run_dir), with_data=False)
        self.optimizers, self.schedulers, self.scaler, self.sam = {}, {}, None, False
        self.ckpt = CheckpointManager(self.run_dir, keep_last=cfg.train.keep_last)
        return self

    # -- set-up helpers ----------------------------------------------------------------------
    def _wrap_nets(self) -> None:
        m, tc = self.method, self.cfg.train
        for name, net in m.raw_nets.items():
            wrapped: nn.Module = net
            if self.env.world_size > 1 and any(p.requires_grad for p in net.parameters()):
                from torch.nn.parallel import DistributedDataParallel as DDP

                ids = [self.env.device] if self.env.device.type == "cuda" else None
                wrapped = DDP(net, device_ids=ids)
            if tc.compile:
                wrapped = torch.compile(wrapped)
            m.nets[name] = wrapped

    def autocast(self) -> contextlib.AbstractContextManager:
        p = self.precision
        if p == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        return torch.autocast(self.env.device.type, dtype=dtype)

    def _restore(self) -> None:
        """Load the latest checkpoint to resume. Its metadata is checked first (the loop's
        section, the position, the config changes: :func:`profond.train.resume.plan`, which
        refuses what a resume may not change), then the state is loaded and the config's LR
        schedule is continued at the checkpoint's step (:func:`profond.train.resume.apply_lr`)."""
        path = self.ckpt.latest()
        if path is None:
            raise CheckpointError(
                f"no complete checkpoint in {self.run_dir / 'checkpoints'}; start a new run instead of --resume."
            )
        file = path / META_FILE
        changed = resume_rules.plan(read_meta(path), self.cfg, path=path, run_dir=self.run_dir,
                                    steps_per_epoch=self.steps_per_epoch)
        fresh_lrs = resume_rules.base_lrs(self.schedulers)  # the new config's, before the checkpoint's
        meta = load_checkpoint(path, nets=self.method.raw_nets, optimizers=self.optimizers,
                               schedulers=self.schedulers, map_location=self.env.device)
        extra = meta.get("extra_state", {})
        load_emas(self.emas, extra)
        loop = meta["loop"]
        rng_t = {k[4:]: v for k, v in extra.items() if k.startswith("rng.")}
        _load_part(file, "meta.loop.rng", lambda rng: set_rng_state(rng_t, rng), loop["rng"])
        self.step, self.epoch, self.start_batch = loop["step"], loop["epoch"], loop["batch"]
        sums = loop["acc_sums"]
        counts = loop.get("acc_ns") or {k: loop["acc_count"] for k in sums}  # older checkpoints
        self.epoch_metrics = MetricAccumulator(sums, counts)
        _load_part(file, "meta.loop.method_state", self.method.load_state_dict, loop.get("method_state", {}))
        self.elapsed_before = loop["elapsed"]
        self.samples_seen = loop["samples_seen"]
        self.cost.load_state_dict(loop.get("cost") or {})
        if self.scaler is not None and loop.get("scaler"):
            _load_part(file, "meta.loop.scaler", self.scaler.load_state_dict, loop["scaler"])
        if self.early and loop.get("early_stop"):
            _load_part(file, "meta.loop.early_stop", self.early.load_state_dict, loop["early_stop"])
        resume_rules.apply_lr(self.schedulers, fresh_lrs)  # the config's schedule at this step
        self.resumed = [*meta.get("resumed", []), {"step": self.step, "changed": changed}]
        self.last_checkpoint = path
        note = f"; changed: {', '.join(changed)}" if changed else ""
        self.console.print(f"resumed from {escape(str(path))} (epoch {self.epoch + 1}, step {self.step})"
                           f"{escape(note)}")

    # -- checkpoints -------------------------------------------------------------------------
    def save(self, *, epoch: int, batch: int, metrics: dict[str, Any] | None = None) -> None:
        """Checkpoint the run; a resume continues at batch ``batch`` of epoch ``epoch``."""
        if not self.env.is_main:
            return
        rng_t, rng_meta = rng_state()
        extra = {f"rng.{k}": v for k, v in rng_t.items()}
        for name, ema in self.emas.items():
            extra.update({f"ema.{name}.{k}": v for k, v in ema.state_dict().items()})
        acc = self.epoch_metrics
        loop = {
            "step": self.step, "epoch": epoch, "batch": batch, "rng": rng_meta,
            "acc_sums": acc.sums, "acc_count": max(acc.counts.values(), default=0), "acc_ns": acc.counts,
            "method_state": self.method.state_dict(),
            "elapsed": self.elapsed(),
            "samples_seen": self.samples_seen,
            "cost": self.cost.state_dict(self.elapsed() - self.elapsed_before, torch.get_num_threads()),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "early_stop": self.early.state_dict() if self.early else None,
        }
        self.last_checkpoint = self.ckpt.save(
            self.step, nets=self.method.raw_nets, optimizers=self.optimizers, schedulers=self.schedulers,
            extra_state=extra, meta={"loop": loop, "config": self.cfg.to_dict(), "resumed": self.resumed},
            metrics=metrics,
        )

    # -- the loop ---------------------------------------------------------------------------
    def fit(self) -> RunResult:
        """Train to the end (or an interruption); the run folder's lock is released at the end.

        An ``OSError`` while writing the run's files (a full or read-only disk, ...) becomes a
        :class:`RunWriteError` naming the file and how to resume: every checkpoint is written
        atomically, so the last complete one is intact.
        """
        try:
            return self._fit()
        except OSError as e:
            error = self._write_error(e)
            if error is None:
                raise
            with contextlib.suppress(Exception):
                self.tb.close()
            raise error from e
        finally:
            self.release_lock()

    def release_lock(self) -> None:
        """Let another process train in (or resume) this run folder."""
        lock = getattr(self, "_lock", None)  # None: not rank 0, or a trainer for evaluation
        if lock is not None:
            lock.release()

    def _write_error(self, e: OSError) -> RunWriteError | None:
        """The user error for ``e`` if it is the filesystem refusing a run file, else None."""
        name = e.filename
        if name is not None:
            if not Path(os.path.abspath(name)).is_relative_to(os.path.abspath(self.run_dir)):
                return None  # not a run file (user_errors still reports it on one line)
        elif e.errno not in DISK_FULL_ERRNOS:
            return None
        try:
            last = self.ckpt.latest()
        except (OSError, ProfondError):
            last = None
        if last is not None:
            then = (f"the last complete checkpoint ({last}) is intact: resume with "
                    f"profond train --resume {self.run_dir}")
        else:
            then = "no checkpoint was saved yet: then start the run again"
        return RunWriteError(f"cannot write the run's files: {os_error_message(e)}; {then}.")

    def _fit(self) -> RunResult:
        cfg, tc, env = self.cfg, self.cfg.train, self.env
        if env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / "config.yaml")
            self.csv = MetricsCSV(self.run_dir / "metrics.csv",
                                  resume_until_step=self.step if self.step else None)
            self.history = list(self.csv.rows)
            self.tb = TensorBoard(self.run_dir / "tensorboard", purge_step=self.step or None)
            self.tb.text("config", "```\n" + cfg.to_yaml() + "\n```")
        self._announce()
        for cb in self.callbacks:
            cb.on_train_start(self)
        status = "completed"
        self.t_train = time.perf_counter()
        self.cost.start()
        old_handler = self._install_sigint()
        try:
            while self.epoch < tc.epochs and not self.should_stop:
                self._train_epoch()
                if self._interrupt:
                    status = "interrupted"
                    break
                self._end_epoch()
                if self.should_stop and self.early and self.early.stopped_epoch is not None:
                    status = "early_stopped"
                self.epoch += 1
                self.start_batch = 0
                if tc.max_steps is not None and self.step >= tc.max_steps:
                    break
        except TrainingDiverged:
            self._finish("diverged")
            raise
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        summary = self._finish(status)
        return RunResult(self.run_dir, summary, self.history)

    def _announce(self) -> None:
        env, m = self.env, self.method
        c = self.console
        c.print(f"[bold]profond[/bold] run {escape(str(self.run_dir))}  device={env.device}"
                f"{f' x{env.world_size} (DDP)' if env.world_size > 1 else ''}  precision={self.precision} "
                f"({self.precision_reason})")
        for name, net in m.raw_nets.items():
            pc = self.param_counts[name]
            label = self.cfg.model.name if name == "model" else type(net).__name__
            c.print(f"  {escape(name)}: {escape(label)}, {pc['total']:,} parameters ({pc['trainable']:,} trainable)")
        c.print(f"  {self.steps_per_epoch} steps/epoch x {self.cfg.train.epochs} epochs, "
                f"batch {self.cfg.data.batch_size}")
        if self.precision == "bf16" and env.device.type == "cpu" and not cpu_has_native_bf16():
            c.print("  [yellow]note: this CPU has no native bf16 (no avx512_bf16/amx_bf16): bf16 autocast "
                    "emulates it and is usually slower than fp32 here.[/yellow]")

    def _train_step(self, batch: Any) -> dict[str, float]:
        """One call of the method's ``train_step``, then schedules, EMA and the step counter;
        returns the step's scalar metrics (with the gradient norms the loop measured)."""
        m = self.method
        self.ctx.grad_norms = {}
        out = self.cost.step(lambda: self._method_step(batch), batch_size_of(batch))
        for sched in self.schedulers.values():
            sched.step()
        for name, ema in self.emas.items():
            ema.update(m.raw_nets[name])
        self.step += 1
        vals = {k: float(v) for k, v in out.items()}
        if self.step == 1:  # the loss before any update: the reference of _loss_warnings
            self.first_step_loss = vals.get("loss")
        for k, v in self.ctx.grad_norms.items():
            vals.setdefault(f"grad_norm_{k}", v)
        return vals

    def _method_step(self, batch: Any) -> dict[str, Any]:
        if self.sam:
            return self._sam_step(batch)
        with self.autocast():
            return self.method.train_step(batch, self.ctx)

    def _sam_step(self, batch: Any) -> dict[str, Any]:
        """SAM (course §11.8, def. 11.20, eq. 11.13): the method's step twice on the same batch.

        1. at θ: the gradient g, then θ ← θ + ε̂ with ε̂ = ρ g / ‖g‖ (eq. 11.14), no update;
        2. at θ + ε̂: the gradient there, θ restored, the base optimizer steps with it.

        The metrics reported are those of pass 1 (the loss at θ). BatchNorm running statistics
        are updated by pass 1 only (momentum 0 in pass 2, as in Foret et al.'s code).
        """
        m = self.method
        self.ctx.sam_pass = "ascent"
        try:
            with self.autocast():
                out = m.train_step(batch, self.ctx)
            self.ctx.sam_pass = "descent"
            norms = [mod for net in m.nets.values() for mod in net.modules()
                     if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
            saved = [mod.momentum for mod in norms]
            for mod in norms:
                mod.momentum = 0.0
            try:
                with self.autocast():
                    m.train_step(batch, self.ctx)
            finally:
                for mod, mom in zip(norms, saved, strict=True):
                    mod.momentum = mom
        finally:
            self.ctx.sam_pass = None
        return out

    def _train_epoch(self) -> None:
        """The steps of one epoch (from ``start_batch`` on a resume); step-level logging,
        mid-epoch checkpoints, Ctrl-C and ``max_steps``."""
        tc, m, env = self.cfg.train, self.method, self.env
        if self.start_batch == 0:
            self.epoch_metrics.reset()
        window = MetricAccumulator()
        m.train()
        self.console.start_epoch(self.epoch, tc.epochs, self.steps_per_epoch, self.start_batch)
        for batch_idx, batch in enumerate(m.train_data.batches(self.epoch, start=self.start_batch),
                                          start=self.start_batch):
            vals = self._train_step(batch)
            n = batch_size_of(batch) * env.world_size
            self.samples_seen += n
            self.epoch_metrics.add(vals)
            window.add(vals)
            if self.step % tc.log_every == 0 and env.is_main:
                self.tb.scalars({**window.means("train_"), "lr": self.lr()}, self.step)
                window.reset()
            self.console.advance(n, {k: v for k, v in vals.items() if k in ("loss", "accuracy")})
            for cb in self.callbacks:
                cb.on_step_end(self, self.step, vals)
            last_in_epoch = batch_idx + 1 == self.steps_per_epoch
            hit_max = tc.max_steps is not None and self.step >= tc.max_steps
            if self._interrupt or (tc.checkpoint_every and self.step % tc.checkpoint_every == 0
                                   and not last_in_epoch and not hit_max):
                self.save(epoch=self.epoch, batch=batch_idx + 1)
            if self._interrupt or hit_max:
                break
        self.console.end_epoch()

    def _end_epoch(self) -> None:
        """Evaluate, log the epoch's row (metrics.csv, TensorBoard, console), run the
        callbacks and checkpoint at the start of the next epoch."""
        tc, m, env = self.cfg.train, self.method, self.env
        throughput = self.console.throughput()
        row: dict[str, Any] = {"epoch": self.epoch + 1, "step": self.step,
                               "time": round(self.elapsed(), 2), "lr": self.lr()}
        row.update(self.epoch_metrics.means("train_"))
        if m.val_data is not None and (self.epoch + 1) % tc.eval_every == 0:
            row.update({f"val_{k}": v for k, v in self.evaluate(m.val_data).items()
                        if isinstance(v, (int, float))})
        row["samples_per_s"] = round(throughput, 1)
        for cb in self.callbacks:
            cb.on_eval_end(self, self.epoch, row)
        self.should_stop = dist_utils.broadcast_flag(self.should_stop, env.device)
        if env.is_main:
            self.csv.append(row)
            self.history.append(row)
            self.tb.scalars({k: v for k, v in row.items() if k not in ("epoch", "step", "time")}, self.step)
            self.console.print(
                f"epoch {self.epoch + 1}/{tc.epochs} "
                + " ".join(f"{k} {fmt(v)}" for k, v in row.items() if k.startswith(("train_loss", "train_acc", "val_", "epsilon")))
                + f"  {throughput:,.0f} samples/s  {row['time']:.1f}s"
            )
            warnings = self._loss_warnings()
            if warnings and warnings[-1].startswith(f"epoch {row['epoch']}:"):
                self.console.always(f"[yellow]warning: {escape(warnings[-1])}[/yellow]")
        self.save(epoch=self.epoch + 1, batch=0, metrics=row)

    #: warn when an epoch's mean training loss exceeds this multiple of the reference loss
    LOSS_GROWTH_WARNING = 1e3
    #: ... or this magnitude (float32 overflows at 3.4e38: the run is about to diverge)
    LOSS_HUGE_WARNING = 1e30

    def _loss_warnings(self) -> list[str]:
        """One line per epoch whose ``train_loss`` grew by orders of magnitude: above
        :data:`LOSS_GROWTH_WARNING` times the loss of the first step (before any update; on a
        resumed run, the first epoch's mean), or above :data:`LOSS_HUGE_WARNING`. Such a run
        "completes" without a NaN while learning nothing: too high a learning rate, most often."""
        losses = [(r["epoch"], r["train_loss"]) for r in self.history
                  if isinstance(r.get("train_loss"), (int, float))]
        ref, what = getattr(self, "first_step_loss", None), "first step's"
        if ref is None and losses:
            ref, what = losses[0][1], "first epoch's"
        fix = "training diverges; lower optim.lr (or set train.clip_grad_norm)."
        out = []
        for epoch, loss in losses:
            if ref and abs(loss) > self.LOSS_GROWTH_WARNING * abs(ref):
                out.append(f"epoch {epoch}: train_loss {fmt(loss)} is {abs(loss / ref):.0e} times the {what} "
                           f"{fmt(ref)}: {fix}")
            elif not abs(loss) <= self.LOSS_HUGE_WARNING:
                out.append(f"epoch {epoch}: train_loss {fmt(loss)} is near the float overflow: {fix}")
        return out

    def elapsed(self) -> float:
        """Training seconds so far, across resumes (0 before :meth:`fit` starts the clock)."""
        started = getattr(self, "t_train", None)
        return self.elapsed_before + (time.perf_counter() - started if started is not None else 0.0)

    def lr(self) -> float:
        opt = next(iter(self.optimizers.values()))
        return float(opt.param_groups[0]["lr"])

    @contextlib.contextmanager
    def ema_weights(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for name, ema in self.emas.items():
                stack.enter_context(ema.swapped(self.method.raw_nets[name]))
            yield

    def evaluate(self, data: Any, **kw: Any) -> dict[str, Any]:
        """``method.evaluate`` in eval mode on the EMA weights (when kept); the nets' modes
        are restored afterwards."""
        modes = {name: net.training for name, net in self.method.nets.items()}
        self.method.eval()
        try:
            with self.ema_weights():
                return self.method.evaluate(data, self.ctx, **kw)
        finally:
            for name, net in self.method.nets.items():
                net.train(modes.get(name, True))

    def _install_sigint(self) -> Any:
        if not self.env.is_main or not _in_main_thread():
            return None

        def handler(signum: int, frame: Any) -> None:
            if self._interrupt:  # second Ctrl-C: stop at once
                raise KeyboardInterrupt
            self._interrupt = True
            self.console.print("\n[yellow]Ctrl-C: saving a checkpoint after this step "
                               "(press again to abort without saving)...[/yellow]")

        return signal.signal(signal.SIGINT, handler)

    def _finish(self, status: str) -> dict[str, Any]:
        m, env = self.method, self.env
        final: dict[str, Any] = {}
        if self.history:
            final.update({k: v for k, v in self.history[-1].items() if k.startswith(("train_", "val_"))})
        if status in ("completed", "early_stopped"):
            test = m.test_data()
            if test is not None:
                final.update({f"test_{k}": v for k, v in self.evaluate(test).items()
                              if isinstance(v, (int, float))})
        train_time = self.elapsed()
        cost = self.cost.summary(train_time - self.elapsed_before, torch.get_num_threads())
        if cost["train_flops"] is not None:
            cost["train_flops"] *= env.world_size  # every rank ran the same steps on its share
        summary = {
            "status": status,
            "run_dir": str(self.run_dir),
            "model": self.cfg.model.name,
            "method": self.cfg.method.name,
            "recipe": self.cfg.recipe,
            **m.describe(),
            "epochs_completed": self.epoch,
            "steps": self.step,
            "gradient_passes": self.step * (2 if self.sam else 1),  # SAM: two per step
            "final": final,
            "train_time_s": round(train_time, 3),
            "wall_time_s": round(time.perf_counter() - self.t_start, 3),
            "samples_per_s": round(self.samples_seen / max(train_time, 1e-9), 1),
            "device": str(env.device),
            "device_name": device_name(env.device),
            "precision": self.precision,
            "precision_requested": self.cfg.train.precision,
            "precision_reason": self.precision_reason,
            "cpu_native_bf16": cpu_has_native_bf16(),
            "world_size": env.world_size,
            "threads": torch.get_num_threads(),
            "parameters": self.param_counts,
            "cost": cost,
            "best_checkpoint": str(self.ckpt.best()) if self.ckpt.best() else None,
            "last_checkpoint": str(self.last_checkpoint) if self.last_checkpoint else None,
            "early_stopping": self.early.state_dict() if self.early else None,
            "warnings": self._loss_warnings(),
            "resumed": self.resumed,
            "versions": versions(),
            "finished_at": datetime.now().isoformat(timespec="seconds"),
        }
        if env.is_main:
            atomic_write_json(self.run_dir / "summary.json", summary)
            self.tb.close()
            try:
                from ..viz.curves import plot_curves

                plot_curves(self.run_dir / "metrics.csv", self.run_dir / "curves.png")
            except Exception as e:  # a figure must never lose a finished run
                self.console.print(f"[yellow]could not draw curves.png: {escape(str(e))}[/yellow]")
            for cb in self.callbacks:
                cb.on_train_end(self)
            run = escape(str(self.run_dir))
            if status == "interrupted":
                self.console.always(f"interrupted at step {self.step}; checkpoint saved. "
                                    f"Resume with: profond train --resume {run}")
            msg = {"completed": "done", "early_stopped": "early stopping: done",
                   "interrupted": f"interrupted; resume with: profond train --resume {run}",
                   "diverged": "diverged"}[status]
            tests = " ".join(f"{k} {fmt(v)}" for k, v in final.items() if k.startswith("test_"))
            spent = (f"{summary['train_time_s']:.1f}s, {human(cost['train_flops'], 'FLOP')}, "
                     f"{human(cost['energy_kwh'] * 1000, 'Wh')} ({cost['energy_method']}), "
                     f"{human(cost['co2_g'], 'g')} CO2e")
            self.console.print(f"{msg}. {escape(tests)}  ({spent}) -> {run}")
        return summary


def place_nets(method: Method, device: torch.device, channels_last: bool) -> None:
    """Move the method's nets to ``device`` and remember the unwrapped originals."""
    method.raw_nets = dict(method.nets)
    for net in method.raw_nets.values():
        net.to(device)
        if channels_last:
            net.to(memory_format=torch.channels_last)


def build_emas(method: Method, decay: float | None) -> dict[str, EMA]:
    if not decay:
        return {}
    return {n: EMA(method.raw_nets[n], decay) for n in method.ema_nets if n in method.raw_nets}


def _load_part(file: Path, field: str, load: Any, state: Any) -> None:
    """``load(state)`` for one part of a checkpoint's loop state; a state that does not fit
    (valid JSON, wrong content) is a CheckpointError naming ``file`` and ``field``."""
    try:
        load(state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, RuntimeError) as e:
        if isinstance(e, ProfondError):
            raise
        raise CheckpointError(f"{str(file)!r}: field {field!r} does not fit this run ({e}); {DAMAGED}.") from None


def load_emas(emas: dict[str, EMA], extra: dict[str, torch.Tensor]) -> None:
    """EMA shadows are saved in a checkpoint's extra state as ``ema.<net>.<key>``."""
    for name, ema in emas.items():
        prefix = f"ema.{name}."
        ema.load_state_dict({k[len(prefix):]: v for k, v in extra.items() if k.startswith(prefix)})


class _FaultAt(Callback):
    """Test hook: deliver ``sig`` to this very process right after optimizer step ``step``."""

    def __init__(self, step: int, sig: int):
        self.at, self.sig = step, sig

    def on_step_end(self, loop: Any, step: int, metrics: dict[str, Any]) -> None:
        if step == self.at:
            os.kill(os.getpid(), self.sig)


def fault_injection_from_env() -> list[Callback]:
    """``PROFOND_FAULT=SIGKILL@40`` (or ``SIGINT@12``): crash/interrupt deterministically.

    Used by the crash-resume tests to kill a real training process at an exact step;
    unset in normal use.
    """
    spec = os.environ.get("PROFOND_FAULT")
    if not spec:
        return []
    name, _, step = spec.partition("@")
    try:
        return [_FaultAt(int(step), getattr(signal, name))]
    except (ValueError, AttributeError):
        raise ConfigError(f"PROFOND_FAULT={spec!r}: write SIGNAL@STEP, e.g. SIGKILL@40.") from None


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def batch_size_of(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return batch.shape[0]
    if isinstance(batch, (list, tuple)):
        return batch_size_of(batch[0])
    if isinstance(batch, dict):
        return batch_size_of(next(iter(batch.values())))
    return 1


def default_run_dir(cfg: RunConfig) -> Path:
    """``out/name``, or ``out/MODEL-DATASET-TIMESTAMP`` without a name; a name is one folder
    inside ``out`` (checked again here for configs that skipped ``validate``), and the default
    one is made of the same characters (any other character of a model or dataset name: ``-``)."""
    if cfg.name is not None:
        check_run_name(cfg.name)
        return Path(cfg.out) / cfg.name
    parts = (_name_part(cfg.model.name), _name_part(cfg.data.name), f"{datetime.now():%Y%m%d-%H%M%S}")
    return Path(cfg.out) / "-".join(parts)


def _name_part(text: str) -> str:
    part = "".join(c if c.isascii() and (c.isalnum() or c in "-_+=") else "-" for c in str(text))
    return part[:80] or "run"


def train(cfg: RunConfig, *, run_dir: str | Path | None = None, resume: bool = False,
          callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train ``cfg``; with ``resume=True`` continue the run in ``run_dir`` from its latest checkpoint."""
    trainer = Trainer(cfg, run_dir=Path(run_dir) if run_dir else None, resume=resume, callbacks=callbacks)
    try:
        return trainer.fit()
    finally:
        if trainer.env.world_size > 1:
            dist_utils.shutdown()


def load_run(run_dir: str | Path, checkpoint: str = "last", device: str = "auto") -> tuple[Method, Trainer]:
    """Rebuild a finished run's method with trained weights (for eval / sample); EMA weights,
    when the run kept them, replace the raw ones, as training evaluated them."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a run folder (no config.yaml); pass a folder made by `profond train`.")
    cfg = RunConfig.load(run_dir / "config.yaml")
    cfg.train.device = device
    cfg.train.quiet = True
    trainer = Trainer.for_evaluation(cfg, run_dir)
    path = trainer.ckpt.best() if checkpoint == "best" else trainer.ckpt.latest()  # latest: raises if damaged
    if path is None and checkpoint == "best" and (trainer.ckpt.dir / "best").is_dir():
        read_meta(trainer.ckpt.dir / "best")  # a damaged best/: say which file and what is wrong
    if path is None:
        raise CheckpointError(f"no {checkpoint} checkpoint in {run_dir / 'checkpoints'}; did the run save one?")
    resume_rules.check_loop_meta(read_meta(path)["meta"], path / META_FILE)
    meta = load_checkpoint(path, nets=trainer.method.raw_nets, optimizers={}, schedulers={},
                           map_location=trainer.env.device)
    load_emas(trainer.emas, meta.get("extra_state", {}))
    for name, ema in trainer.emas.items():
        ema.copy_to(trainer.method.raw_nets[name])
    trainer.emas = {}  # the nets now hold the EMA weights: nothing left to swap in
    trainer.checkpoint_path = path
    trainer.method.attach_run(run_dir)
    return trainer.method, trainer


install_run_opener(load_run)  # methods that build on a frozen run open it through the contract

__all__ = ["train", "Trainer", "RunResult", "RunWriteError", "LoopContext", "load_run", "seed_everything"]
