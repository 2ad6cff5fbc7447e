"""What every command shares: the Typer app, the consoles, the one-line user errors, the
options declared once, loading a run and asking its method for a capability, and rendering
what a capability returns."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import ProfondError

app = typer.Typer(
    name="profond",
    help="profond: the deep-learning course, runnable. Train, evaluate and reproduce every "
    "experiment offline.\n\nExamples:\n\n  profond train mlp --epochs 5\n\n  profond train --recipe "
    "fmnist-cnn-fast\n\n  profond eval runs/mlp-fashion-mnist-... --json\n\n  profond sample runs/vae-... --n 64"
    "\n\n  profond list models\n\n  profond course 9",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

# -- options declared once -------------------------------------------------------------------
CHECKPOINTS = ("last", "best")
CheckpointOpt = Annotated[str, typer.Option("--checkpoint", help="last or best.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda.")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Root holding one folder per dataset.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")]


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ProfondError into a one-line message and exit code 2; so too an OSError of the
    filesystem about a named path (a full or read-only disk, no permission, a file where a
    folder should be, a name too long: :data:`profond.base.io.FS_ERROR_FIXES`), which the
    user fixes, not the program. Any other exception stays a traceback (a bug)."""
    from ..base.io import FS_ERROR_FIXES, os_error_message

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProfondError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            if e.filename is None or e.errno not in FS_ERROR_FIXES:
                raise
            err.print(f"[red]error:[/red] {escape(os_error_message(e))}", highlight=False, markup=True,
                      soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted.")
            raise typer.Exit(130) from None

    return wrapper


def examples(*lines: str) -> str:
    """The epilog of a command's --help: its example command lines."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)


def show(text: str, *, stderr: bool = False) -> None:
    """Print user text as it is (no console markup, no highlighting)."""
    (err if stderr else out).print(text, markup=False, highlight=False, soft_wrap=True)


# -- runs and their methods ------------------------------------------------------------------
def check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in CHECKPOINTS:
        raise ProfondError(f"--checkpoint {checkpoint!r}: use last or best.")


def set_data_dir(data_dir: str | None) -> None:
    if data_dir:
        os.environ["PROFOND_DATA"] = data_dir


def method_class(run_dir: Path) -> tuple[Any, type]:
    """The resolved config of a run folder and its method's class (nothing built yet)."""
    from .. import config as C
    from ..registry import METHODS

    if not (run_dir / "config.yaml").is_file():
        raise ProfondError(f"{run_dir}: no config.yaml there; pass a run folder made by `profond train`.")
    cfg = C.resolve_method(C.RunConfig.load(run_dir / "config.yaml"))
    return cfg, METHODS.get(cfg.method.name)


def require(run_dir: Path, command: str, *capabilities: type) -> None:
    """Before anything is loaded: the run's method declares one of ``capabilities``, else a
    ProfondError saying what ``profond COMMAND`` needs."""
    from ..methods.capabilities import supports

    cfg, cls = method_class(run_dir)
    if not any(supports(cls, c) for c in capabilities):
        needs = " or ".join(c.needs for c in capabilities)
        raise ProfondError(f"{run_dir} is a {cfg.method.name!r} run ({cfg.model.name}); `profond {command}` needs "
                           f"{needs}.")


def load_method(run_dir: Path, *, checkpoint: str, device: str, data_dir: str | None = None) -> tuple[Any, Any]:
    """The run's method with its trained weights, and the evaluation trainer."""
    from ..train.loop import load_run

    check_checkpoint(checkpoint)
    set_data_dir(data_dir)
    return load_run(run_dir, checkpoint=checkpoint, device=device)


def no_capability(method: Any, command: str, *capabilities: type, hint: str = "") -> ProfondError:
    """The error for a loaded method that lacks every one of ``capabilities``."""
    needs = " or ".join(c.needs for c in capabilities)
    return ProfondError(f"method {method.cfg.method.name!r} ({method.cfg.model.name}): `profond {command}` needs "
                        f"{needs}{hint}.")


SamplerOpt = Annotated[str | None, typer.Option(
    "--sampler", help="Diffusion / flow runs: ddpm or ddim (diffusion), euler or heun (flow matching); "
    "default: the run's.")]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Diffusion / flow runs: sampling steps S "
                                              "(network calls; DDPM/DDIM: 1..T).")]
EtaOpt = Annotated[float | None, typer.Option("--eta", help="DDIM: η in [0, 1] (0: deterministic, 1: DDPM's "
                                              "variance).")]
GuidanceOpt = Annotated[float | None, typer.Option("--guidance", help="Class-conditional diffusion: guidance "
                                                   "scale w >= 0 of (1 + w) ε(x, c) − w ε(x, ∅).")]


def apply_sampler(method: Any, request: Any, command: str) -> dict[str, Any] | None:
    """Hand the sampler flags to a method that chooses its sampler; refuse them (naming the
    flag) on a run that has a single way of sampling. Returns the resolved settings."""
    from ..methods.capabilities import ChoosesSampler, supports

    if supports(method, ChoosesSampler):
        return method.use_sampler(request)
    if request.given():
        flag = request.given()[0]
        raise ProfondError(f"{flag} is for diffusion / flow-matching runs; method {method.cfg.method.name!r} samples "
                           f"in one network call: drop {flag} (`profond {command} RUN`).")
    return None


# -- output ----------------------------------------------------------------------------------
def rich_table(t: Any) -> Table:
    """A capability's :class:`~profond.methods.capabilities.Table` as a rich table."""
    table = Table(title=escape(t.title))
    for i, col in enumerate(t.columns):
        table.add_column(escape(col), justify="left" if i == 0 else "right")
    for row in t.rows:
        table.add_row(*(escape(str(c)) for c in row))
    return table


def render(art: Any) -> None:
    """Print what a capability returned: tables and lines, then the files written (stdout),
    notes (stderr)."""
    for note in art.notes:
        show(note, stderr=True)
    for t in art.tables:
        out.print(rich_table(t))
    for line in art.lines:
        show(line)
    for f in art.files:
        show(str(f))


def jsonable(v: Any) -> Any:
    """Plain JSON values from tensors / numpy scalars and arrays nested in dicts and lists."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "tolist"):  # torch.Tensor, numpy array or scalar
        return jsonable(v.tolist())
    if isinstance(v, Path):
        return str(v)
    return v


def write_json_or_table(path: Path, data: dict[str, Any], as_json: bool, title: str) -> Table | None:
    """Write ``data`` to ``path``; print it as one JSON object (None) or return an empty
    two-column table to fill."""
    from ..base.io import atomic_write_json

    atomic_write_json(path, data)
    if as_json:
        sys.stdout.write(json.dumps(data) + "\n")
        return None
    t = Table(title=escape(title))
    t.add_column("metric")
    t.add_column("value", justify="right")
    return t
