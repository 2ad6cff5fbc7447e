"""The ``profond`` command line: train, eval, list, experiment.

Every user error (unknown name, bad override, missing data) prints one line naming the
problem and the fix, and exits with code 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .errors import ProfondError

app = typer.Typer(
    name="profond",
    help="profond: the deep-learning course, runnable. Train, evaluate and reproduce every "
    "experiment offline.\n\nExamples:\n\n  profond train mlp --epochs 5\n\n  profond train --recipe "
    "fmnist-cnn-fast\n\n  profond eval runs/mlp-fashion-mnist-... --json\n\n  profond list models",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ProfondError into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProfondError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted.")
            raise typer.Exit(130) from None

    return wrapper


@app.command(epilog="Examples:\n\n"
             "  profond train mlp --epochs 5\n\n"
             "  profond train mlp --set model.widths=[512,256] --set optim.lr=3e-4\n\n"
             "  profond train --recipe fmnist-cnn-fast\n\n"
             "  profond train resnet --dataset cifar10 --set train.precision=bf16\n\n"
             "  profond train --resume runs/mlp-fashion-mnist-20261122-101500\n\n"
             "  torchrun --nproc_per_node 2 -m profond train mlp   (DDP)")
@user_errors
def train(
    model: str = typer.Argument(None, help="Model name (see `profond list models`); optional with --recipe/--resume."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Dataset name (default fashion-mnist)."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Number of epochs."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Global batch size."),
    lr: float = typer.Option(None, "--lr", help="Learning rate (optim.lr)."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Override a config key: section.key=value (repeatable)."),
    config: Path = typer.Option(None, "--config", "-c", help="YAML config file."),
    recipe: str = typer.Option(None, "--recipe", "-r", help="Named recipe (see `profond list recipes`)."),
    out_dir: str = typer.Option(None, "--out", "-o", help="Parent folder of run folders (default runs/)."),
    name: str = typer.Option(None, "--name", help="Run folder name (default MODEL-DATASET-TIMESTAMP)."),
    resume: Path = typer.Option(None, "--resume", help="Resume the run in this folder from its last checkpoint."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(None, "--seed", help="Random seed (the run is reproducible from its config)."),
    data_dir: str = typer.Option(None, "--data-dir", help="Root holding one folder per dataset."),
    precision: str = typer.Option(None, "--precision", help="fp32, bf16 or fp16 (CUDA)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines."),
) -> None:
    """Train a model: writes config.yaml, metrics.csv, TensorBoard events, checkpoints/, curves.png and summary.json."""
    from . import config as C
    from .train import train as run_train

    flags = {
        "model.name": model, "data.name": dataset, "train.epochs": epochs, "data.batch_size": batch_size,
        "optim.lr": lr, "out": out_dir, "name": name, "train.device": device, "train.seed": seed,
        "data.data_dir": data_dir, "train.precision": precision, "train.quiet": quiet or None,
    }
    if resume is not None:
        if not (resume / "config.yaml").is_file():
            raise ProfondError(f"--resume {resume}: no config.yaml there; pass a run folder made by `profond train`.")
        if model or recipe or config:
            raise ProfondError("--resume takes the run's own config; drop MODEL/--recipe/--config "
                               "(use --epochs or --set to change it).")
        cfg = C.RunConfig.load(resume / "config.yaml")
        for key, value in flags.items():
            if value is not None and key not in ("out", "name"):
                C.set_key(cfg, key, value)
        C.apply_overrides(cfg, overrides)
        C.resolve_method(cfg)
        C.validate(cfg)
        _exit_status(run_train(cfg, run_dir=resume, resume=True))
        return
    if model is None and recipe is None and config is None:
        raise ProfondError("name a model (e.g. `profond train mlp`), a --recipe or a --config; "
                           "see `profond list models` and `profond list recipes`.")
    if model is not None:
        from .registry import MODELS

        MODELS.get(model)  # unknown name -> clear error before anything else
    cfg = C.resolve(recipe=recipe, config_file=str(config) if config else None, flags=flags, overrides=overrides)
    _exit_status(run_train(cfg))


def _exit_status(result: Any) -> None:
    """An interrupted run (Ctrl-C, checkpoint saved) exits with 130, like the shell does."""
    if result.summary.get("status") == "interrupted":
        raise typer.Exit(130)


@app.command("eval", epilog="Examples:\n\n  profond eval runs/mlp-fashion-mnist-20261122-101500\n\n"
             "  profond eval RUN_DIR --json --checkpoint best")
@user_errors
def eval_(
    run_dir: Path = typer.Argument(..., help="A run folder made by `profond train`."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy, loss, per-class accuracy, ...)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or best."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    data_dir: str = typer.Option(None, "--data-dir", help="Root holding one folder per dataset."),
) -> None:
    """Evaluate a trained run on its test set: accuracy, loss, per-class accuracy and confusion-matrix PNG."""
    from .train.loop import load_run
    from .viz.curves import plot_confusion

    if checkpoint not in ("last", "best"):
        raise ProfondError(f"--checkpoint {checkpoint!r}: use last or best.")
    if data_dir:
        import os

        os.environ["PROFOND_DATA"] = data_dir
    method, trainer = load_run(run_dir, checkpoint=checkpoint, device=device)
    test = method.test_data()
    if test is None:
        raise ProfondError(f"method {trainer.cfg.method.name!r} has no test set to evaluate.")
    metrics = trainer.evaluate(test, detailed=True)
    metrics["checkpoint"] = str(trainer.checkpoint_path)
    classes = getattr(method, "classes", None)
    if "confusion_matrix" in metrics and classes:
        png = plot_confusion(metrics["confusion_matrix"], classes, Path(run_dir) / "confusion.png",
                             title=f"{run_dir.name}: test accuracy {metrics['accuracy']:.4f}")
        metrics["confusion_png"] = str(png)
    from .train.io import atomic_write_json

    atomic_write_json(Path(run_dir) / "eval.json", metrics)
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
        return
    t = Table(title=f"{run_dir}  ({Path(metrics['checkpoint']).name})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in ("accuracy", "loss", "examples"):
        if k in metrics:
            t.add_row(k, f"{metrics[k]:.4f}" if isinstance(metrics[k], float) else str(metrics[k]))
    for c, a in metrics.get("per_class_accuracy", {}).items():
        t.add_row(f"  {c}", f"{a:.4f}")
    out.print(t)
    if "confusion_png" in metrics:
        out.print(f"confusion matrix: {metrics['confusion_png']}")


LIST_KINDS = ("models", "datasets", "recipes", "experiments", "methods")


@app.command("list", epilog="Examples:\n\n  profond list\n\n  profond list models")
@user_errors
def list_(what: str = typer.Argument(None, help="models, datasets, recipes, experiments or methods (default: all).")) -> None:
    """List what can be named: models, datasets, recipes, experiments, methods."""
    from . import config as C
    from .registry import DATASETS, EXPERIMENTS, METHODS, MODELS, unknown_name_message

    if what is not None and what not in LIST_KINDS:
        raise ProfondError(unknown_name_message("list", what, list(LIST_KINDS), "kinds"))
    regs = {"models": MODELS, "datasets": DATASETS, "experiments": EXPERIMENTS, "methods": METHODS}
    for kind in [what] if what else LIST_KINDS:
        t = Table(title=kind, title_justify="left")
        t.add_column("name", style="bold")
        t.add_column("description")
        if kind == "recipes":
            for n in C.recipe_names():
                t.add_row(n, C.recipe_help(n))
        else:
            for e in regs[kind].entries():
                t.add_row(e.name, e.help)
        out.print(t)


@app.command(epilog="Examples:\n\n  profond experiment separable-conv --quick\n\n"
             "  profond experiment separable-conv --out results/sep")
@user_errors
def experiment(
    name: str = typer.Argument(..., help="Experiment name (see `profond list experiments`)."),
    quick: bool = typer.Option(False, "--quick", help="The small, CI-sized version (seconds)."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Output folder (default runs/experiments/NAME)."),
) -> None:
    """Run a course experiment: writes its table (CSV, Markdown) and figures (PNG) and prints the table."""
    from .experiments import run_experiment, to_markdown

    folder, result = run_experiment(name, quick=quick, out=out_dir)
    out.print(to_markdown(result.table), markup=False, highlight=False)
    if result.notes:
        out.print(result.notes, markup=False, highlight=False)
    for f in result.figures:
        out.print(f"figure: {f}")
    out.print(f"table: {folder / 'table.csv'}, {folder / 'table.md'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
