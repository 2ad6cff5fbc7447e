"""Transfer learning tools (course §4.5, §4.7): freeze, per-group learning rates, weight loading.

The course's recipe (§4.7) is: load pre-trained weights, replace the head, freeze the
trunk and train the head; then unfreeze the last blocks and fine-tune them with a learning
rate 10 to 100 times smaller. Here each step is addressed by *module-name prefixes*
(``"features"``, ``"layer3"``, ``"head"``), the names printed by ``model.named_children()``:

>>> freeze(model, ["stem", "layer1", "layer2"])
>>> groups = param_groups(model, base_lr=1e-3, lr_groups={"layer3": 1e-5})
>>> optimizer = torch.optim.AdamW(groups)

Weights are read from ``.safetensors`` files only: unlike a pickle (``torch.save``), a
safetensors file cannot run code when it is loaded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

#: module types whose parameters are "norm parameters" (no weight decay if asked, §3.9)
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*, SyncBatchNorm
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


# ----------------------------------------------------------------------------------------
# prefixes


def _matches(name: str, prefix: str) -> bool:
    """``name`` lies under module ``prefix`` (dotted boundary: ``layer1`` ≠ ``layer10``)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def _top_level(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_children()] + [
        n for n, _ in model.named_parameters(recurse=False)
    ]


def _check_prefixes(model: nn.Module, prefixes: list[str], what: str) -> list[str]:
    if isinstance(prefixes, str):
        prefixes = [prefixes]
    names = [n for n, _ in model.named_parameters()]
    clean = []
    for p in prefixes:
        p = str(p).rstrip(".")
        if not any(_matches(n, p) for n in names):
            raise ConfigError(
                f"{what}: no parameter under module {p!r}. Top-level modules of this model: "
                f"{', '.join(_top_level(model))} (deeper names like 'layer3.0' work too)."
            )
        clean.append(p)
    return clean


def _set_requires_grad(model: nn.Module, prefixes: list[str], flag: bool, what: str) -> list[str]:
    prefixes = _check_prefixes(model, prefixes, what)
    changed = []
    for name, p in model.named_parameters():
        if any(_matches(name, pre) for pre in prefixes):
            p.requires_grad_(flag)
            changed.append(name)
    return changed


def freeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter under the given module prefixes.

    Returns the names of the parameters touched. An unknown prefix raises ConfigError
    listing the model's top-level modules. Note: BatchNorm running statistics of frozen
    modules still update in ``train()`` mode; put those modules in ``eval()`` to freeze
    them too.
    """
    return _set_requires_grad(model, prefixes, False, "freeze")


def unfreeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Set ``requires_grad=True`` under the given prefixes (phase 2 of §4.7); returns names."""
    return _set_requires_grad(model, prefixes, True, "unfreeze")


# ----------------------------------------------------------------------------------------
# optimizer parameter groups


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters that are biases, norm-layer parameters, or 1-D tensors."""
    out = set()
    for mod_name, mod in model.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(mod, NORM_TYPES) or p_name == "bias" or p.ndim <= 1:
                out.add(full)
    return out


def param_groups(
    model: nn.Module,
    base_lr: float,
    lr_groups: dict[str, float] | None = None,
    weight_decay: float = 0.0,
    decay_norm_and_bias: bool = True,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: per-prefix learning rates and optional decay exclusion.

    * A parameter under a prefix of ``lr_groups`` gets that learning rate (the longest
      matching prefix wins), the others ``base_lr`` — the layer-wise learning rates of §4.7.
    * Frozen parameters (``requires_grad=False``) are left out.
    * With ``decay_norm_and_bias=False``, biases, norm-layer parameters and every 1-D
      parameter go to a twin group with ``weight_decay=0`` (§3.9: decaying a BN scale or a
      bias does not regularise the function).

    Each trainable parameter is in exactly one group; empty groups are dropped (a fully
    frozen model is a ConfigError). Each
    group is ``{"params", "lr", "weight_decay", "name"}`` with names like ``"base"``,
    ``"head"``, ``"head/no_decay"``. Unknown prefixes raise ConfigError.
    """
    lr_groups = dict(lr_groups or {})
    prefixes = _check_prefixes(model, list(lr_groups), "lr_groups") if lr_groups else []
    lrs = {pre: float(lr_groups[raw]) for pre, raw in zip(prefixes, lr_groups, strict=True)}
    no_decay = set() if decay_norm_and_bias else no_decay_names(model)

    groups: dict[tuple[str, bool], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        matching = [pre for pre in prefixes if _matches(name, pre)]
        prefix = max(matching, key=len) if matching else None
        decays = name not in no_decay
        key = (prefix or "", decays)
        if key not in groups:
            label = prefix if prefix is not None else "base"
            groups[key] = {
                "params": [],
                "lr": lrs[prefix] if prefix is not None else float(base_lr),
                "weight_decay": float(weight_decay) if decays else 0.0,
                "name": label if decays else f"{label}/no_decay",
            }
        groups[key]["params"].append(p)
    if not groups:
        raise ConfigError(
            "every parameter of the model is frozen: nothing to optimise. Freeze fewer "
            "modules (model.freeze) or unfreeze the head."
        )
    return list(groups.values())


# ----------------------------------------------------------------------------------------
# loading safetensors weights


@dataclass
class LoadReport:
    """What :func:`load_weights` did: keys loaded, and keys skipped with the reason."""

    loaded: list[str] = field(default_factory=list)
    #: model keys absent from the file
    missing: list[str] = field(default_factory=list)
    #: ``(key, shape in file, shape in model)``
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    #: file keys the model does not have
    unexpected: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> list[str]:
        """Model keys left at their current value (missing or shape-mismatched)."""
        return self.missing + [k for k, _, _ in self.mismatched]

    def summary(self) -> str:
        return (
            f"loaded {len(self.loaded)} tensors; skipped {len(self.missing)} missing, "
            f"{len(self.mismatched)} shape-mismatched; ignored {len(self.unexpected)} unexpected"
        )


_ONLY = "only .safetensors weight files are accepted (never pickles / torch.save files)"


def _read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights file {str(p)!r} not found; {_ONLY}.")
    with open(p, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # zip (torch.save) or raw pickle
        raise ConfigError(
            f"{str(p)!r} looks like a pickle / torch.save checkpoint; {_ONLY}. Convert it with "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')."
        )
    # a safetensors file starts with a little-endian u64 header size, then a JSON header
    if len(head) < 9 or head[8:9] != b"{" or struct.unpack("<Q", head[:8])[0] > p.stat().st_size:
        raise ConfigError(f"{str(p)!r} is not a safetensors file; {_ONLY}.")
    try:
        return load_file(str(p), device="cpu")
    except Exception as e:  # safetensors raises its own SafetensorError
        raise ConfigError(f"{str(p)!r} is not a valid safetensors file ({e}); {_ONLY}.") from None


def resolve_weights(path: str | Path, net: str = "model") -> tuple[Path, str]:
    """Where the weights are and the key prefix to strip.

    ``path`` may be a ``.safetensors`` file, a profond checkpoint folder
    (``RUN/checkpoints/step_XXXXXXXX``; its ``model.safetensors`` prefixes keys with the net's
    name) or a whole run folder (its best checkpoint, else its latest).
    """
    p = Path(path)
    if p.is_dir():
        if (p / "checkpoints").is_dir():
            from ..base.checkpoint import CheckpointManager

            mgr = CheckpointManager(p)
            found = mgr.best() or mgr.latest()
            if found is None:
                raise ConfigError(f"run folder {str(p)!r} holds no complete checkpoint to load weights from.")
            p = found
        if not (p / "model.safetensors").is_file():
            raise ConfigError(f"{str(p)!r} is neither a run folder nor a checkpoint folder (no model.safetensors).")
        return p / "model.safetensors", f"{net}."
    return p, ""


def load_weights(model: nn.Module, path: str, strict: bool = True) -> LoadReport:
    """Load a ``.safetensors`` state dict into ``model`` (course §4.7) and report what happened.

    ``path`` is a ``.safetensors`` file, or a profond run / checkpoint folder (its ``model``
    net's weights; see :func:`resolve_weights`).

    ``strict=True``: the file must match the model exactly (same keys and shapes), else
    ConfigError listing the first mismatches and nothing is loaded. ``strict=False``: load
    every key present in both with the same shape; skip missing and shape-mismatched keys
    (e.g. a new head for another number of classes) and ignore unexpected ones.
    Pickle files (``torch.save``) are refused: they can execute code when loaded.
    """
    file, prefix = resolve_weights(path)
    tensors = _read_safetensors(file)
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = model.state_dict()
    report = LoadReport()
    to_load = {}
    for key, target in own.items():
        if key not in tensors:
            report.missing.append(key)
        elif tuple(tensors[key].shape) != tuple(target.shape):
            report.mismatched.append((key, tuple(tensors[key].shape), tuple(target.shape)))
        else:
            to_load[key] = tensors[key]
    report.unexpected = [k for k in tensors if k not in own]

    if strict and (report.missing or report.mismatched or report.unexpected):
        problems = (
            [f"missing {k}" for k in report.missing]
            + [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in report.mismatched]
            + [f"unexpected {k}" for k in report.unexpected]
        )
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigError(
            f"weights {str(path)!r} do not match the model: {'; '.join(problems[:5])}{more}. "
            "Load with strict=False (model.init_strict: false) to skip them."
        )
    model.load_state_dict(to_load, strict=False)
    report.loaded = list(to_load)
    return report
