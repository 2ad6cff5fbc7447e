"""Name -> builder registries for models, datasets, methods and experiments.

In the spirit of timm's registry: a builder registers itself with a decorator and
everything user-facing (CLI ``list``, error messages, configs) goes through names::

    from profond.registry import MODELS

    @MODELS.register("mlp", help="multilayer perceptron (course §1.2)")
    def mlp(in_shape=(1, 28, 28), num_classes=10, widths=(256, 128), ...): ...

    model = MODELS.build("mlp", widths=[512])

Registration happens at import time; :func:`load_all` imports every module that
registers something, so lookups never depend on import order.

A registered function checks its arguments however it is called (``MODELS.build``, or
``mlp(...)`` directly): each argument it is given goes through
:func:`~profond.base.coerce.coerce` against the function's annotation, under the key
``KIND.ARG`` (``model.dropout``). So choices are ``Literal[...]`` hints, ranges
``Annotated[int, Range(1)]`` hints (:data:`~profond.base.coerce.PosInt`, ...), and a
builder holds no argument checks of its own, only what is really about the model.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base.coerce import coerce
from .errors import ConfigError, RegistryError


@dataclass
class Entry:
    name: str
    builder: Callable[..., Any]
    help: str = ""
    tags: tuple[str, ...] = ()


class Registry:
    """A named collection of builders of one kind (``"model"``, ``"dataset"``, ...)."""

    def __init__(self, kind: str, plural: str | None = None):
        self.kind = kind
        self.plural = plural or kind + "s"
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, help: str = "", tags: tuple[str, ...] = ()):
        """Decorator registering ``fn`` under ``name``.

        A function is replaced by :func:`checked` ``fn`` (its arguments coerced to its
        annotations); a class (the methods, built from a RunConfig) is kept as it is.
        """

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and _unwrapped(self._entries[name].builder) is not fn:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = help or (inspect.getdoc(fn) or "").split("\n")[0]
            builder = fn if inspect.isclass(fn) else checked(fn, self.kind + ".")
            self._entries[name] = Entry(name, builder, doc, tuple(tags))
            return builder

        return deco

    def add(self, name: str, builder: Callable[..., Any], help: str = "") -> None:
        self.register(name, help=help)(builder)

    def names(self) -> list[str]:
        load_all()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        load_all()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        load_all()
        return name in self._entries

    def entry(self, name: str) -> Entry:
        self.get(name)
        return self._entries[name]

    def get(self, name: str) -> Callable[..., Any]:
        load_all()
        if name not in self._entries:
            raise RegistryError(unknown_name_message(self.kind, name, self.names(), self.plural))
        return self._entries[name].builder

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the builder, turning unknown or ill-typed keyword arguments into ConfigError
        (the registered function coerces each one to its annotation, see :func:`checked`)."""
        fn = self.get(name)
        check_kwargs(fn, kwargs, f"{self.kind} {name!r}")
        return fn(**kwargs)


def unknown_name_message(kind: str, name: str, valid: list[str], plural: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown {kind} {name!r}.{hint} Valid {plural}: {', '.join(valid)} "
        f"(see `profond list {plural}`)."
    )


def builder_params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return {
        k: p
        for k, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _unwrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(fn, "__wrapped__", fn)


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


@functools.cache
def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(fn, include_extras=True)


def checked(fn: Callable[..., Any], prefix: str) -> Callable[..., Any]:
    """``fn`` whose every given argument is first coerced to its annotation (key ``prefix +
    name``, ``model.dropout``), by :func:`~profond.base.coerce.coerce`. Arguments left out
    keep their defaults unchecked; the annotations are read on the first call."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hints = _hints(fn)
        bound = sig.bind(*args, **kwargs)
        for key, value in bound.arguments.items():
            if key in hints and sig.parameters[key].kind in _NAMED:
                bound.arguments[key] = coerce(value, hints[key], prefix + key)
        return fn(*bound.args, **bound.kwargs)

    return wrapper


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    params = builder_params(fn)
    accepts_var = any(
        p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values()
    )
    for key in kwargs:
        if key not in params and not accepts_var:
            raise ConfigError(
                f"{what} has no option {key!r}. Valid options: {', '.join(sorted(params))}."
            )


_LOADED = False
# Every module that registers something. Later issues append to this list.
_MODULES = [
    "profond.data.vision",
    "profond.data.text",
    "profond.data.series",
    "profond.models.mlp",
    "profond.models.cnn",
    "profond.models.rnn",
    "profond.models.seq2seq",
    "profond.models.attention",
    "profond.models.transformer",
    "profond.methods.classification",
    "profond.models.ae",
    "profond.metrics.features",
    "profond.models.vqvae",
    "profond.methods.autoencoder",
    "profond.methods.vae",
    "profond.methods.vqvae",
    "profond.models.gan",
    "profond.methods.gan",
    "profond.models.unet",
    "profond.methods.img2img",
    "profond.models.diffusion",
    "profond.methods.diffusion",
    "profond.models.flow",
    "profond.methods.flow",
    "profond.models.pixelcnn",
    "profond.methods.autoregressive",
    "profond.methods.sequence",
    "profond.methods.seq2seq",
    "profond.methods.mlm",
    "profond.methods.pretrained",
    "profond.methods.forecast",
    "profond.experiments",
]


def load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in _MODULES:
        importlib.import_module(mod)


MODELS = Registry("model")
DATASETS = Registry("dataset")
METHODS = Registry("method")
EXPERIMENTS = Registry("experiment")
