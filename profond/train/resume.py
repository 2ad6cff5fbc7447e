r"""What ``profond train --resume RUN`` may change, and what a resume reads from a checkpoint.

A resume continues the state saved in the run's latest checkpoint (weights, optimizer and
scheduler state, RNGs, the position in the epoch). The config it continues with is the
run's ``config.yaml`` plus the command's flags and ``--set`` overrides; it is compared, key by
key, with the config the checkpoint was trained with (``meta.config`` of its ``meta.json``:
the config that produced that very state, even when a later resume rewrote ``config.yaml``
and then crashed before its first checkpoint). Each key of the config is in exactly one of
two tables:

* :data:`CHANGEABLE` -- keys whose new value is applied from the resumed step on: the length
  of the run, the learning rate and its schedule, clipping, precision and device, logging,
  checkpointing and early-stopping patience. What changed is recorded in ``config.yaml``
  (the new values) and in ``summary.json``'s ``resumed`` list (one entry per resume:
  ``{"step": S, "changed": {"optim.lr": [old, new], ...}}``, earlier resumes' entries kept:
  they travel in the checkpoints' metadata);
* :data:`FIXED` -- keys the saved state depends on (the architecture, the data and its split,
  the optimizer and the meaning of its state, the method, the seed): changing one is refused
  with a :class:`~profond.errors.ConfigError` before anything is written, naming the key and
  the fix (a new run, or one that fine-tunes from this one with ``model.init_from``).

A key that matches neither table (a field added later and not yet declared) is refused. A
resume cannot go back either: ``train.epochs`` below the epoch the checkpoint is in, or
``train.max_steps`` at or below its step, is refused the same way.

Before any of this, the loop's section of the checkpoint's ``meta.json`` is checked against
:data:`LOOP_SCHEMA` (with the schema function of :mod:`profond.base.checkpoint`) and against
the run (the step in the folder's name and in the schedulers, a batch index within the epoch):
valid JSON with bad values is a CheckpointError naming the file and the field.

The learning rate after a resume is, by definition, that of a fresh run configured with the
new values from the start, at the same step: with :math:`\eta_t` the LR of the new config's
schedule at optimizer step :math:`t` (course §2.5), the resumed run uses :math:`\eta_S,
\eta_{S+1}, \dots` from its checkpoint's step :math:`S` on. A longer ``train.epochs``
stretches a cosine over the new total (the LR goes back up to where the longer cosine is at
step :math:`S`), a new ``optim.lr`` rescales the whole curve. The schedules of
:mod:`profond.train.schedules` are closed-form in :math:`t`, so :func:`apply_lr` only has to
give the loaded schedulers the new base LRs and recompute the current step's LR.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..base.checkpoint import (
    COUNT,
    DAMAGED,
    META_FILE,
    RNG_SCHEMA,
    STEP_RE,
    CheckpointManager,
    Spec,
    check_schema,
    read_meta,
)
from ..config import OPEN_SECTIONS, RunConfig, read_yaml
from ..errors import CheckpointError, ConfigError

#: config keys (a key or a section prefix) a resume may change, and how the change is applied
CHANGEABLE: dict[str, str] = {
    "out": "bookkeeping: where run folders go (a resume writes into its own folder)",
    "name": "bookkeeping: the run folder's name",
    "recipe": "bookkeeping: the recipe the config started from",
    "data.data_dir": "where the same dataset is read from",
    "data.download": "whether a missing dataset may be downloaded",
    "data.eval_batch_size": "evaluation batches: the same metrics, another memory use",
    "optim.lr": "the base LR: parameter groups and schedules rescaled at the current step",
    "sched": "the schedule: rebuilt, continued at the current step",
    "train.epochs": "the run's length: schedules rebuilt over the new total",
    "train.max_steps": "where the run stops",
    "train.device": "the device the state is loaded onto",
    "train.grid_gco2_per_kwh": "bookkeeping: the CO₂ estimate's grid intensity",
    "train.precision": "autocast only; an fp16 GradScaler starts from its initial scale, like a fresh run",
    "train.clip_grad_norm": "applied from the next step (the usual cure of a diverged run)",
    "train.channels_last": "memory layout only",
    "train.compile": "compilation only",
    "train.threads": "CPU threads only",
    "train.checkpoint_every": "checkpointing",
    "train.keep_last": "checkpointing",
    "train.log_every": "logging",
    "train.eval_every": "evaluation frequency",
    "train.early_stop.patience": "early stopping from the next evaluation (its counter is kept)",
    "train.early_stop.min_delta": "early stopping from the next evaluation",
    "train.quiet": "console output",
}

#: config keys a resume may not change, and why
FIXED: dict[str, str] = {
    "model": "the checkpoint's weights belong to the saved architecture",
    "method": "the training objective and the method's saved state belong to the saved method",
    "data.name": "the run was trained on the saved dataset",
    "data.val_size": "it moves the seeded train/validation split",
    "data.subset": "it changes the training set",
    "data.corrupt": "it changes the training data",
    "data.corrupt_fraction": "it changes the training data",
    "data.batch_size": "the position in the epoch is counted in batches of the saved size",
    "data.augment": "it changes the training data",
    "data.mixup_alpha": "it changes the training data",
    "data.cutmix_alpha": "it changes the training data",
    "optim.name": "the optimizer's saved state belongs to the saved optimizer",
    "optim.impl": "the optimizer's saved state belongs to the saved implementation",
    "optim.momentum": "the saved momentum buffers were accumulated with the saved value",
    "optim.nesterov": "the saved momentum buffers were accumulated with the saved rule",
    "optim.betas": "the saved moment estimates were accumulated with the saved values",
    "optim.eps": "part of the saved optimizer's update rule",
    "optim.alpha": "the saved squared-gradient average was accumulated with the saved value",
    "optim.weight_decay": "part of the objective the saved state optimizes",
    "optim.decay_norm_and_bias": "it changes the optimizer's parameter groups",
    "optim.lr_groups": "it changes the optimizer's parameter groups",
    "optim.sam_rho": "SAM's radius is part of the saved run's update rule (0: plain optimizer)",
    "optim.per_optimizer": "per-optimizer settings of a saved multi-optimizer method",
    "train.seed": "the RNG states and the data split come from the saved seed",
    "train.ema_decay": "the saved EMA weights were averaged with the saved decay",
    "train.early_stop.monitor": "the saved best value is of the saved metric",
    "train.early_stop.mode": "the saved best value was judged in the saved direction",
}


def rule(key: str) -> tuple[bool, str]:
    """``(may change, why)`` for config key ``key``, from its longest declared prefix."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in CHANGEABLE:
            return True, CHANGEABLE[prefix]
        if prefix in FIXED:
            return False, FIXED[prefix]
    return False, "it is not declared changeable on resume"


def config_leaves(d: Any, cls: type = RunConfig, prefix: str = "") -> dict[str, Any]:
    """The keys of a config mapping (as :meth:`RunConfig.to_dict` writes it) at the granularity
    of the tables: every field of the dataclasses, and each builder argument of the open
    sections; a field absent from ``d`` has its default."""
    d = d if isinstance(d, Mapping) else {}
    defaults = cls()
    plain = dataclasses.asdict(defaults)  # the defaults as to_dict writes them
    out: dict[str, Any] = {}
    names = set()
    for f in dataclasses.fields(cls):
        names.add(f.name)
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            out.update(config_leaves(d.get(f.name), type(default), f"{prefix}{f.name}."))
        elif not (cls in OPEN_SECTIONS.values() and f.name == "args"):
            out[prefix + f.name] = d.get(f.name, plain[f.name])
    if cls in OPEN_SECTIONS.values():
        out.update({f"{prefix}{k}": v for k, v in d.items() if k not in names})
    return out


def config_changes(saved: Any, cfg: RunConfig) -> dict[str, list[Any]]:
    """``{key: [saved value, new value]}`` for every key where ``cfg`` differs from ``saved``."""
    old, new = config_leaves(saved), config_leaves(cfg.to_dict())
    return {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


#: the caller's section of a loop checkpoint's ``meta.json`` (under ``meta``), as
#: :meth:`profond.train.loop.Trainer.save` writes it
_MAPPING = Spec("mapping", optional=True)
LOOP_SCHEMA: dict[str, Spec] = {
    "loop": Spec("mapping", fields={
        "step": COUNT, "epoch": COUNT, "batch": COUNT,
        "rng": Spec("mapping", fields=RNG_SCHEMA),
        "acc_sums": Spec("mapping", each=Spec("number")),
        "acc_count": COUNT,
        "acc_ns": Spec("mapping", optional=True, null=True, each=COUNT),
        "method_state": Spec("mapping", optional=True),
        "elapsed": Spec("number", lo=0, finite=True),
        "samples_seen": COUNT,
        "scaler": Spec("mapping", optional=True, null=True),
        "early_stop": Spec("mapping", optional=True, null=True, fields={
            "monitor": Spec("str", optional=True), "best_value": Spec("number", optional=True, null=True),
            "best_epoch": Spec("int", optional=True, null=True), "wait": Spec("int", optional=True, lo=0),
            "stopped_epoch": Spec("int", optional=True, null=True)}),
    }),
    "config": Spec("mapping", optional=True, fields={
        **{s: _MAPPING for s in ("model", "method", "data", "optim", "sched")},
        "train": Spec("mapping", optional=True, fields={"early_stop": _MAPPING})}),
    "resumed": Spec("list", optional=True, each=Spec("mapping", fields={
        "step": COUNT, "changed": Spec("mapping", each=Spec("list"))})),
}


def check_loop_meta(meta: Any, file: Path) -> None:
    """The loop's section of ``file`` (a checkpoint's ``meta.json``) against :data:`LOOP_SCHEMA`."""
    check_schema(meta, LOOP_SCHEMA, file=file, prefix="meta")


def plan(doc: Mapping[str, Any], cfg: RunConfig, *, path: Path, run_dir: Path,
         steps_per_epoch: int | None = None) -> dict[str, list[Any]]:
    """Check that the checkpoint folder ``path`` (its parsed ``meta.json``: ``doc``) can be
    resumed with ``cfg``; returns the config changes (``{key: [old, new]}``, all changeable).

    Raises CheckpointError for metadata that does not fit the loop (naming the file and the
    field; ``steps_per_epoch``, when known, bounds the saved batch index) and ConfigError for a
    change of a :data:`FIXED` key or a length the run is already past. Writes nothing.
    """
    file = path / META_FILE
    meta = doc["meta"]
    check_loop_meta(meta, file)
    loop = meta["loop"]
    step, epoch, batch = loop["step"], loop["epoch"], loop["batch"]
    m = STEP_RE.match(path.name)
    if m and int(m.group(1)) != step:
        raise CheckpointError(f"{str(file)!r}: field 'meta.loop.step' is {step}, but the folder is "
                              f"{path.name}; {DAMAGED}.")
    for name, state in doc["schedulers"].items():
        if state.get("last_epoch", step) != step:  # the loop steps every schedule once per step
            raise CheckpointError(f"{str(file)!r}: field 'schedulers.{name}.last_epoch' is "
                                  f"{state['last_epoch']}, but the checkpoint is at step {step}; {DAMAGED}.")
    if batch > step:  # the batches done in this epoch are steps done
        raise CheckpointError(f"{str(file)!r}: field 'meta.loop.batch' is {batch}, beyond the {step} steps "
                              f"of the run; {DAMAGED}.")
    if steps_per_epoch is not None and batch > steps_per_epoch:
        raise CheckpointError(f"{str(file)!r}: field 'meta.loop.batch' is {batch}, beyond the "
                              f"{steps_per_epoch} batches of an epoch; {DAMAGED}.")

    if "config" in meta:
        saved = meta["config"]
    else:  # checkpoints written before the config travelled in them
        saved = read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else cfg.to_dict()
    changed = config_changes(saved, cfg)
    refused = [k for k in changed if not rule(k)[0]]
    if refused:
        what = "; ".join(f"{k} ({_short(changed[k][0])} -> {_short(changed[k][1])}): {rule(k)[1]}"
                         for k in refused)
        raise ConfigError(
            f"--resume cannot change {what}. Start a new run instead (another "
            f"--name), or fine-tune from this one in a new run with --set model.init_from={run_dir}."
        )
    tc = cfg.train
    need = epoch + 1 if batch else epoch  # the epoch in progress must be finished
    if tc.epochs < need:
        raise ConfigError(f"train.epochs={tc.epochs}: the checkpoint of {run_dir} is already in epoch "
                          f"{need} (step {step}) and a resume cannot go back; pass --epochs {need} or more.")
    if tc.max_steps is not None and step >= tc.max_steps:
        raise ConfigError(f"train.max_steps={tc.max_steps}: the checkpoint of {run_dir} is at step {step} "
                          f"already; raise it (--set train.max_steps=N with N > {step}) or lift it "
                          "(--set train.max_steps=null) to train on.")
    return changed


def check_run(run_dir: Path, cfg: RunConfig) -> dict[str, list[Any]]:
    """:func:`plan` for the latest checkpoint of ``run_dir``, before anything is built or
    written (``profond train --resume`` calls it first; the loop checks again when it loads)."""
    path = CheckpointManager(run_dir).latest()
    if path is None:
        raise CheckpointError(f"no complete checkpoint in {Path(run_dir) / 'checkpoints'}; "
                              "start a new run instead of --resume.")
    return plan(read_meta(path), cfg, path=path, run_dir=Path(run_dir))


def base_lrs(schedulers: Mapping[str, Any]) -> dict[str, list[float]]:
    """The base LR of each parameter group of each scheduler (taken from freshly built ones,
    before a checkpoint overwrites them)."""
    return {name: [float(lr) for lr in s.base_lrs] for name, s in schedulers.items()}


def apply_lr(schedulers: Mapping[str, Any], fresh: Mapping[str, list[float]]) -> None:
    """After a checkpoint's optimizer and scheduler states are loaded: give each scheduler
    (built from the new config: its multiplier is the new schedule) the new base LRs
    ``fresh`` and set every group's LR to the new schedule's value at the current step.

    The loop's schedulers are ``LambdaLR`` (:func:`profond.train.schedules.build_scheduler`),
    closed-form in the step: LR = base LR x multiplier(step), the very expression of
    ``LambdaLR.get_lr``. With an unchanged config this recomputes the numbers the checkpoint
    holds (resume stays exact); it is applied on every resume, so the LR depends only on the
    config and the step, never on the saved LR values.
    """
    for name, sched in schedulers.items():
        sched.base_lrs = list(fresh[name])
        groups = sched.optimizer.param_groups
        for group, base, factor in zip(groups, sched.base_lrs, sched.lr_lambdas, strict=True):
            group["initial_lr"] = base
            group["lr"] = base * factor(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in groups]  # what get_last_lr() returns
