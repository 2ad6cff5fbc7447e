"""Registered builders are checked against their annotations (profond.registry, profond.base.coerce)."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest

from profond.base.coerce import NonNegInt, PosInt, Prob, Range, check_choice, coerce
from profond.errors import ConfigError
from profond.registry import Registry

TOYS = Registry("toy")


@TOYS.register("toy", help="a builder with one argument of each kind")
def toy(
    width: PosInt = 8,
    depth: NonNegInt = 0,
    dropout: Prob = 0.0,
    lr: Annotated[float, Range(0, lo_open=True), "the learning rate, e.g. 1e-3"] = 1e-3,
    act: Literal["relu", "leaky_relu", "gelu"] = "relu",
    widths: list[PosInt] = [4],  # noqa: B006 (read only)
    shape: tuple[PosInt, PosInt] = (2, 3),
    bias: bool = True,
    label: str | None = None,
) -> dict:
    return dict(locals())


def test_values_are_converted_to_their_annotation():
    out = TOYS.build("toy", width=4.0, dropout=0, lr="1e-2", widths=(5, 6.0), shape=[7, 8])
    assert out["width"] == 4 and type(out["width"]) is int
    assert out["dropout"] == 0.0 and type(out["dropout"]) is float
    assert out["lr"] == pytest.approx(0.01)
    assert out["widths"] == [5, 6] and all(type(w) is int for w in out["widths"])
    assert out["shape"] == (7, 8)
    assert out["label"] is None and TOYS.build("toy", label=3)["label"] == "3"


def test_literal_choice_error_lists_the_valid_values():
    with pytest.raises(ConfigError) as e:
        TOYS.build("toy", act="swish")
    assert str(e.value) == "bad value for 'toy.act': 'swish'. Valid values: relu, leaky_relu, gelu."
    # case and -/_ do not matter; the canonical spelling is passed on
    assert TOYS.build("toy", act="Leaky-ReLU")["act"] == "leaky_relu"


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 0}, "bad value for 'toy.width': 0; must be >= 1."),
    ({"depth": -1}, "bad value for 'toy.depth': -1; must be >= 0."),
    ({"dropout": 1.0}, "bad value for 'toy.dropout': 1.0; must be in [0, 1)."),
    ({"lr": 0}, "bad value for 'toy.lr': 0.0; must be > 0 (the learning rate, e.g. 1e-3)."),
    ({"width": 1.5}, "bad value for 'toy.width': expected an integer, got 1.5."),
    ({"width": True}, "bad value for 'toy.width': expected an integer, got True."),
    ({"bias": "yes"}, "bad value for 'toy.bias': expected true or false, got 'yes'."),
    ({"widths": 4}, "bad value for 'toy.widths': expected a list, got 4."),
    ({"widths": [4, 0]}, "bad value for 'toy.widths[1]': 0; must be >= 1."),
    ({"shape": [1, 2, 3]}, "bad value for 'toy.shape': expected 2 values, got [1, 2, 3]."),
])
def test_bad_values_name_the_key_and_the_rule(kwargs, message):
    with pytest.raises(ConfigError) as e:
        TOYS.build("toy", **kwargs)
    assert str(e.value) == message


def test_direct_calls_are_checked_too():
    assert toy(3, act="gelu")["width"] == 3
    with pytest.raises(ConfigError, match="toy.width"):
        toy(0)
    assert TOYS.get("toy") is toy


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        TOYS.build("toy", widht=3)
    assert "toy 'toy' has no option 'widht'" in str(e.value) and "width" in str(e.value)


def test_defaults_are_not_checked_and_signature_is_the_builders():
    import inspect

    assert list(inspect.signature(toy).parameters)[:2] == ["width", "depth"]
    assert TOYS.build("toy")["widths"] == [4]


def test_coerce_and_check_choice_directly():
    assert coerce(None, int | None, "k") is None
    assert coerce("flip", list[str], "k") == ["flip"]  # `--set data.augment=flip`
    # in a union, a Literal's error (it lists the valid values) wins over the others
    with pytest.raises(ConfigError, match="Valid values: all, none"):
        coerce("some", bool | Literal["all", "none"], "k")
    assert check_choice("LSTM", ("rnn", "lstm"), "kind") == "lstm"
    with pytest.raises(ConfigError, match="Valid values: rnn, lstm"):
        check_choice("LSTM", ("rnn", "lstm"), "kind", exact=True)
