"""Typed run configuration: dataclasses, YAML files, recipes and ``--set key=value`` overrides.

A run is fully described by one :class:`RunConfig`. It is resolved in this order, each
step overriding the previous one:

1. the dataclass defaults below,
2. a recipe (``--recipe NAME``, a YAML file shipped in ``profond/recipes/``),
3. a YAML file (``--config FILE``),
4. the CLI's explicit flags (``--epochs``, ``--batch-size``, ...),
5. ``--set section.key=value`` overrides (values parsed as YAML: ``--set optim.betas=[0.5,0.999]``).

The resolved config is written to ``RUN_DIR/config.yaml`` and is enough to reproduce
the run. Unknown keys and ill-typed values raise :class:`~profond.errors.ConfigError`
naming the key and the valid choices.

``model`` and ``method`` are open sections: besides ``name`` they take the keyword
arguments of the registered builder (``--set model.widths=[512,256]``); those are
checked against the builder's signature and annotations when the run is built
(:mod:`profond.registry`). Values are checked by :func:`profond.base.coerce.coerce`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from .base.coerce import PosInt, Range, Seed, coerce
from .errors import ConfigError


@dataclass
class ModelConfig:
    name: str = "mlp"
    #: keyword arguments of the model builder (``MODELS``), e.g. ``widths``, ``dropout``
    args: dict[str, Any] = field(default_factory=dict)
    #: module-name prefixes whose parameters are frozen (transfer learning, course §4.7)
    freeze: list[str] = field(default_factory=list)
    #: a local ``.safetensors`` file to initialise the weights from (never a pickle)
    init_from: str | None = None
    #: load ``init_from`` non-strictly (skip missing / shape-mismatched keys, e.g. a new head)
    init_strict: bool = True


@dataclass
class MethodConfig:
    """What the family does with the model: its losses and training step."""

    #: ``auto``: the model's default method (``classifier`` for classifiers, ``vae`` for ``vae``, ...)
    name: str = "auto"
    #: keyword arguments of the method builder (``METHODS``), e.g. ``label_smoothing``
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    #: a root holding one folder per dataset (``DIR/fashion-mnist/...``); see profond.data
    data_dir: str | None = None
    download: bool = True
    #: examples held out of the training set for validation (seeded split); ``None``: a tenth
    #: of the training set, at most 5000 (5000 for Fashion-MNIST, MNIST and CIFAR-10)
    val_size: Annotated[int, Range(0), "0: no validation set, null: a tenth, at most 5000"] | None = None
    #: use only this many training examples (after the split); ``None`` = all
    subset: Annotated[int, Range(1), "null: all the training examples"] | None = None
    batch_size: PosInt = 128
    eval_batch_size: PosInt = 1000
    #: batched augmentations, e.g. ``[crop, flip]``, ``[crop:2, flip, affine]`` (see profond.data.augment)
    augment: list[str] = field(default_factory=list)
    #: Beta(alpha, alpha) of Mixup / CutMix (course §3.7); 0 turns it off
    mixup_alpha: Annotated[float, Range(0), "0: off"] = 0.0
    cutmix_alpha: Annotated[float, Range(0), "0: off"] = 0.0
    #: corrupt the training split only, seeded by train.seed (Zhang et al. 2017; course §11.1-11.3;
    #: see profond.data.corrupt): random-labels | shuffled-pixels (one permutation for all images) |
    #: random-pixels (one per image) | gaussian (noise images with the data's mean/std)
    corrupt: Literal["none", "random-labels", "shuffled-pixels", "random-pixels", "gaussian"] = "none"
    #: share of the training examples that data.corrupt corrupts
    corrupt_fraction: Annotated[float, Range(0, 1)] = 1.0


@dataclass
class OptimConfig:
    #: lion: from profond.scratch, torch has none
    name: Literal["sgd", "rmsprop", "adam", "adamw", "lion"] = "adam"
    #: torch (torch.optim) | scratch (profond.scratch.optim, written from the course's rules)
    impl: Literal["torch", "scratch"] = "torch"
    lr: Annotated[float, Range(0, lo_open=True)] = 1e-3
    #: sgd, rmsprop: heavy-ball momentum (1 would never forget a gradient)
    momentum: Annotated[float, Range(0, 1, hi_open=True), "0: none"] = 0.0
    nesterov: bool = False
    #: adam, adamw, lion: decay rates of the two moment estimates
    betas: list[Annotated[float, Range(0, 1, hi_open=True)]] = field(default_factory=lambda: [0.9, 0.999])
    #: added to the denominator of the adaptive methods
    eps: Annotated[float, Range(0, lo_open=True)] = 1e-8
    #: rmsprop: decay of the squared-gradient average (1 would keep it at 0)
    alpha: Annotated[float, Range(0, 1, hi_open=True)] = 0.99
    weight_decay: Annotated[float, Range(0), "0: none"] = 0.0
    #: if false, norms' parameters and biases get no weight decay
    decay_norm_and_bias: bool = True
    #: SAM radius ρ (course §11.8, def. 11.20): two gradient passes per step around ``name``
    sam_rho: Annotated[float, Range(0), "0: off"] = 0.0
    #: per-parameter-group learning rates: module-name prefix -> lr (course §4.7 fine-tuning)
    lr_groups: dict[str, Annotated[float, Range(0, lo_open=True)]] = field(default_factory=dict)
    #: per-optimizer overrides for methods with several optimizers: ``{D: {lr: 4e-4}}``
    per_optimizer: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SchedConfig:
    name: Literal["constant", "step", "cosine", "warmup-cosine", "onecycle"] = "constant"
    warmup_epochs: Annotated[float, Range(0), "0: no warm-up"] = 0.0
    #: step schedule: multiply the LR by ``gamma`` every ``step_epochs`` epochs
    step_epochs: Annotated[float, Range(0, lo_open=True)] = 10.0
    gamma: Annotated[float, Range(0, lo_open=True)] = 0.1
    #: floor of the cosine schedules
    min_lr: Annotated[float, Range(0)] = 0.0
    #: one-cycle: peak LR (default ``optim.lr``) and fraction of steps spent rising
    max_lr: Annotated[float, Range(0, lo_open=True), "null: optim.lr"] | None = None
    pct_start: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.3


@dataclass
class EarlyStopConfig:
    #: stop after this many evaluations without improvement; ``None`` disables (course §3.8)
    patience: Annotated[int, Range(1), "null: no early stopping"] | None = None
    monitor: str = "val_loss"
    #: auto: max for accuracy-like names, min otherwise
    mode: Literal["auto", "min", "max"] = "auto"
    #: an improvement beats the best value by more than this
    min_delta: Annotated[float, Range(0), "0: any improvement"] = 0.0


@dataclass
class TrainConfig:
    epochs: PosInt = 10
    #: stop after this many optimizer steps (overrides epochs when reached first)
    max_steps: Annotated[int, Range(1), "null: no limit"] | None = None
    seed: Seed = 0
    #: auto | cpu | cuda | cuda:N
    device: str = "auto"
    #: auto (bf16 autocast where the device computes bf16 natively, fp32 elsewhere) | fp32 |
    #: bf16 (autocast, CPU and CUDA) | fp16 (autocast + GradScaler, CUDA only)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    #: rescale the gradients to at most this global L2 norm (0 would stop learning)
    clip_grad_norm: Annotated[float, Range(0, lo_open=True), "null: no clipping"] | None = None
    #: exponential moving average of the weights, evaluated instead of the raw weights
    ema_decay: Annotated[float, Range(0, 1, lo_open=True, hi_open=True), "null: no EMA"] | None = None
    channels_last: bool = False
    compile: bool = False
    #: torch intra-op threads (``None``: leave torch's default)
    threads: Annotated[int, Range(1, 1024), "null: torch's default"] | None = None
    #: checkpoint every N optimizer steps (0: only at the end of each epoch)
    checkpoint_every: Annotated[int, Range(0), "0: only at the end of each epoch"] = 0
    #: step checkpoints kept (the best one is kept apart)
    keep_last: PosInt = 2
    #: log train metrics to TensorBoard every N steps
    log_every: PosInt = 20
    #: evaluate on the validation set every N epochs
    eval_every: PosInt = 1
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)
    quiet: bool = False
    #: grams of CO₂-equivalent per kWh of the electricity used, for the run's CO₂ estimate
    #: (course §12.8; the default is the world average; France's grid is about 50)
    grid_gco2_per_kwh: Annotated[float, Range(0)] = 475.0


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: parent folder of run folders
    out: str = "runs"
    #: run folder name (default: MODEL-DATASET-TIMESTAMP): one folder inside ``out``, made of
    #: ASCII letters, digits and ``- _ . + =``, not starting with ``.``, at most 200 characters
    #: (see :func:`check_run_name`: nothing is ever written outside ``out``)
    name: str | None = None
    #: the recipe this config started from, for the record
    recipe: str | None = None

    # -- conversions -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for sec in ("model", "method"):  # open sections are written flat, as users write them
            args = d[sec].pop("args")
            d[sec].update(args)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        from .base.io import atomic_write_text

        atomic_write_text(path, self.to_yaml())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        cfg = cls()
        apply_dict(cfg, d)
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(read_yaml(path))


OPEN_SECTIONS = {"model": ModelConfig, "method": MethodConfig}


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found; pass an existing YAML file.")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, not {type(data).__name__}.")
    return data


def apply_dict(cfg: Any, d: dict[str, Any], prefix: str = "") -> None:
    """Recursively merge a nested mapping into dataclass ``cfg`` (validated)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {d!r}.")
    for key, value in d.items():
        set_key(cfg, prefix + str(key), value, _root_prefix=prefix)


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def set_key(cfg: Any, dotted: str, value: Any, _root_prefix: str = "") -> None:
    """Set ``section.key[.sub]`` on ``cfg`` with type checking."""
    rel = dotted[len(_root_prefix):] if dotted.startswith(_root_prefix) else dotted
    parts = rel.split(".")
    obj = cfg
    path = _root_prefix
    for i, part in enumerate(parts):
        fields = _fields(obj)
        last = i == len(parts) - 1
        if type(obj) in OPEN_SECTIONS.values() and part not in fields:
            # open section: everything unknown is a builder argument
            obj.args[".".join(parts[i:])] = value
            return
        if type(obj) in OPEN_SECTIONS.values() and part == "args" and isinstance(value, dict) and last:
            obj.args.update(value)
            return
        if part not in fields:
            valid = ", ".join(path + f for f in fields)
            raise ConfigError(f"unknown config key {path + part!r}. Valid keys here: {valid}.")
        hint = typing.get_type_hints(type(obj), include_extras=True)[part]
        if last:
            current = getattr(obj, part)
            if dataclasses.is_dataclass(current):
                apply_dict(current, value, path + part + ".")
            else:
                setattr(obj, part, coerce(value, hint, path + part))
            return
        obj = getattr(obj, part)
        path += part + "."
        if not dataclasses.is_dataclass(obj):
            raise ConfigError(f"config key {path.rstrip('.')!r} is a value, not a section.")


def parse_override(item: str) -> tuple[str, Any]:
    """Parse ``key=value`` (value as YAML) from ``--set``."""
    if "=" not in item:
        raise ConfigError(f"bad override {item!r}: write --set section.key=value, e.g. --set optim.lr=0.01.")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"bad override {item!r}: the key before '=' is empty.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(cfg: RunConfig, items: list[str]) -> RunConfig:
    for item in items:
        key, value = parse_override(item)
        set_key(cfg, key, value)
    return cfg


# -- recipes -------------------------------------------------------------------------
RECIPE_DIR = Path(__file__).parent / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    from .errors import RegistryError
    from .registry import unknown_name_message

    p = RECIPE_DIR / f"{name}.yaml"
    if not p.is_file():
        raise RegistryError(unknown_name_message("recipe", name, recipe_names(), "recipes"))
    return p


def recipe_help(name: str) -> str:
    """First comment line of a recipe file."""
    for line in recipe_path(name).read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def resolve(
    *,
    recipe: str | None = None,
    config_file: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
) -> RunConfig:
    """Defaults <- recipe <- config file <- flags <- ``--set`` overrides."""
    cfg = RunConfig()
    if recipe:
        apply_dict(cfg, read_yaml(recipe_path(recipe)))
        cfg.recipe = recipe
    if config_file:
        apply_dict(cfg, read_yaml(config_file))
    for key, value in (flags or {}).items():
        if value is not None:
            set_key(cfg, key, value)
    apply_overrides(cfg, overrides or [])
    resolve_method(cfg)
    validate(cfg)
    return cfg


def resolve_method(cfg: RunConfig) -> RunConfig:
    """Replace ``method.name: auto`` by the model's default method (registered as a
    ``method:NAME`` tag of the model; ``classifier`` when the model declares none)."""
    if cfg.method.name == "auto":
        from .registry import MODELS

        cfg.method.name = "classifier"
        if cfg.model.name in MODELS:
            for tag in MODELS.entry(cfg.model.name).tags:
                if tag.startswith("method:"):
                    cfg.method.name = tag.split(":", 1)[1]
    return cfg


def check_fields(obj: Any, prefix: str = "") -> None:
    """Every field of dataclass ``obj`` against its annotation (choices, ranges), recursively."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, prefix + f.name + ".")
        else:
            coerce(value, hints[f.name], prefix + f.name)


#: the longest run name: with the files' own names, well under the 255 bytes a folder name may have
RUN_NAME_MAX = 200


def check_run_name(name: Any, key: str = "name") -> None:
    """A run name is ONE folder name inside ``out``: ASCII letters, digits and ``- _ . + =``,
    not starting with ``.`` (no ``..``, no hidden folder), at most :data:`RUN_NAME_MAX`
    characters; no ``/``, so a name never points outside ``out`` or at ``out`` itself."""
    ok = (isinstance(name, str) and 0 < len(name) <= RUN_NAME_MAX and not name.startswith(".")
          and all(c.isascii() and (c.isalnum() or c in "-_.+=") for c in name))
    if not ok:
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:57] + "..."
        raise ConfigError(
            f"bad value for {key!r}: {shown!r}. A run name is one folder name inside --out: ASCII letters, "
            f"digits and - _ . + = only, not starting with '.', 1 to {RUN_NAME_MAX} characters "
            "(e.g. --name mlp-lr0.01); put folders in --out instead."
        )


def validate(cfg: RunConfig) -> None:
    check_fields(cfg)
    if cfg.name is not None:
        check_run_name(cfg.name)
    dev = cfg.train.device
    if not (dev in ("auto", "cpu", "cuda", "mps") or dev.startswith("cuda:")):
        raise ConfigError(f"bad value for 'train.device': {dev!r}. Valid values: auto, cpu, cuda, cuda:N.")
    if len(cfg.optim.betas) != 2:
        raise ConfigError("bad value for 'optim.betas': give two numbers, e.g. [0.9, 0.999].")
    check_per_optimizer(cfg.optim)


def check_per_optimizer(o: OptimConfig) -> None:
    """``optim.per_optimizer.NAME.KEY`` against the field ``optim.KEY`` (its type and range);
    the values are stored coerced (``"4e-4"`` -> ``0.0004``)."""
    hints = typing.get_type_hints(OptimConfig, include_extras=True)
    keys = [f.name for f in dataclasses.fields(OptimConfig) if f.name != "per_optimizer"]
    for name, overrides in o.per_optimizer.items():
        for key, value in overrides.items():
            where = f"optim.per_optimizer.{name}.{key}"
            if key not in keys:
                raise ConfigError(f"unknown config key {where!r}. Valid keys here: {', '.join(keys)}.")
            overrides[key] = coerce(value, hints[key], where)
