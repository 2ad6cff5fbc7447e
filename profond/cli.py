"""The ``profond`` command line: train, eval, sample, latent, generate, list, experiment.

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
    "fmnist-cnn-fast\n\n  profond eval runs/mlp-fashion-mnist-... --json\n\n  profond sample runs/vae-... --n 64"
    "\n\n  profond list models",
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


FEATURES = ("fmnist", "inception")


def _check_checkpoint(checkpoint: str) -> None:
    if checkpoint not in ("last", "best"):
        raise ProfondError(f"--checkpoint {checkpoint!r}: use last or best.")


def _set_data_dir(data_dir: str | None) -> None:
    if data_dir:
        import os

        os.environ["PROFOND_DATA"] = data_dir


def _run_config(run_dir: Path, methods: tuple[str, ...], command: str, needs: str) -> Any:
    """The resolved config of a ``profond train`` run folder whose method is one of ``methods``;
    a :class:`ProfondError` naming the fix otherwise (``needs``: what ``profond COMMAND`` wants)."""
    from . import config as C

    if not (run_dir / "config.yaml").is_file():
        raise ProfondError(f"{run_dir}: no config.yaml there; pass a run folder made by `profond train`.")
    cfg = C.resolve_method(C.RunConfig.load(run_dir / "config.yaml"))
    if cfg.method.name not in methods:
        raise ProfondError(f"{run_dir} is a {cfg.method.name!r} run ({cfg.model.name}); `profond {command}` needs "
                           f"{needs}.")
    return cfg


def _jsonable(v: Any) -> Any:
    """Plain JSON values from tensors / numpy scalars and arrays nested in dicts and lists."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):  # torch.Tensor, numpy array or scalar
        return _jsonable(v.tolist())
    if isinstance(v, Path):
        return str(v)
    return v


@app.command("eval", epilog="Examples:\n\n  profond eval runs/mlp-fashion-mnist-20261122-101500\n\n"
             "  profond eval RUN_DIR --json --checkpoint best\n\n"
             "  profond eval runs/vae-fashion-mnist-20261122-101500 --n 10000 --features fmnist\n\n"
             "  profond eval runs/ae-one-class --json   (anomaly run: ROC-AUC and roc.png)")
@user_errors
def eval_(
    run_dir: Path = typer.Argument(..., help="A run folder made by `profond train`."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy, loss, per-class accuracy, ...)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or best."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    data_dir: str = typer.Option(None, "--data-dir", help="Root holding one folder per dataset."),
    n: int = typer.Option(10000, "--n", help="Generative runs: samples drawn for FID/KID/IS/precision-recall "
                          "(0: likelihood metrics only)."),
    features: str = typer.Option("fmnist", "--features", help="Generative runs: feature network of the "
                                 "sample metrics, fmnist (offline, 28x28 grayscale) or inception."),
    seed: int = typer.Option(0, "--seed", help="Generative runs: seed of the samples."),
    batch_size: int = typer.Option(500, "--batch-size", help="Generative runs: sampling / feature batch size."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder for eval.json and figures (default: the run folder)."),
) -> None:
    """Evaluate a trained run on its test set and write eval.json.

    Classifiers: accuracy, loss, per-class accuracy and a confusion-matrix PNG. Generative runs
    (AE, VAE, VQ-VAE, ...): the method's test metrics (reconstruction, KL, ELBO, ...) and, when
    the model can sample, FID, KID, Inception Score, precision/recall and the class histogram of
    --n samples against the test images; anomaly runs also write roc.png.
    """
    from .train.loop import load_run
    from .viz.curves import plot_confusion

    _check_checkpoint(checkpoint)
    if features not in FEATURES:
        raise ProfondError(f"--features {features!r}: use one of {', '.join(FEATURES)}.")
    if n < 0 or batch_size < 1:
        raise ProfondError("--n must be >= 0 and --batch-size >= 1.")
    _set_data_dir(data_dir)
    method, trainer = load_run(run_dir, checkpoint=checkpoint, device=device)
    folder = Path(out_dir) if out_dir else Path(run_dir)
    from .methods.generative import GenerativeMethod

    if isinstance(method, GenerativeMethod):
        metrics = _eval_generative(method, trainer, run_dir, folder, n=n, features=features, seed=seed,
                                   batch_size=batch_size, device=str(trainer.env.device),
                                   show_progress=not as_json and err.is_terminal)
        _report_eval(run_dir, folder, metrics, as_json)
        return
    test = method.test_data()
    if test is None:
        raise ProfondError(f"method {trainer.cfg.method.name!r} has no test set to evaluate.")
    metrics = trainer.evaluate(test, detailed=True)
    metrics["checkpoint"] = str(trainer.checkpoint_path)
    classes = getattr(method, "classes", None)
    if "confusion_matrix" in metrics and classes:
        png = plot_confusion(metrics["confusion_matrix"], classes, folder / "confusion.png",
                             title=f"{run_dir.name}: test accuracy {metrics['accuracy']:.4f}")
        metrics["confusion_png"] = str(png)
    t = _write_eval(folder / "eval.json", metrics, as_json, run_dir)
    if t is None:
        return
    for k in ("accuracy", "macro_f1", "baseline_accuracy", "baseline_macro_f1", "loss", "bpc", "unigram_bpc",
              "bigram_bpc", "examples"):
        if k in metrics:
            t.add_row(k, f"{metrics[k]:.4f}" if isinstance(metrics[k], float) else str(metrics[k]))
    for c, a in metrics.get("per_class_accuracy", {}).items():
        t.add_row(f"  {c}", f"{a:.4f}")
    out.print(t)
    if "confusion_png" in metrics:
        out.print(f"confusion matrix: {metrics['confusion_png']}")


def _draw_samples(method: Any, n: int, *, seed: int, batch_size: int, show_progress: bool,
                  labels: Any = None) -> Any:
    """``n`` samples in batches (seed ``seed`` for the first batch, a distinct one per batch), with
    a progress bar on stderr."""
    import torch
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    chunks = []
    with Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=not show_progress) as bar:
        task = bar.add_task("sampling", total=n)
        for k, i in enumerate(range(0, n, batch_size)):
            b = min(batch_size, n - i)
            lab = None if labels is None else labels[i: i + b]
            chunks.append(method.sample(b, seed=seed if k == 0 else seed * 1_000_003 + k, labels=lab).cpu())
            bar.advance(task, b)
    return torch.cat(chunks)


def _roc_curve(metrics: dict[str, Any]) -> tuple[Any, Any] | None:
    """(fpr, tpr) of an anomaly method's ``evaluate(detailed=True)`` (``roc_fpr`` / ``roc_tpr``)."""
    if "roc_fpr" in metrics and "roc_tpr" in metrics:
        return metrics["roc_fpr"], metrics["roc_tpr"]
    return None


def _eval_generative(method: Any, trainer: Any, run_dir: Path, folder: Path, *, n: int, features: str,
                     seed: int, batch_size: int, device: str, show_progress: bool) -> dict[str, Any]:
    if n and method.can_sample:  # a missing feature net fails now, not after the long evaluation
        from .metrics.generative import load_feature_net

        load_feature_net(features, device=device)
    metrics: dict[str, Any] = dict(trainer.evaluate(method.test_data(), detailed=True))
    metrics["checkpoint"] = str(trainer.checkpoint_path)
    metrics["method"] = trainer.cfg.method.name
    roc = _roc_curve(metrics)
    if roc is not None and "roc_auc" in metrics:
        from .viz.images import save_roc

        normal = getattr(getattr(method, "opts", None), "normal_class", None)
        if normal is not None and 0 <= normal < len(method.classes):
            normal = f"{normal} ({method.classes[normal]})"
        name = f"normal class {normal}" if normal is not None else "reconstruction error"
        metrics["roc_png"] = str(save_roc({name: (roc[0], roc[1], metrics["roc_auc"])}, folder / "roc.png",
                                          title=f"{run_dir.name}: anomaly ROC"))
    if n and method.can_sample:
        from .metrics.generative import evaluate_samples

        fake = _draw_samples(method, n, seed=seed, batch_size=batch_size, show_progress=show_progress)
        real, _ = method.test_images()
        scores = evaluate_samples(fake, real, features=features, device=device, batch_size=batch_size,
                                  progress=show_progress)
        for k, v in scores.items():  # a method's own metric of the same name keeps its key
            metrics[f"sample_{k}" if k in metrics else k] = v
        metrics["sample_seed"] = seed
    elif n:
        metrics["sample_metrics"] = f"skipped: method {trainer.cfg.method.name!r} cannot sample"
    return _jsonable(metrics)


def _report_eval(run_dir: Path, folder: Path, metrics: dict[str, Any], as_json: bool) -> None:
    """Write eval.json; print one JSON object or a table of the scalar metrics."""
    path = folder / "eval.json"
    t = _write_eval(path, metrics, as_json, run_dir)
    if t is None:
        return
    for k, v in metrics.items():
        if k in ("checkpoint", "roc_png") or isinstance(v, (dict, list)):
            continue  # big dicts / lists (kl_per_dim, ROC points, class histogram) go to eval.json only
        t.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    out.print(t)
    if isinstance(metrics.get("class_histogram"), dict):
        out.print("class histogram of the samples: see eval.json")
    if "roc_png" in metrics:
        out.print(f"roc: {metrics['roc_png']}", highlight=False, soft_wrap=True)
    out.print(f"eval.json: {path}", highlight=False, soft_wrap=True)


def _load_generative(run_dir: Path, checkpoint: str, device: str, data_dir: str | None, command: str) -> tuple[Any, Any]:
    from .methods.generative import GenerativeMethod
    from .train.loop import load_run

    _check_checkpoint(checkpoint)
    _set_data_dir(data_dir)
    method, trainer = load_run(run_dir, checkpoint=checkpoint, device=device)
    if not isinstance(method, GenerativeMethod):
        raise ProfondError(f"run {str(run_dir)!r} is a {trainer.cfg.method.name!r} run, not a generative model; "
                           f"`profond {command}` needs an AE, VAE, VQ-VAE, GAN or diffusion run.")
    return method, trainer


def _pick(n_total: int, k: int, seed: int) -> Any:
    import torch

    g = torch.Generator().manual_seed(int(seed))
    return torch.randperm(n_total, generator=g)[:k]


#: most examples (rows) in one translation.png
MAX_TRANSLATE = 64
#: test images translated by `profond sample` on an image-to-image run without --input
DEFAULT_TRANSLATE = 8


def _is_img2img(method: Any) -> bool:
    """An image-to-image run (pix2pix, srgan, cyclegan): it translates inputs, it does not sample."""
    return callable(getattr(method, "translate", None)) and callable(getattr(method, "make_inputs", None))


def _is_cycle(method: Any) -> bool:
    """CycleGAN: ``translate(inputs, direction="ab"|"ba")``."""
    import inspect

    return "direction" in inspect.signature(method.translate).parameters


def _parse_input(spec: str, n_total: int) -> list[int] | Path:
    """``--input``: test indices (``17``, ``0,5,9``, ``0:8``, ``0:4,9``; ranges end-exclusive) or
    the path of an image file (a path that looks like an index is written ``./17``)."""
    import re

    text = spec.strip()
    form = "a test index (17), a list (0,5,9), a range (0:8, end excluded)"
    if re.fullmatch(r"\d*\s*:\s*\d+|\d+(\s*:\s*\d+)?(\s*,\s*\d+(\s*:\s*\d+)?)*", text):
        idx: list[int] = []
        for part in text.split(","):
            if ":" in part:
                lo_s, hi_s = part.split(":")
                lo, hi = int(lo_s or 0), int(hi_s)
                if hi <= lo:
                    raise ProfondError(f"--input {spec!r} has an empty range {part.strip()!r}; write START:END with "
                                       "END > START (END excluded, e.g. 0:8).")
                idx.extend(range(lo, hi))
            else:
                idx.append(int(part))
        bad = [i for i in idx if i >= n_total]
        if bad:
            raise ProfondError(f"--input {spec!r}: test index {bad[0]} is out of range; use indices in "
                               f"0..{n_total - 1}.")
        if len(idx) > MAX_TRANSLATE:
            raise ProfondError(f"--input {spec!r} names {len(idx)} examples; one figure takes at most "
                               f"{MAX_TRANSLATE}: split the range.")
        return idx
    path = Path(text).expanduser()
    if not path.is_file():
        raise ProfondError(f"--input {spec!r} is no image file, nor {form} in 0..{n_total - 1}; "
                           "pass a test index or the path of a PNG/JPG.")
    return path


def _read_image(path: Path, shape: tuple[int, ...], invert: bool) -> Any:
    """An image file as a ``(1, C, H, W)`` float tensor in [0, 1]: grayscale (or RGB when
    ``C == 3``), resized (Lanczos) to ``H × W``; transparent pixels become background (black, or
    white before ``invert``); ``invert`` maps ``v -> 1 - v`` (a dark object on a white page)."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    c, h, w = (int(v) for v in shape)
    try:
        with Image.open(path) as im:
            im.load()
            img = im.convert("RGBA")
    except (UnidentifiedImageError, OSError) as e:
        raise ProfondError(f"--input {str(path)!r}: cannot read it as an image ({type(e).__name__}); "
                           "pass a PNG or JPG file, or a test index.") from None
    page = Image.new("RGBA", img.size, (255, 255, 255, 255) if invert else (0, 0, 0, 255))
    img = Image.alpha_composite(page, img).convert("RGB" if c == 3 else "L")
    img = img.resize((w, h), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr.copy())
    x = x.permute(2, 0, 1) if x.ndim == 3 else x.unsqueeze(0)
    x = x.unsqueeze(0)
    return 1.0 - x if invert else x


def _baseline_name(method: Any) -> str:
    task = getattr(getattr(method, "opts", None), "task", None)
    if task == "edges":
        return "mean image"
    if task == "inpaint":
        return "mean fill"
    if getattr(getattr(method, "opts", None), "scale", None):
        return "bicubic"
    return "baseline"


def _input_name(method: Any, inputs: Any) -> str:
    task = getattr(getattr(method, "opts", None), "task", None)
    if task == "edges":
        return "input (edges)"
    if task == "inpaint":
        return "input (masked)"
    h, w = inputs.shape[-2:]
    return f"input {h}×{w}" if tuple(inputs.shape[-2:]) != tuple(method.image_shape[1:]) else "input"


def _domain_labels(method: Any) -> dict[str, str]:
    """CycleGAN: ``{"a": "A (sneaker)", "b": "B (ankle boot)"}`` (class names when known)."""
    opts, classes = getattr(method, "opts", None), method.classes
    labels = {}
    for k in ("a", "b"):
        c = getattr(opts, f"domain_{k}", None)
        labels[k] = f"{k.upper()} ({classes[c]})" if isinstance(c, int) and 0 <= c < len(classes) else k.upper()
    return labels


def _source_images(method: Any, cycle: bool, direction: str) -> Any:
    """Test images the indices of --input count: all of them, or CycleGAN's source domain."""
    x, y = method.test_images()
    if not cycle:
        return x
    if callable(getattr(method, "split", None)):
        a, b = method.split(x, y)
    else:
        a, b = (x[y == getattr(method.opts, f"domain_{k}")] for k in ("a", "b"))
    return a if direction == "ab" else b


def _psnr_table(title: str, header: list[str], rows: list[tuple[str, list[float]]]) -> Table:
    """One row per example (values in dB, 2 decimals) and a mean row when there are several."""
    t = Table(title=title)
    for col in header:
        t.add_column(col, justify="left" if col == "example" else "right")
    for name, vals in rows:
        t.add_row(name, *(f"{v:.2f}" for v in vals))
    if len(rows) > 1:
        t.add_row("mean", *(f"{sum(r[1][j] for r in rows) / len(rows):.2f}" for j in range(len(header) - 1)))
    return t


def _sample_img2img(method: Any, run_dir: Path, folder: Path, *, spec: str | None, n: int | None,
                    as_input: bool, invert: bool, direction: str) -> list[Path]:
    """``profond sample RUN --input ...`` on an image-to-image run. pix2pix / srgan: a table of
    input | naive baseline | output | target and the PSNR of output and baseline vs the target;
    cyclegan: source | translated | translated back and the PSNR of the cycle vs the source."""
    import torch

    from .methods.autoencoder import psnr
    from .viz.images import save_image_table

    cycle = _is_cycle(method)
    if direction not in ("ab", "ba"):
        raise ProfondError(f"--direction {direction!r}: use ab or ba.")
    if direction != "ab" and not cycle:
        raise ProfondError("--direction is for CycleGAN runs (two domains); drop it for pix2pix / srgan.")
    source = _source_images(method, cycle, direction)
    if spec is None:
        k = min(n or DEFAULT_TRANSLATE, len(source), MAX_TRANSLATE)
        which = f"domain {direction[0].upper()} " if cycle else ""
        err.print(f"note: no --input: translating {which}test images 0:{k} (pass --input INDEX, 0,5,9, 0:8 or an "
                  "image file).", highlight=False)
        picked: list[int] | Path = list(range(k))
    else:
        picked = _parse_input(spec, len(source))
    targets: Any = None
    if isinstance(picked, Path):
        shape = tuple(method.image_shape)
        if as_input:  # the file is the model input: read it at the input's size (e.g. 14x14 for x2 SR)
            inputs = _read_image(picked, tuple(method.make_inputs(torch.zeros(1, *shape)).shape[1:]), invert)
        else:
            targets = _read_image(picked, shape, invert)
            inputs = method.make_inputs(targets).cpu()
        names = [picked.name if len(picked.name) <= 18 else picked.name[:15] + "..."]
    else:
        if as_input:
            raise ProfondError("--as-input applies to an image file (an edge map, a low-res image); "
                               "a test index is always a target image: drop --as-input.")
        targets = source[picked]
        inputs = method.make_inputs(targets).cpu()
        names = [f"{direction[0].upper() if cycle else 'test'} #{i}" for i in picked]

    if cycle:
        dom = _domain_labels(method)
        src, dst = direction[0], direction[1]
        fwd = method.translate(inputs, direction=direction)
        back = method.translate(fwd, direction=dst + src)
        p_cycle = psnr(back, inputs).tolist()
        arrow = f"{src.upper()}→{dst.upper()}"
        path = save_image_table([inputs, fwd, back], folder / f"translation-{direction}.png",
                                [dom[src], arrow, f"{arrow}→{src.upper()}"], row_labels=names,
                                notes=[None, None, [f"{v:.1f} dB" for v in p_cycle]],
                                title=f"{run_dir.name}: {dom[src]} → {dom[dst]} → back (PSNR of the cycle vs the "
                                      "source)")
        out.print(_psnr_table("PSNR of the cycle vs the source (dB)", ["example", "cycle PSNR (dB)"],
                              [(nm, [v]) for nm, v in zip(names, p_cycle, strict=True)]))
        return [path]

    output = method.translate(inputs)
    base = None
    if callable(getattr(method, "baseline", None)):
        try:
            base = method.baseline(method.to_device(inputs)).float().clamp(0, 1).cpu()
        except NotImplementedError:
            base = None
    bname = _baseline_name(method)
    columns, titles = [inputs], [_input_name(method, inputs)]
    notes: list[list[str] | None] = [None]
    p_out = psnr(output, targets).tolist() if targets is not None else None
    p_base = psnr(base, targets).tolist() if targets is not None and base is not None else None
    if base is not None:
        columns.append(base)
        titles.append(bname)
        notes.append([f"{v:.1f} dB" for v in p_base] if p_base is not None else None)
    columns.append(output)
    titles.append("output")
    notes.append([f"{v:.1f} dB" for v in p_out] if p_out is not None else None)
    if targets is not None:
        columns.append(targets)
        titles.append("target")
        notes.append(None)
    task = getattr(getattr(method, "opts", None), "task", None)
    title = (f"{run_dir.name}: {method.cfg.method.name}{' ' + task if task else ''}"
             + ("" if targets is not None else " (the file is the model input)"))
    path = save_image_table(columns, folder / "translation.png", titles, row_labels=names,
                            notes=notes if p_out is not None else None, title=title)
    if p_out is None:
        err.print("note: --as-input: no target, so no PSNR.", highlight=False)
        return [path]
    header = ["example", "output PSNR (dB)"]
    rows = [(nm, [p_out[i]]) for i, nm in enumerate(names)]
    if p_base is not None:
        header += [f"{bname} PSNR (dB)", "gain (dB)"]
        rows = [(nm, [*vals, p_base[i], vals[0] - p_base[i]]) for i, (nm, vals) in enumerate(rows)]
    out.print(_psnr_table("PSNR vs the target (dB)", header, rows))
    return [path]


@app.command(epilog="Examples:\n\n  profond sample runs/vae-fashion-mnist-20261122-101500\n\n"
             "  profond sample RUN_DIR --n 100 --seed 3 --out figs/\n\n"
             "  profond sample RUN_DIR --recon   (also reconstructions.png; the only output for an AE)\n\n"
             "  profond sample runs/pix2pix-... --input 0:8   (image-to-image: translation.png)\n\n"
             "  profond sample runs/srgan-... --input shoe.png   (the file is the 28x28 target, downsampled)\n\n"
             "  profond sample runs/srgan-... --input small.png --as-input   (the file is the low-res input)\n\n"
             "  profond sample runs/cyclegan-... --input 0,5,9 --direction ba")
@user_errors
def sample(
    run_dir: Path = typer.Argument(..., help="A run folder of a generative model (`profond train vae ...`) or of an "
                                   "image-to-image model (pix2pix, srgan, cyclegan)."),
    n: int = typer.Option(None, "--n", "-n", help="Number of samples (default 64). Image-to-image runs without "
                          f"--input: translate the first N test images (default {DEFAULT_TRANSLATE})."),
    nrow: int = typer.Option(None, "--nrow", help="Images per row (default ≈ sqrt(n))."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (same seed, same images)."),
    label: int = typer.Option(None, "--label", help="Class index for class-conditional models (ignored otherwise)."),
    recon: bool = typer.Option(False, "--recon", help="Also write reconstructions.png: test images (odd rows) "
                               "above their reconstructions (even rows)."),
    input_: str = typer.Option(None, "--input", "-i", help="Image-to-image runs: a test index (17), a list (0,5,9) "
                               "or a range (0:8, end excluded) of test images, or an image file (PNG/JPG, any size "
                               "or mode: converted to grayscale and resized to the model's images, values in [0, 1]). "
                               "A file is the TARGET-domain image (a garment) from which the task input is built as "
                               "for the test images: its edges (pix2pix edges), its masked copy (pix2pix inpaint), "
                               "its downsampled copy (srgan), itself as a domain-A image (cyclegan; domain B with "
                               "--direction ba). CycleGAN indices count the source domain's test images."),
    as_input: bool = typer.Option(False, "--as-input", help="With an image file: it already is the model input "
                                  "(an edge map, a masked image, a low-res image, resized to the input size); "
                                  "the figure then has no target column and no PSNR."),
    invert: bool = typer.Option(False, "--invert", help="With an image file: use 1 - pixel (a dark object on a "
                                "white page; the datasets have light objects on black)."),
    direction: str = typer.Option("ab", "--direction", help="CycleGAN: ab (A -> B -> A) or ba (B -> A -> B)."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Output folder (default: the run folder)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or best."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    data_dir: str = typer.Option(None, "--data-dir", help="Root holding one folder per dataset."),
) -> None:
    """Draw new images from a generative run: writes samples.png (a grid, nrow ≈ sqrt(n)).

    Image-to-image runs (pix2pix, srgan: course 004 "Pix2Pix", "Super-Résolution avec GANs")
    cannot sample: they translate. `--input` picks test images or an image file and writes
    translation.png, one row per example: input | naive baseline (mean image, mean fill or
    bicubic) | output | target, with the PSNR under each prediction, and prints a table of the
    per-example PSNR of the output and of the baseline against the target. CycleGAN runs write
    translation-ab.png (or -ba): source | translated | translated back, and the PSNR of the
    cycle against the source. Without --input the first few test images are translated.
    """
    import math

    import torch

    from .viz.images import save_grid

    if n is not None and n < 1:
        raise ProfondError(f"--n {n}: draw at least one sample.")
    method, trainer = _load_generative(run_dir, checkpoint, device, data_dir, "sample")
    folder = Path(out_dir) if out_dir else Path(run_dir)
    name = trainer.cfg.method.name
    if _is_img2img(method):
        if recon:
            raise ProfondError(f"--recon is for autoencoders; method {name!r} translates images: "
                               "drop --recon (`profond sample RUN --input 0:8` writes translation.png).")
        for p in _sample_img2img(method, run_dir, folder, spec=input_, n=n, as_input=as_input, invert=invert,
                                 direction=direction):
            out.print(str(p), highlight=False, soft_wrap=True)
        return
    if input_ is not None or as_input or invert or direction != "ab":
        flag = ("--input" if input_ is not None else "--as-input" if as_input else "--invert" if invert
                else "--direction")
        raise ProfondError(f"{flag} is for image-to-image runs (pix2pix, srgan, cyclegan); run {str(run_dir)!r} is "
                           f"a {name!r} run: drop {flag} (`profond sample RUN --n N` draws new images).")
    n = 64 if n is None else n
    cols = nrow or max(1, math.ceil(math.sqrt(n)))
    written = []
    if method.can_sample:
        labels = None
        if label is not None:
            if not 0 <= label < len(method.classes):
                raise ProfondError(f"--label {label}: use a class index in 0..{len(method.classes) - 1}.")
            labels = torch.full((n,), label, dtype=torch.long)
        x = _draw_samples(method, n, seed=seed, batch_size=1000, show_progress=n > 1000 and err.is_terminal,
                          labels=labels)
        written.append(save_grid(x, folder / "samples.png", nrow=cols))
    elif not recon:
        try:
            method.sample(n, seed=seed)
        except ProfondError as e:
            raise ProfondError(f"{e} (`profond sample RUN --recon` writes reconstructions instead)") from None
        raise ProfondError(f"method {trainer.cfg.method.name!r} cannot sample new images.")
    if recon:
        x, _ = method.test_images()
        k = min(cols, len(x))
        rows = max(1, math.ceil(n / cols) // 2)  # as many image/reconstruction row pairs as fit n
        idx = _pick(len(x), min(k * rows, len(x)), seed)
        xs = x[idx]
        rec = method.reconstruct(xs).cpu()
        pairs = [t for r in range(0, len(xs), k) for t in (xs[r: r + k], rec[r: r + k])]
        written.append(save_grid(torch.cat(pairs), folder / "reconstructions.png", nrow=k))
        if not method.can_sample:
            err.print(f"note: method {trainer.cfg.method.name!r} has no prior to sample; wrote reconstructions only.")
    for p in written:
        out.print(str(p), highlight=False, soft_wrap=True)


def _is_gan(method: Any) -> bool:
    """A sampler of a vector latent without an encoder (a GAN): ``z(n, generator)`` and ``decode(z, labels)``."""
    return (not method.has_latent and method.can_sample and bool(method.latent_dim)
            and callable(getattr(method, "z", None)))


def _latent_gan(method: Any, run_dir: Path, folder: Path, *, steps: int, pairs: int, seed: int,
                label: int | None) -> list[Path]:
    """``profond latent`` on a GAN: linear vs spherical interpolation between sampled codes
    (interpolation.png) and, for a conditional GAN (§8.5), the class × z grid (class_grid.png)."""
    import torch

    from .methods.generative import slerp
    from .viz.images import save_traversal

    conditional = bool(getattr(method, "conditional", False))
    k_cls = int(getattr(method, "num_classes", len(method.classes)))
    cls = method.classes

    def cname(c: int) -> str:
        return cls[c] if c < len(cls) else str(c)

    def tagged(c: int) -> str:  # "class 3" on digits, "3: dress" on Fashion-MNIST
        return f"class {c}" if cname(c) == str(c) else f"{c}: {cname(c)}"

    if label is not None and not conditional:
        raise ProfondError("--label is for class-conditional GANs (model.conditional=true); drop it.")
    if label is not None and not 0 <= label < k_cls:
        raise ProfondError(f"--label {label}: use a class index in 0..{k_cls - 1}.")
    z = method.z(2 * pairs, generator=method.generator(seed)).cpu().float()
    t = torch.linspace(0, 1, steps)
    rows, names = [], []
    mid_lin, mid_sph, ends = [], [], []
    for k in range(pairs):
        za, zb = z[2 * k], z[2 * k + 1]
        lab = None
        tag = ""
        if conditional:
            c = label if label is not None else k % k_cls
            lab = torch.full((steps,), c, dtype=torch.long)
            tag = f", {tagged(c)}"
        lin = (1 - t)[:, None] * za + t[:, None] * zb
        sph = slerp(za, zb, t)
        rows += [method.decode(lin, lab).cpu(), method.decode(sph, lab).cpu()]
        names += [f"pair {k + 1} linear{tag}", f"pair {k + 1} slerp{tag}"]
        mid_lin.append(float(((za + zb) / 2).norm()))
        mid_sph.append(float(slerp(za, zb, 0.5).norm()))
        ends += [float(za.norm()), float(zb.norm())]
    written = [save_traversal(torch.stack(rows), folder / "interpolation.png", row_labels=names, values=t.tolist(),
                              value_format="{:.2f}",
                              title=f"{run_dir.name}: {pairs} pairs of z ~ N(0, I) (seed {seed}), linear vs "
                                    f"spherical, t = 0..1")]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    out.print(f"‖z‖ mean over {pairs} pairs: endpoints {mean(ends):.2f} (√d = {method.latent_dim ** 0.5:.2f}), "
              f"midpoint linear {mean(mid_lin):.2f}, slerp {mean(mid_sph):.2f}", highlight=False)
    if conditional:
        zc = method.z(steps, generator=method.generator(seed)).cpu().float()
        labels = torch.arange(k_cls).repeat_interleave(steps)
        imgs = method.decode(zc.repeat(k_cls, 1), labels).cpu()
        written.append(save_traversal(imgs.reshape(k_cls, steps, *imgs.shape[1:]), folder / "class_grid.png",
                                      row_labels=[tagged(c) for c in range(k_cls)],
                                      values=list(range(1, steps + 1)), value_format="z{:d}",
                                      title=f"{run_dir.name}: each column one z (seed {seed}) rendered as every "
                                            "class (§8.5)"))
    return written


@app.command(epilog="Examples:\n\n  profond latent runs/vae-fashion-mnist-20261122-101500\n\n"
             "  profond latent RUN_DIR --a 0 --b 7 --steps 12 --dims 8 --range 2.5 --out figs/\n\n"
             "  profond latent runs/vqvae-... --codes   (VQ-VAE: export the code indices as safetensors)\n\n"
             "  profond latent runs/gan-... --pairs 6 --steps 12 --seed 3   (GAN: linear vs slerp)\n\n"
             "  profond latent runs/cgan-... --steps 8   (conditional GAN: also class_grid.png)")
@user_errors
def latent(
    run_dir: Path = typer.Argument(..., help="A run folder of a model with a latent space (AE, VAE, GAN, ...)."),
    a: int = typer.Option(0, "--a", help="Test image index: start of the interpolation and centre of the traversal."),
    b: int = typer.Option(1, "--b", help="Test image index: end of the interpolation."),
    steps: int = typer.Option(10, "--steps", help="Images along the interpolation and values per traversal row "
                              "(GAN: also the z columns of the class grid)."),
    pairs: int = typer.Option(4, "--pairs", help="GAN: pairs of sampled codes interpolated (two rows each)."),
    label: int = typer.Option(None, "--label", help="Conditional GAN: class of every interpolation (default: "
                              "pair k uses class k mod K)."),
    dims: int = typer.Option(8, "--dims", help="Latent dimensions in the traversal (the most active ones)."),
    range_: float = typer.Option(3.0, "--range", help="Traversal values in [-range, range] (prior std units for a "
                                 "VAE, the dimension's std for an AE) around the centre."),
    center: str = typer.Option("image", "--center", help="Traversal centre: image (the code of test image --a) or zero."),
    points: int = typer.Option(5000, "--points", help="Test images in the latent scatter."),
    codes: bool = typer.Option(False, "--codes", help="VQ-VAE: export the code indices of a split (safetensors) instead."),
    split: str = typer.Option("test", "--split", help="With --codes: test or train."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Output folder (default: the run folder)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or best."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda."),
    seed: int = typer.Option(0, "--seed", help="Seed (which test images the scatter shows when --points < test set; "
                             "GAN: the codes z)."),
    data_dir: str = typer.Option(None, "--data-dir", help="Root holding one folder per dataset."),
) -> None:
    """Explore a latent space.

    AE / VAE: writes interpolation.png (linear path between the codes of test images --a and
    --b), traversal.png (one latent dimension at a time) and latent_scatter.png (test posterior
    means by class; PCA when the latent has more than 2 dimensions).

    GAN (no encoder: --a/--b/--dims/--range/--center/--points do not apply): writes
    interpolation.png, --pairs pairs of codes z_a, z_b drawn from N(0, I) with --seed, each
    decoded along a linear path (1 - t) z_a + t z_b and a spherical one (slerp: sin((1 - t)Ω)/sin Ω
    z_a + sin(tΩ)/sin Ω z_b, Ω the angle between them; it keeps ‖z‖ near √d where the prior's mass
    is, whereas the linear midpoint shrinks to ≈ √(d/2)), and prints those norms. A conditional GAN
    (§8.5) also gets class_grid.png: one row per class, one column per fixed z (--steps of them),
    so each column shows the same noise rendered as every class.

    VQ-VAE: --codes exports the discrete code indices (safetensors).
    """
    import sys as _sys

    import numpy as np
    import torch

    from .methods.generative import batched
    from .viz.images import save_latent_scatter, save_strip, save_traversal

    method, trainer = _load_generative(run_dir, checkpoint, device, data_dir, "latent")
    folder = Path(out_dir) if out_dir else Path(run_dir)
    name = trainer.cfg.method.name
    export = getattr(_sys.modules.get(type(method).__module__), "export_codes", None)
    if codes:
        if export is None:
            raise ProfondError(f"method {name!r} has no discrete codes to export; drop --codes.")
        if split not in ("test", "train"):
            raise ProfondError(f"--split {split!r}: use test or train.")
        path = export(method, folder / f"codes-{split}.safetensors", split=split, run=str(run_dir))
        out.print(str(path), highlight=False, soft_wrap=True)
        return
    if _is_gan(method):
        if steps < 2 or pairs < 1:
            raise ProfondError("--steps must be >= 2 and --pairs >= 1.")
        for p in _latent_gan(method, run_dir, folder, steps=steps, pairs=pairs, seed=seed, label=label):
            out.print(str(p), highlight=False, soft_wrap=True)
        return
    if label is not None:
        raise ProfondError("--label is for conditional GAN runs; drop it.")
    if not method.has_latent:
        hint = " it has discrete codes: use `profond latent RUN --codes`." if export else ""
        raise ProfondError(f"method {name!r} has no vector latent space to explore;"
                           f"{hint or ' use an AE, VAE or GAN run.'}")
    if steps < 2 or dims < 1 or range_ <= 0 or points < 2:
        raise ProfondError("--steps must be >= 2, --dims >= 1, --range > 0 and --points >= 2.")
    if center not in ("image", "zero"):
        raise ProfondError(f"--center {center!r}: use image or zero.")
    x, y = method.test_images()
    for flag, i in (("--a", a), ("--b", b)):
        if not 0 <= i < len(x):
            raise ProfondError(f"{flag} {i}: use a test image index in 0..{len(x) - 1}.")
    cls = method.classes
    written = []
    # interpolation: original a, decoded path, original b
    za, zb = method.encode(x[[a, b]]).cpu().float()
    t = torch.linspace(0, 1, steps).unsqueeze(1)
    path_imgs = method.decode((1 - t) * za + t * zb).cpu()
    strip = torch.cat([x[a: a + 1], path_imgs, x[b: b + 1]])
    written.append(save_strip(strip, folder / "interpolation.png",
                              title=f"test #{a} ({cls[int(y[a])]}) -> #{b} ({cls[int(y[b])]}): "
                                    f"{steps} linear steps in latent space"))
    # codes of the scatter set: posterior means; their per-dim variance ranks the traversal dims
    idx = torch.arange(len(x)) if points >= len(x) else _pick(len(x), points, seed).sort().values
    z = batched(lambda v: method.encode(v).cpu().float(), x[idx], 1000)
    var = z.var(0) if len(z) > 1 else torch.ones(z.shape[1])
    k = min(dims, z.shape[1])
    top = torch.argsort(var, descending=True)[:k]
    base = za.clone() if center == "image" else torch.zeros_like(za)
    vals = torch.linspace(-range_, range_, steps)
    scale = torch.ones_like(var) if method.can_sample else var.sqrt()  # prior units for a VAE
    rows = []
    for d in top.tolist():
        zs = base.repeat(steps, 1)
        zs[:, d] = base[d] + vals * scale[d]
        rows.append(method.decode(zs).cpu())
    centre = f"the code of test #{a}" if center == "image" else "z = 0"
    written.append(save_traversal(torch.stack(rows), folder / "traversal.png",
                                  row_labels=[f"z{d} (var {var[d]:.2f})" for d in top.tolist()],
                                  values=vals.tolist(),
                                  title=f"{run_dir.name}: traversal around {centre}, {k} most active of "
                                        f"{z.shape[1]} dims" + ("" if method.can_sample else ", values x each dim's std")))
    written.append(save_latent_scatter(z.numpy(), np.asarray(y[idx]), cls, folder / "latent_scatter.png",
                                       title=f"{run_dir.name} ({len(z)} test means)"))
    for p in written:
        out.print(str(p), highlight=False, soft_wrap=True)


@app.command(epilog="Examples:\n\n  profond generate runs/char-lm-fortune-chars-20261122-101500 --prompt \"The \"\n\n"
             "  profond generate RUN --prompt Linux --temperature 0.8 --top-p 0.9 --n 3 --length 300 --seed 1\n\n"
             "  profond generate RUN --prompt \"A \" --temperature 0   (greedy)")
@user_errors
def generate(
    run_dir: Path = typer.Argument(..., help="A run folder of a character language model (model char-lm)."),
    prompt: str = typer.Option("", "--prompt", "-p", help="Text to continue (every character must be in the "
                               "run's vocabulary)."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Softmax temperature (> 0; 0 = greedy)."),
    top_k: int = typer.Option(None, "--top-k", help="Sample among the K most likely characters only."),
    top_p: float = typer.Option(None, "--top-p", help="Nucleus sampling: among the smallest set of most likely "
                                "characters whose probability reaches P (in (0, 1])."),
    n: int = typer.Option(1, "--n", help="Number of samples."),
    length: int = typer.Option(200, "--length", "-l", help="Characters generated after the prompt."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder for generated.txt (default: the run folder)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or best."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda."),
    data_dir: str = typer.Option(None, "--data-dir", help="Root holding one folder per dataset."),
) -> None:
    """Sample text from a character language model (chapter 5): writes generated.txt and prints it.

    The model reads the fortune separator then the prompt, and samples each next character
    from softmax(logits / T), restricted to the --top-k most likely and to the --top-p nucleus.
    """
    from .methods.sequence import CharLMMethod, check_sampling

    _check_checkpoint(checkpoint)
    check_sampling(temperature, top_k, top_p)
    if n < 1 or length < 0:
        raise ProfondError("--n must be >= 1 and --length >= 0.")
    _run_config(run_dir, ("char-lm",), "generate",
                "a character language model run (profond train char-lm -d fortune-chars)")
    _set_data_dir(data_dir)
    from .train.loop import load_run

    method, trainer = load_run(run_dir, checkpoint=checkpoint, device=device)
    if not isinstance(method, CharLMMethod):  # pragma: no cover - guarded by the config check
        raise ProfondError(f"{run_dir} is not a character language model run.")
    texts = method.generate(prompt, n=n, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                            seed=seed)
    folder = Path(out_dir) if out_dir else Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    sep = "\n" + "-" * 40 + "\n"
    from .train.io import atomic_write_text

    path = folder / "generated.txt"
    atomic_write_text(path, sep.join(texts) + "\n")
    for i, t in enumerate(texts):
        if i:
            out.print(sep, end="", markup=False, highlight=False)
        out.print(t, markup=False, highlight=False, soft_wrap=True)
    err.print(f"generated.txt: {path}", highlight=False, soft_wrap=True)


@app.command(epilog="Examples:\n\n  profond gates runs/fortune-char-lstm \"Unix is a four-letter word.\"\n\n"
             "  profond gates RUN \"The quick brown fox\" --units 32 --out gates.png\n\n"
             "  profond gates runs/fortune-lang-bigru \"Das ist ein Test\" --layer 0")
@user_errors
def gates(
    run_dir: Path = typer.Argument(..., help="A run folder of a char-lm or text-classifier model with an LSTM or GRU."),
    text: str = typer.Argument(..., help="The text the model reads."),
    out_png: Path = typer.Option(None, "--out", "-o", help="PNG to write (default: RUN/gates.png)."),
    layer: int = typer.Option(0, "--layer", help="Recurrent layer to trace (0 = the one reading the embeddings)."),
    units: int = typer.Option(None, "--units", help="Draw the first N hidden units only (default: all)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or best."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda."),
    data_dir: str = typer.Option(None, "--data-dir", help="Root holding one folder per dataset."),
) -> None:
    """Draw a trained LSTM's forget / input / output gates (a GRU's reset / update gates) over a text.

    Course exercise 5.4.2: one heatmap per gate, hidden units by tokens read, forward
    direction of --layer; prints each gate's mean. The model's nn.LSTM / nn.GRU is copied
    into profond's step-by-step layer, which records the gates.
    """
    import torch

    from .models.rnn import GATES, trace_gates

    _check_checkpoint(checkpoint)
    if units is not None and units < 1:
        raise ProfondError("--units must be >= 1.")
    cfg = _run_config(run_dir, ("char-lm", "text-classifier"), "gates",
                      "a char-lm or text-classifier run (e.g. profond train --recipe fortune-char-lstm)")
    _set_data_dir(data_dir)
    from .train.loop import load_run

    method, _ = load_run(run_dir, checkpoint=checkpoint, device=device)
    tok = method.tokenizer
    ids = method.encode_prompt(text) if cfg.method.name == "char-lm" else tok.encode(text)
    if not ids:
        raise ProfondError("the text is empty; give the model something to read.")
    model = method.nets["model"]
    labels = [tok.token(i) if hasattr(tok, "token") else tok.decode([i], skip_specials=False) for i in ids]
    traced = trace_gates(model, torch.tensor(ids, device=next(model.parameters()).device), layer=layer)
    from .viz.gates import draw_gates

    path = Path(out_png) if out_png else Path(run_dir) / "gates.png"
    title = (f"{model.kind.upper()} layer {layer}"
             f"{' (forward direction)' if model.rnn.bidirectional else ''}, {len(ids)} tokens: "
             f"{text[:60]!r}{'…' if len(text) > 60 else ''}")
    draw_gates({g: v.numpy() for g, v in traced.items()}, labels, path, title=title, units=units)
    for g in GATES[model.kind]:
        v = traced[g]
        out.print(f"{g}: mean {float(v.mean()):.3f}, per-step mean from {float(v.mean(1).min()):.3f} "
                  f"to {float(v.mean(1).max()):.3f}", highlight=False)
    err.print(f"gates.png: {path}", highlight=False, soft_wrap=True)


@app.command(epilog="Examples:\n\n  profond translate runs/numbers-fr-attention \"deux mille vingt-six\"\n\n"
             "  profond translate RUN \"soixante et onze\" \"cent un\" --beam 4\n\n"
             "  profond translate RUN \"trois cent quatre-vingt-dix-sept\" --attention-png attention.png")
@user_errors
def translate(
    run_dir: Path = typer.Argument(..., help="A run folder of a seq2seq model (method seq2seq, e.g. recipe numbers-fr-attention)."),
    texts: list[str] = typer.Argument(..., help="Inputs to translate (French number words, or digits for a digits2words run)."),
    beam: int = typer.Option(1, "--beam", "-k", help="Beam width (1 = greedy decoding)."),
    attention_png: Path = typer.Option(None, "--attention-png", help="Write the attention heatmap (source chars x "
                                       "output chars) of the first input to this PNG (attention models only)."),
    checkpoint: str = typer.Option("last", "--checkpoint", help="last or best."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda."),
) -> None:
    """Translate with a seq2seq run (course §6.1-6.3): prints one output per input.

    With --attention-png, also draws the attention weights of the first input (rows: output
    characters then the end-of-sequence token, columns: source characters; each row sums to 1); the PNG keeps the
    matrix as JSON in its "attention" text chunk.
    """

    _check_checkpoint(checkpoint)
    if beam < 1:
        raise ProfondError(f"--beam {beam}: use an integer >= 1 (1 = greedy).")
    _run_config(run_dir, ("seq2seq",), "translate", "a seq2seq run (profond train --recipe numbers-fr-attention)")
    from .methods.seq2seq import Seq2SeqMethod, draw_attention
    from .train.loop import load_run

    method, _ = load_run(run_dir, checkpoint=checkpoint, device=device)
    if not isinstance(method, Seq2SeqMethod):  # pragma: no cover - guarded by the config check
        raise ProfondError(f"{run_dir} is not a seq2seq run.")
    if attention_png is not None and getattr(method.raw_nets["model"], "attention", None) is None:
        raise ProfondError(f"{run_dir} has no attention (model.attention=none): drop --attention-png.")
    outputs, attention = method.translate(texts, beam=beam)
    for o in outputs:
        out.print(o, markup=False, highlight=False, soft_wrap=True)
    if attention_png is not None:
        labels = method.output_tokens(outputs[0], attention[0].shape[0])
        path = draw_attention(attention[0], texts[0], labels, attention_png,
                              title=f"{texts[0]} -> {outputs[0]}" + (f" (beam {beam})" if beam > 1 else ""))
        err.print(f"attention: {path}", highlight=False, soft_wrap=True)


def _write_eval(path: Path, metrics: dict[str, Any], as_json: bool, run_dir: Path) -> Table | None:
    """Write eval.json; print it as one JSON object (None) or return an empty metric table."""
    from .train.io import atomic_write_json

    atomic_write_json(path, metrics)
    if as_json:
        sys.stdout.write(json.dumps(metrics) + "\n")
        return None
    t = Table(title=f"{run_dir}  ({Path(metrics['checkpoint']).name})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    return t


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
