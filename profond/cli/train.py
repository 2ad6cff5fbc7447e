"""``profond train``: a run from a model, a recipe or a config file, or the resumption of one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import ProfondError
from .common import DataDirOpt, app, examples, user_errors


@app.command(epilog=examples(
    "profond train mlp --epochs 5",
    "profond train mlp --set model.widths=[512,256] --set optim.lr=3e-4",
    "profond train --recipe fmnist-cnn-fast",
    "profond train resnet --dataset cifar10 --set train.precision=bf16",
    "profond train --resume runs/mlp-fashion-mnist-20261122-101500",
    "torchrun --nproc_per_node 2 -m profond train mlp   (DDP)"))
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
    resume: Path = typer.Option(None, "--resume", help="Resume the run in this folder from its last checkpoint; --epochs/--lr/--set may change "
                                "its length, LR, schedule, logging (not its model, data or optimizer)."),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    seed: int = typer.Option(None, "--seed", help="Random seed (the run is reproducible from its config)."),
    data_dir: DataDirOpt = None,
    precision: str = typer.Option(None, "--precision", help="fp32, bf16 or fp16 (CUDA)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-epoch lines."),
) -> None:
    """Train a model: writes config.yaml, metrics.csv, TensorBoard events, checkpoints/, curves.png and summary.json."""
    from .. import config as C
    from ..train import train as run_train

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
        from ..train.resume import check_run

        # before anything is built, locked or written: the checkpoint's metadata, and the
        # changes a resume may make (applied and recorded) or not (refused, exit 2)
        check_run(resume, cfg)
        _exit_status(run_train(cfg, run_dir=resume, resume=True))
        return
    if model is None and recipe is None and config is None:
        raise ProfondError("name a model (e.g. `profond train mlp`), a --recipe or a --config; "
                           "see `profond list models` and `profond list recipes`.")
    if model is not None:
        from ..registry import MODELS

        MODELS.get(model)  # unknown name -> clear error before anything else
    cfg = C.resolve(recipe=recipe, config_file=str(config) if config else None, flags=flags, overrides=overrides)
    _exit_status(run_train(cfg))


def _exit_status(result: Any) -> None:
    """An interrupted run (Ctrl-C, checkpoint saved) exits with 130, like the shell does."""
    if result.summary.get("status") == "interrupted":
        raise typer.Exit(130)
