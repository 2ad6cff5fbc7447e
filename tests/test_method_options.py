"""Every option of every registered method (``cfg.method.args``, the method's ``Options``
dataclass) declares its type, its choices (``Literal``) and, if it is a number, its range
(``Annotated[..., Range(...)]``): ``Method.parse_options`` then refuses a bad value with the one
message format ``bad value for 'method.KEY': ...`` before any data is loaded.

The walk over ``METHODS`` fails for a numeric option without a range, so an option added later
without one is caught here. The checks that relate several options or the data (kept in the
methods) are tested on sklearn digits at the end.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Annotated, Any, Literal

import pytest

from profond.base.coerce import Range
from profond.config import resolve
from profond.errors import ConfigError
from profond.registry import METHODS, load_all
from tests.conftest import digits_cfg

load_all()

#: ``str`` options that are free text, not a choice (none today): every other one is a Literal
#: plain-str options that hold free text (a run folder), not a choice
FREE_TEXT: set[tuple[str, str]] = {("diffusion", "autoencoder")}


def _unwrap(hint: Any) -> tuple[Any, list[Range], bool]:
    """``(base type, its Ranges, whether None is allowed)`` of an option's annotation."""
    nullable = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(members) < len(typing.get_args(hint))
        assert len(members) == 1, f"an option is one type (or null), not {hint}"
        hint = members[0]
    ranges: list[Range] = []
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
        ranges = [m for m in meta if isinstance(m, Range)]
    return hint, ranges, nullable


def _options() -> list[tuple[str, str, Any, Any]]:
    """``(method name, option name, annotation, default)`` of every registered method's options."""
    rows = []
    for name in METHODS.names():
        opts = METHODS.get(name).Options
        assert dataclasses.is_dataclass(opts), f"{name}.Options is not a dataclass"
        hints = typing.get_type_hints(opts, include_extras=True)
        for f in dataclasses.fields(opts):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((name, f.name, hints[f.name], default))
    return rows


OPTIONS = _options()
NUMERIC = [r for r in OPTIONS if _unwrap(r[2])[0] in (int, float)]
CHOICES = [r for r in OPTIONS if typing.get_origin(_unwrap(r[2])[0]) is Literal]


def _ids(rows: list[tuple[str, str, Any, Any]]) -> list[str]:
    return [f"{m}.{k}" for m, k, *_ in rows]


def parse(method: str, *items: str) -> Any:
    """The options of ``method`` for ``--set method.ITEM`` overrides (nothing built, no data)."""
    cfg = resolve(overrides=[f"method.name={method}", *(f"method.{i}" for i in items)])
    return METHODS.get(method).parse_options(cfg)


def bad_values(base: type, ranges: list[Range]) -> list[str]:
    """Overrides just outside each range, NaN and the infinities (as YAML and as plain words)."""
    out = [".nan", "nan", ".inf", "-.inf", "inf", "-inf"]
    for r in ranges:
        if r.lo is not None:
            out.append(repr(r.lo if r.lo_open else r.lo - (1 if base is int else 0.5)))
        if r.hi is not None:
            out.append(repr(r.hi if r.hi_open else r.hi + (1 if base is int else 0.5)))
    if base is int:
        out.append("2.5")
    return out


# ----------------------------------------------------------------------------------------
# the walk: declarations


def test_the_walk_sees_every_method_and_their_numbers():
    assert {"autoencoder", "classifier", "gan", "pix2pix", "srgan", "cyclegan", "seq2seq",
            "text-classifier", "char-lm", "vae", "vqvae", "forecaster"} <= set(METHODS.names())
    names = set(_ids(NUMERIC))
    assert {"gan.n_critic", "vae.eval_seed", "pix2pix.test_n", "srgan.scale", "seq2seq.length_penalty",
            "text-classifier.bpe_vocab", "autoencoder.noise_level"} <= names
    assert {"gan.loss", "vae.likelihood", "forecaster.strategy", "seq2seq.direction"} <= set(_ids(CHOICES))


@pytest.mark.parametrize("method, key, hint, default", OPTIONS, ids=_ids(OPTIONS))
def test_every_option_declares_its_range_or_choices(method, key, hint, default):
    base, ranges, nullable = _unwrap(hint)
    if base in (int, float):
        assert ranges, (f"method {method!r}: numeric option {key!r} has no declared range; annotate it, "
                        f"e.g. Annotated[{base.__name__}, Range(0)] (profond.base.coerce)")
    if base is str:
        assert (method, key) in FREE_TEXT, (f"method {method!r}: option {key!r} is a plain str; write its "
                                           "choices as Literal[...] (or list it in FREE_TEXT)")
    # the default itself is valid, and a None default is declared as such
    assert default is not None or nullable, f"{method}.{key}: default None but the type has no None"


# ----------------------------------------------------------------------------------------
# the walk: values through resolve + parse_options


@pytest.mark.parametrize("method, key, hint, default", NUMERIC, ids=_ids(NUMERIC))
def test_out_of_range_nan_and_inf_are_refused(method, key, hint, default):
    base, ranges, _ = _unwrap(hint)
    for value in bad_values(base, ranges):
        with pytest.raises(ConfigError, match=rf"^bad value for 'method\.{re.escape(key)}': "):
            parse(method, f"{key}={value}")


@pytest.mark.parametrize("method, key, hint, default", NUMERIC, ids=_ids(NUMERIC))
def test_defaults_bounds_and_null_are_accepted(method, key, hint, default):
    """The refusals above come from the ranges, not from something else: the default, every
    closed bound and (for a nullable option) null go through, stored with the declared type."""
    base, ranges, nullable = _unwrap(hint)
    if default is not None:
        assert getattr(parse(method, f"{key}={default!r}"), key) == default
    for r in ranges:
        for bound, is_open in ((r.lo, r.lo_open), (r.hi, r.hi_open)):
            if bound is not None and not is_open:
                got = getattr(parse(method, f"{key}={bound!r}"), key)
                assert got == bound and type(got) is base
    if nullable:
        assert getattr(parse(method, f"{key}=null"), key) is None


@pytest.mark.parametrize("method, key, hint, default", CHOICES, ids=_ids(CHOICES))
def test_choice_options_take_their_choices_only(method, key, hint, default):
    choices = typing.get_args(_unwrap(hint)[0])
    assert default in choices
    for c in choices:
        assert getattr(parse(method, f"{key}={c}"), key) == c
    with pytest.raises(ConfigError, match=rf"'method\.{re.escape(key)}': 'no-such-choice'\. Valid values: "
                                          + re.escape(", ".join(choices))):
        parse(method, f"{key}=no-such-choice")


def test_choices_are_spelled_back_as_declared():
    assert parse("autoencoder", "noise=Salt_Pepper").noise == "salt-pepper"
    assert parse("gan", "loss=Non_Saturating").loss == "non-saturating"


def test_choice_sets_equal_the_tuples_the_code_uses():
    """Literal choice sets that mirror a tuple elsewhere cannot drift from it."""
    from profond.data.text import DIRECTIONS
    from profond.methods.forecast import STRATEGIES
    from profond.methods.gan_losses import LOSSES
    from profond.metrics.features import FEATURE_NETS

    def choices(method: str, key: str) -> tuple[Any, ...]:
        hint = typing.get_type_hints(METHODS.get(method).Options, include_extras=True)[key]
        return typing.get_args(_unwrap(hint)[0])

    for method in ("gan", "pix2pix", "srgan", "cyclegan"):
        assert choices(method, "loss") == LOSSES, method
    assert choices("gan", "eval_features") == FEATURE_NETS
    assert choices("seq2seq", "direction") == DIRECTIONS
    assert choices("forecaster", "strategy") == STRATEGIES


@pytest.mark.parametrize("method, item", [
    ("autoencoder", "eval_seed=-1"), ("autoencoder", "contractive=.nan"), ("autoencoder", "l1_code=.inf"),
    ("autoencoder", "noise_level=-.inf"), ("autoencoder", "kl_sparsity=nan"), ("classifier", "l1=.inf"),
    ("gan", "grid_seed=-5"), ("gan", "eval_seed=4294967296"), ("gan", "gp_weight=.nan"), ("gan", "clip=.inf"),
    ("pix2pix", "test_n=0"), ("pix2pix", "test_n=-3"), ("pix2pix", "d_base=0"), ("pix2pix", "d_layers=0"),
    ("pix2pix", "l1_weight=.inf"), ("pix2pix", "adv_weight=.nan"), ("srgan", "test_n=0"), ("srgan", "d_layers=0"),
    ("srgan", "scale=16"), ("srgan", "pixel_weight=.nan"), ("cyclegan", "d_base=0"),
    ("cyclegan", "cycle_weight=.inf"), ("seq2seq", "length_penalty=-0.5"), ("seq2seq", "length_penalty=.nan"),
    ("text-classifier", "bpe_vocab=100"), ("vae", "eval_seed=-1"), ("vae", "sigma=.inf"),
    ("vae", "beta=.nan"), ("vae", "free_bits=.inf"),
])
def test_the_reported_gaps_are_closed(method, item):
    """The unchecked options of the review (issue 13): each now refused by its annotation."""
    key = item.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^bad value for 'method\.{key}': "):
        parse(method, item)


def test_the_message_says_the_range_and_what_the_numbers_mean():
    with pytest.raises(ConfigError) as e:
        parse("gan", "n_critic=0")
    assert str(e.value) == "bad value for 'method.n_critic': 0; must be >= 1 (1: alternate D and G)."
    with pytest.raises(ConfigError) as e:
        parse("vae", "sigma=nan")
    assert str(e.value) == ("bad value for 'method.sigma': nan; must be a finite number > 0 "
                            "(a standard deviation).")
    with pytest.raises(ConfigError, match=r"'method\.bpe_vocab': 260; must be >= 261"):
        parse("text-classifier", "tokenizer=char", "bpe_vocab=260")  # whatever the tokenizer


# ----------------------------------------------------------------------------------------
# the checks the methods keep (several options, or the data): sklearn digits, 8x8, no training


def _cpu():
    import torch

    from profond.contract import Env

    return Env(torch.device("cpu"))


def test_salt_and_pepper_noise_level_is_a_fraction_but_gaussian_sigma_is_not(tmp_path):
    from profond.methods.autoencoder import AutoencoderMethod

    ae = ("model.name=ae", "model.hidden=[16]", "model.latent_dim=4", "method.name=autoencoder")
    with pytest.raises(ConfigError, match=r"'method\.noise_level': 1\.5; a salt-and-pepper fraction"):
        AutoencoderMethod(digits_cfg(tmp_path, *ae, "method.noise=salt-pepper", "method.noise_level=1.5"),
                          _cpu(), with_data=False)
    m = AutoencoderMethod(digits_cfg(tmp_path, *ae, "method.noise=gaussian", "method.noise_level=1.5"),
                          _cpu(), with_data=False)
    assert m.opts.noise_level == 1.5
    with pytest.raises(ConfigError, match=r"'method\.normal_class': 10; the dataset 'digits' has classes 0\.\.9"):
        AutoencoderMethod(digits_cfg(tmp_path, *ae, "method.normal_class=10"), _cpu(), with_data=False)


def test_one_class_error_names_the_validation_size_actually_used(tmp_path):
    """``data.val_size`` left at null: the message gives the size the split used (a tenth)."""
    import torch

    from profond.methods.autoencoder import AutoencoderMethod

    ae = ("model.name=ae", "model.hidden=[16]", "model.latent_dim=4", "method.name=autoencoder",
          "method.normal_class=1")
    from profond.data import train_val_split

    m = AutoencoderMethod(digits_cfg(tmp_path, *ae, "data.val_size=null"), _cpu(), with_data=False)
    x = m.data.train_x[:40]
    idx = torch.arange(40)
    _, _, val_idx, _ = train_val_split(idx, idx, 4, seed=m.cfg.train.seed)  # the split the method makes
    y = torch.ones(40, dtype=m.data.train_y.dtype)
    y[val_idx] = 0  # class 1 in training only: the 4 validation images hold none
    with pytest.raises(ConfigError) as e:
        m.build_loaders(x, y)
    msg = str(e.value)
    assert "data.val_size=null (4 images: a tenth of the training set, at most 5000)" in msg
    assert "holds none of class 1" in msg and "None" not in msg
    m = AutoencoderMethod(digits_cfg(tmp_path, *ae, "data.val_size=0"), _cpu(), with_data=False)
    with pytest.raises(ConfigError, match=r"data\.val_size=0 holds none of class 1: raise data\.val_size"):
        m.build_loaders()


def test_gan_eval_n_of_one_is_refused(tmp_path):
    from profond.methods.gan import GANMethod

    GANMethod.check_options(parse("gan", "eval_n=0"))
    GANMethod.check_options(parse("gan", "eval_n=2"))
    with pytest.raises(ConfigError, match="eval_n=1"):
        GANMethod.check_options(parse("gan", "eval_n=1"))


@pytest.mark.parametrize("method, extra", [
    ("pix2pix", ("model.name=unet", "model.base=8", "method.d_base=8")),
    ("srgan", ("model.name=srnet", "model.width=8", "model.blocks=1", "method.d_base=8",
               "method.feature_weight=0")),
    ("cyclegan", ("model.name=unet", "model.base=8", "method.d_base=8", "method.domain_a=0",
                  "method.domain_b=1")),
])
def test_patchgan_layers_must_leave_one_logit(tmp_path, method, extra):
    """Each PatchGAN layer halves the image: 8x8 digits allow 3 layers, not 4 (a conv error
    deep in the first training step before)."""
    cls = METHODS.get(method)
    m = cls(digits_cfg(tmp_path, f"method.name={method}", *extra, "method.d_layers=3"), _cpu(), with_data=False)
    d = next(v for k, v in m.nets.items() if k.startswith("D"))
    import torch

    assert d(*([torch.zeros(2, 1, 8, 8)] * (2 if method == "pix2pix" else 1))).shape[-2:] == (1, 1)
    with pytest.raises(ConfigError, match=r"'method\.d_layers': 4; .* 8x8 images allow at most 3"):
        cls(digits_cfg(tmp_path, f"method.name={method}", *extra, "method.d_layers=4"), _cpu(), with_data=False)


def test_cyclegan_domains_are_two_classes_of_the_data(tmp_path):
    from profond.methods.img2img import CycleGANMethod

    cg = ("model.name=unet", "model.base=8", "method.name=cyclegan", "method.d_base=8")
    with pytest.raises(ConfigError, match=r"'method\.domain_a': -1; must be >= 0"):
        parse("cyclegan", "domain_a=-1")
    for bad in ("method.domain_a=10", "method.domain_a=3 method.domain_b=3"):
        with pytest.raises(ConfigError, match="domain_a / domain_b must be two different classes in 0..9"):
            CycleGANMethod(digits_cfg(tmp_path, *cg, *bad.split()), _cpu(), with_data=False)
    assert math.isfinite(CycleGANMethod(digits_cfg(tmp_path, *cg, "method.domain_a=0", "method.domain_b=1"),
                                        _cpu(), with_data=False).opts.cycle_weight)
