"""``profond eval``: a trained run on its test set; the sample metrics of a run that samples."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from ..errors import ProfondError
from ..methods.capabilities import (
    Reconstructs,
    SamplerRequest,
    SamplesImages,
    ScoresLikelihood,
    TranslatesImages,
    supports,
)
from .common import (
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    EtaOpt,
    GuidanceOpt,
    SamplerOpt,
    StepsOpt,
    app,
    apply_sampler,
    err,
    examples,
    jsonable,
    load_method,
    out,
    show,
    user_errors,
    write_json_or_table,
)

FEATURES = ("fmnist", "inception")


def sample_batches(method: Any, n: int, *, seed: int, batch_size: int, labels: Any = None) -> Iterator[Any]:
    """``n`` samples, ``batch_size`` at a time (seed ``seed`` for the first batch, a distinct one
    per batch): only one batch is drawn at a time."""
    for k, i in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - i)
        lab = None if labels is None else labels[i: i + b]
        yield method.sample(b, seed=seed if k == 0 else seed * 1_000_003 + k, labels=lab).cpu()


def draw_samples(method: Any, n: int, *, seed: int, batch_size: int, show_progress: bool,
                 labels: Any = None) -> Any:
    """``n`` samples in batches (:func:`sample_batches`) as one tensor, with a progress bar on stderr."""
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
        for x in sample_batches(method, n, seed=seed, batch_size=batch_size, labels=labels):
            chunks.append(x)
            bar.advance(task, len(x))
    return torch.cat(chunks)


def check_sample_metrics_fit(method: Any, net: Any, n: int, batch_size: int) -> None:
    """Refuse ``--n`` samples whose features would not fit in memory: the statistics hold the
    float64 features and class probabilities of every sample (twice while they are gathered),
    the images only one ``--batch-size`` batch at a time."""
    from ..base.limits import check_fits

    c, h, w = method.test_images(1)[0].shape[1:]
    per_sample = 2 * 8 * (int(getattr(net, "feature_dim", 0) or 2048) + int(getattr(net, "num_classes", 0) or 1008))
    nbytes = n * per_sample + min(n, batch_size) * c * h * w * 4
    check_fits(nbytes, f"--n {n:,} samples (their features for the sample metrics)",
               "lower --n (10,000 is the customary size), or --n 0 for the test-set metrics only")


def sample_metrics(method: Any, n: int, *, features: str, seed: int, batch_size: int, device: str,
                   show_progress: bool) -> dict[str, Any]:
    """FID, KID, IS, precision / recall and the class histogram of ``n`` samples against the
    test images."""
    from ..metrics.generative import evaluate_samples

    real, _ = method.test_images()
    fake = sample_batches(method, n, seed=seed, batch_size=batch_size)
    return evaluate_samples(fake, real, features=features, device=device, batch_size=batch_size,
                            progress=show_progress, n_fake=n)


@app.command("eval", epilog=examples(
    "profond eval runs/mlp-fashion-mnist-20261122-101500",
    "profond eval RUN_DIR --json --checkpoint best",
    "profond eval runs/vae-fashion-mnist-20261122-101500 --n 10000 --features fmnist",
    "profond eval runs/ae-one-class --json   (anomaly run: ROC-AUC and roc.png)",
    "profond eval runs/diffusion-... --n 10000 --sampler ddim --steps 50   (FID of DDIM-50 samples)",
    "profond eval runs/glow-... --images my_drawings/   (flows, PixelCNN: bits/dim of each image)"))
@user_errors
def eval_(
    run_dir: Path = typer.Argument(..., help="A run folder made by `profond train`."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (accuracy, loss, per-class accuracy, ...)."),
    checkpoint: CheckpointOpt = "last",
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    n: int = typer.Option(10000, "--n", help="Runs that sample: samples drawn for FID/KID/IS/precision-recall "
                          "(0: the test-set metrics only)."),
    features: str = typer.Option("fmnist", "--features", help="Runs that sample: feature network of the "
                                 "sample metrics, fmnist (offline, 28x28 grayscale) or inception."),
    seed: int = typer.Option(0, "--seed", help="Runs that sample: seed of the samples."),
    batch_size: int = typer.Option(500, "--batch-size", help="Runs that sample: sampling / feature batch size."),
    sampler_: SamplerOpt = None,
    steps: StepsOpt = None,
    eta: EtaOpt = None,
    guidance: GuidanceOpt = None,
    images: str = typer.Option(None, "--images", help="Flow and PixelCNN runs: score these images instead (a PNG/JPG "
                               "file or a folder of them): bits/dim of each, next to the test set's; writes "
                               "images_bpd.csv. Other sizes are resized and colour is greyscaled, with a warning."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder for eval.json and figures (default: the run folder)."),
) -> None:
    """Evaluate a trained run on its test set and write eval.json.

    Every run: its method's test metrics (classifiers: accuracy, loss, per-class accuracy and a
    confusion-matrix PNG; generative runs: reconstruction, KL, ELBO, ...; anomaly runs also
    write roc.png). A run that samples images also gets FID, KID, Inception Score,
    precision/recall and the class histogram of --n samples against the test images.
    """
    if features not in FEATURES:
        raise ProfondError(f"--features {features!r}: use one of {', '.join(FEATURES)}.")
    if n < 0 or batch_size < 1:
        raise ProfondError("--n must be >= 0 and --batch-size >= 1.")
    method, trainer = load_method(run_dir, checkpoint=checkpoint, device=device, data_dir=data_dir)
    folder = Path(out_dir) if out_dir else Path(run_dir)
    name = trainer.cfg.method.name
    if images is not None:
        score_images(method, images, folder, Path(run_dir).name, as_json=as_json, seed=seed)
        return
    test = method.test_data()
    if test is None:
        raise ProfondError(f"method {name!r} has no test set to evaluate.")
    settings = apply_sampler(method, SamplerRequest(sampler_, steps, eta, guidance), "eval")
    samples = bool(n) and supports(method, SamplesImages)
    dev = str(trainer.env.device)
    if samples:  # a missing feature net or too many samples fail now, not after the long evaluation
        from ..metrics.generative import load_feature_net

        check_sample_metrics_fit(method, load_feature_net(features, device=dev), n, batch_size)
    metrics: dict[str, Any] = dict(trainer.evaluate(test, detailed=True))
    metrics["checkpoint"] = str(trainer.checkpoint_path)
    metrics["method"] = name
    folder.mkdir(parents=True, exist_ok=True)
    metrics.update(method.eval_figures(metrics, folder, run_dir.name))
    if samples:
        scores = sample_metrics(method, n, features=features, seed=seed, batch_size=batch_size, device=dev,
                                show_progress=not as_json and err.is_terminal)
        for k, v in scores.items():  # a method's own metric of the same name keeps its key
            metrics[f"sample_{k}" if k in metrics else k] = v
        metrics["sample_seed"] = seed
        if settings:
            metrics["sampler"] = settings
    elif n and (supports(method, Reconstructs) or supports(method, TranslatesImages)):
        metrics["sample_metrics"] = f"skipped: method {name!r} cannot sample"
    metrics = jsonable(metrics)
    path = folder / "eval.json"
    t = write_json_or_table(path, metrics, as_json, f"{run_dir}  ({Path(metrics['checkpoint']).name})")
    if t is None:
        return
    for k, v in metrics.items():
        if k == "checkpoint" or k.endswith("_png"):
            continue
        if isinstance(v, dict) and k.startswith("per_class_"):
            for c, a in v.items():
                t.add_row(escape(f"  {c}"), f"{a:.4f}" if isinstance(a, float) else escape(str(a)))
        elif not isinstance(v, (dict, list)):  # big dicts / lists (kl_per_dim, ROC points, ...): eval.json only
            t.add_row(escape(k), f"{v:.4f}" if isinstance(v, float) else escape(str(v)))
    out.print(t)
    if isinstance(metrics.get("class_histogram"), dict):
        show("class histogram of the samples: see eval.json")
    for k, v in metrics.items():
        if k.endswith("_png"):
            show(f"{k[:-4].replace('_', ' ')}: {v}")
    show(f"eval.json: {path}")


#: test images scored for the reference line of ``profond eval --images``
REFERENCE_TEST_IMAGES = 1000


def score_images(method: Any, spec: str, folder: Path, run_name: str, *, as_json: bool, seed: int) -> None:
    """``profond eval RUN --images F``: bits/dim of each image of ``F`` (a file or a folder),
    printed beside the mean of the first test images, and written to images_bpd.csv."""
    from ..base.io import atomic_write_text
    from ..data.inputs import read_images
    from .common import no_capability

    if not supports(method, ScoresLikelihood):
        raise no_capability(method, "eval --images", ScoresLikelihood)
    x, names, notes = read_images(spec, tuple(method.image_shape))
    for note in notes:
        show(note, stderr=True)
    bpd = method.image_bpd(x, seed=seed).tolist()
    ref_x, _ = method.test_images(REFERENCE_TEST_IMAGES)
    ref = method.image_bpd(ref_x, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "images_bpd.csv"
    rows = [["image", "bits_per_dim"], *([n, f"{b:.6f}"] for n, b in zip(names, bpd, strict=True))]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_text(path, buf.getvalue())
    data = {"images": dict(zip(names, bpd, strict=True)), "test_mean_bpd": float(ref.mean()),
            "test_images": len(ref), "csv": str(path)}
    if as_json:
        sys.stdout.write(json.dumps(jsonable(data)) + "\n")
        return
    from rich.table import Table

    t = Table(title=escape(f"{run_name}: bits per dimension (lower: more likely under the model)"))
    t.add_column("image")
    t.add_column("bits/dim", justify="right")
    for n_, b in zip(names, bpd, strict=True):
        t.add_row(escape(n_), f"{b:.4f}")
    t.add_row(escape(f"test set (mean of the first {len(ref)})"), f"{float(ref.mean()):.4f}")
    out.print(t)
    show(f"images_bpd.csv: {path}")
