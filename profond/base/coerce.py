"""Checking a value against a type hint: the one place that writes "bad value for 'KEY'".

Values come from YAML files, ``--set`` overrides and builder keyword arguments, so they
are loosely typed (YAML reads ``1e-3`` as a string, ``2.0`` may mean ``2``).
:func:`coerce` turns one into what its annotation says, or raises
:class:`~profond.errors.ConfigError` naming the key, the value and what was expected:

* ``bool``, ``int`` (``2.0`` -> ``2``), ``float`` (``"1e-3"`` -> ``0.001``), ``str``;
* ``X | None`` and other unions: the first member that accepts the value;
* ``list[X]`` and ``tuple[X, ...]`` (given back as lists, as YAML writes them; a bare
  string is a one-element list: ``--set data.augment=flip``), ``tuple[X, Y, Z]``
  (exactly three items, given back as a tuple), ``dict[K, V]`` (values checked as ``KEY.k``);
  list and tuple items are checked as ``KEY[i]``;
* ``Literal["a", "b"]``: one of the choices, see :func:`check_choice`;
* ``Annotated[X, Range(1)]``: a number in a range (:data:`PosInt`, :data:`NonNegInt`,
  :data:`Prob` are the common ones; NaN and, unless the range says otherwise, infinities are
  refused); a string in ``Annotated`` is a note added to the error message, e.g. what the
  numbers mean (what ``0`` means) and an example;
* anything else (``Any``, a class, a callable) passes unchanged.
"""

from __future__ import annotations

import math
import numbers
import os
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from ..errors import ConfigError

__all__ = ["Range", "PosInt", "NonNegInt", "Prob", "Seed", "coerce", "check_choice"]


@dataclass(frozen=True)
class Range:
    """``Annotated[int, Range(1)]``: a number ``>= lo`` and ``<= hi`` (``>`` / ``<`` if open).

    NaN is never in a range; infinities are refused too unless ``finite=False`` (no config
    value means anything at infinity, and ``inf`` slips past a one-sided bound).
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    finite: bool = True

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi}"
        return f"in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"

    def check(self, value: float, key: str) -> None:
        if isinstance(value, float) and (math.isnan(value) or (self.finite and math.isinf(value))):
            bound = f" {self}" if self.lo is not None or self.hi is not None else ""
            raise ConfigError(f"bad value for {key!r}: {value!r}; must be a finite number{bound}.")
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low or high:
            raise ConfigError(f"bad value for {key!r}: {value!r}; must be {self}.")


#: an integer >= 1 (a width, a count, a size)
PosInt = Annotated[int, Range(1)]
#: an integer >= 0
NonNegInt = Annotated[int, Range(0)]
#: a probability in [0, 1), 1 excluded (a dropout rate of 1 would drop everything)
Prob = Annotated[float, Range(0, 1, hi_open=True)]
#: a random seed (numpy's range)
Seed = Annotated[int, Range(0, 2**32 - 1)]


def _canon(value: object) -> str:
    return str(value).strip().lower().replace("-", "_")


def check_choice(value: Any, choices: tuple[Any, ...], key: str, *, exact: bool = False) -> Any:
    """``value`` if it is one of ``choices``, else ConfigError listing them.

    Unless ``exact``, strings match case-insensitively, ``-`` and ``_`` alike
    (``"Leaky-ReLU"`` is ``"leaky_relu"``), and the choice is returned as spelled in
    ``choices``: use the returned value.
    """
    if value in choices:
        return value
    if isinstance(value, str) and not exact:
        for c in choices:
            if isinstance(c, str) and _canon(c) == _canon(value):
                return c
    raise ConfigError(
        f"bad value for {key!r}: {value!r}. Valid values: {', '.join(str(c) for c in choices)}."
    )


def _with_note(message: str, note: str) -> str:
    return f"{message.removesuffix('.')} ({note})."


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``hint`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Annotated:
        inner, *meta = args
        try:
            value = coerce(value, inner, key)
            for m in meta:
                if isinstance(m, Range):
                    m.check(value, key)
        except ConfigError as e:
            notes = [m for m in meta if isinstance(m, str)]
            if not notes:
                raise
            raise ConfigError(_with_note(str(e), "; ".join(notes))) from None
        return value
    if origin is Literal:
        return check_choice(value, args, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, key)
            except ConfigError as e:
                errors.append((typing.get_origin(a) is Literal, str(e)))
        # the first error, or a Literal's, which lists the valid values
        best = next((m for lit, m in errors if lit), errors[0][1] if errors else None)
        raise ConfigError(best or f"bad value for {key!r}: {value!r}.")
    if origin in (list, tuple):
        fixed = origin is tuple and Ellipsis not in args and len(args) > 0
        if isinstance(value, str) and not fixed:
            value = [value]  # `--set data.augment=flip` means [flip]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"bad value for {key!r}: expected a list, got {value!r}.")
        if fixed:
            if len(value) != len(args):
                raise ConfigError(
                    f"bad value for {key!r}: expected {len(args)} values, got {list(value)!r}."
                )
            items = zip(value, args, strict=True)
            return tuple(coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(items))
        inner = args[0] if args else Any
        return [coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"bad value for {key!r}: expected a mapping like {{a: 1}}, got {value!r}.")
        inner = args[1] if len(args) == 2 else Any
        return {k: coerce(v, inner, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"bad value for {key!r}: expected true or false, got {value!r}.")
    if hint is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"bad value for {key!r}: expected an integer, got {value!r}.")
    if hint is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # yaml reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"bad value for {key!r}: expected a number, got {value!r}.")
    if hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        raise ConfigError(f"bad value for {key!r}: expected a string, got {value!r}.")
    return value
