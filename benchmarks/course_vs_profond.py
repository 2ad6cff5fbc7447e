"""The course's way of training a CNN versus profond's loop, side by side in one run.

Both sides train the same CNN (built through ``profond.registry.MODELS``, same seed, so the
same initial weights) on the same Fashion-MNIST training images for the same number of
epochs, batch 128, Adam (lr 1e-3), 2 threads:

course
    as the code of §4.6: a ``torch.utils.data.Dataset`` whose ``__getitem__`` converts
    one uint8 image to float and normalises it, a ``DataLoader`` (batch 128, shuffle,
    ``num_workers=0``), fp32, and the plain loop ``zero_grad / forward / loss / backward /
    step`` with ``loss.item()`` and the running accuracy read every step.
profond
    ``profond.train.train`` with the same model, batch and optimizer and profond's fast
    CPU settings: bf16 autocast, channels_last, batches sliced from tensors already on
    the device.

Reported: training samples/s of each (training only: evaluation excluded; profond's number
is its ``metrics.csv`` per-epoch throughput), their ratio (target: profond >= 3x the
course), and the test accuracy of each after the same epochs, so that speed is not bought
with quality.

    python benchmarks/course_vs_profond.py                    # fmnist-cnn, 1 epoch
    python benchmarks/course_vs_profond.py --epochs 2 --model course-cnn --set width=32

Writes ``benchmarks/results/course_vs_profond.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time

import torch
import torch.nn as nn
from common import RESULTS_DIR, load_note, machine, md_table, write_json
from torch.utils.data import DataLoader, Dataset

from profond.base.device import resolve_precision
from profond.config import parse_override, resolve
from profond.data import load_dataset
from profond.registry import MODELS
from profond.train import train
from profond.train.loop import seed_everything


class CourseDataset(Dataset):
    """Per-sample dataset, as the course's torchvision pipeline: ToTensor + Normalize per item."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: float, std: float):
        self.x, self.y, self.mean, self.std = x, y, mean, std

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.x[i].float().div(255.0)  # (1, 28, 28) uint8 -> float in [0, 1]
        img = (img - self.mean) / self.std
        return img, int(self.y[i])


def course_train(model: nn.Module, loader: DataLoader, epochs: int) -> float:
    """The §4.6 loop; returns training samples/s (evaluation not included)."""
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    total_time, total_samples = 0.0, 0
    for epoch in range(epochs):
        model.train()
        train_loss, correct, total = 0.0, 0, 0
        t0 = time.perf_counter()
        for inputs, targets in loader:
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * inputs.size(0)
            correct += (outputs.argmax(1) == targets).sum().item()
            total += targets.size(0)
        total_time += time.perf_counter() - t0
        total_samples += total
        print(f"  course epoch {epoch + 1}: loss {train_loss / total:.4f} acc {correct / total:.4f} "
              f"{total / (time.perf_counter() - t0):,.0f} samples/s", flush=True)
    return total_samples / total_time


@torch.no_grad()
def course_test(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct, total = 0, 0
    for inputs, targets in loader:
        correct += (model(inputs).argmax(1) == targets).sum().item()
        total += targets.size(0)
    return correct / total


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="fmnist-cnn")
    p.add_argument("--set", dest="model_args", action="append", default=[],
                   help="model argument KEY=VALUE, e.g. width=32")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--subset", type=int, help="train on the first N training images only (smoke tests)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="profond's precision; auto: bf16 if the CPU has bf16 hardware, else fp32")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model_args = dict(parse_override(a) for a in args.model_args)
    precision = resolve_precision(args.precision, torch.device("cpu"))[0]
    info = machine()
    print(f"{args.model} {model_args}, {args.epochs} epoch(s), {args.threads} threads, "
          f"{load_note(info['load_avg_1_5_15'])}", flush=True)

    # -- the course's way
    data = load_dataset("fashion-mnist", progress=False)
    seed_everything(args.seed)
    model = MODELS.build(args.model, in_shape=tuple(data.shape), num_classes=10, **model_args)
    n_train = args.subset or len(data.train_y)
    train_loader = DataLoader(CourseDataset(data.train_x[:n_train], data.train_y[:n_train], data.mean[0], data.std[0]),
                              batch_size=128, shuffle=True, num_workers=0)
    test_loader = DataLoader(CourseDataset(data.test_x, data.test_y, data.mean[0], data.std[0]),
                             batch_size=1000, shuffle=False, num_workers=0)
    course_sps = course_train(model, train_loader, args.epochs)
    course_acc = course_test(model, test_loader)
    print(f"course : {course_sps:,.0f} samples/s, test accuracy {course_acc:.4f}", flush=True)

    # -- profond's loop
    out = tempfile.mkdtemp(prefix="profond-cvp-")
    try:
        cfg = resolve(overrides=[
            f"model.name={args.model}", *(f"model.{a}" for a in args.model_args),
            "data.val_size=0", f"data.subset={n_train}", "data.batch_size=128", "optim.name=adam", "optim.lr=0.001",
            f"train.epochs={args.epochs}", f"train.seed={args.seed}", f"train.threads={args.threads}",
            f"train.precision={precision}", "train.channels_last=true", "train.quiet=true",
            f"out={out}", "name=profond",
        ])
        result = train(cfg)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    epoch_sps = [row["samples_per_s"] for row in result.history]
    profond_sps = len(epoch_sps) / sum(1 / s for s in epoch_sps)  # equal-size epochs
    profond_acc = result.summary["final"]["test_accuracy"]
    ratio = profond_sps / course_sps
    print(f"profond: {profond_sps:,.0f} samples/s, test accuracy {profond_acc:.4f}", flush=True)
    print(f"speed-up {ratio:.2f}x (target >= 3x); accuracy difference "
          f"{profond_acc - course_acc:+.4f}", flush=True)

    command = " ".join(["python benchmarks/course_vs_profond.py", *sys.argv[1:]])
    settings = {
        "course": "per-sample Dataset + DataLoader(batch 128, shuffle, num_workers=0), fp32, Adam 1e-3",
        "profond": f"profond.train.train, batch 128, Adam 1e-3, {precision}"
                   f"{' autocast' if precision == 'bf16' else ''}, channels_last, on-device batches",
    }
    write_json(RESULTS_DIR / "course_vs_profond.json", {
        "model": args.model, "model_args": model_args, "epochs": args.epochs,
        "threads": args.threads, "seed": args.seed, "train_examples": n_train,
        "course": {"samples_per_s": round(course_sps, 1), "test_accuracy": course_acc,
                   "settings": settings["course"]},
        "profond": {"samples_per_s": round(profond_sps, 1), "test_accuracy": profond_acc,
                    "settings": settings["profond"]},
        "speedup": round(ratio, 2), "target_speedup": 3.0, "met": ratio >= 3.0,
        "machine": info, "command": command,
    })
    rows = [[name, settings[name], f"{sps:,.0f}", f"{acc:.4f}"]
            for name, sps, acc in (("course", course_sps, course_acc), ("profond", profond_sps, profond_acc))]
    (RESULTS_DIR / "course_vs_profond.md").write_text(
        f"# Course loop vs profond ({args.model} {model_args}, {args.epochs} epoch(s) on "
        f"{n_train:,} images, {args.threads} threads)\n\n"
        + md_table(["loop", "settings", "train samples/s", "test accuracy"], rows)
        + f"\n\nSpeed-up: **{ratio:.2f}x** (target >= 3x). Test accuracy after the same epochs: "
        f"course {course_acc:.4f}, profond {profond_acc:.4f}.\n\n"
        f"`{command}` on {info['cpu']}, {info['date']}, {load_note(info['load_avg_1_5_15'])}.\n"
    )
    print(f"wrote {RESULTS_DIR / 'course_vs_profond.json'} and {RESULTS_DIR / 'course_vs_profond.md'}")


if __name__ == "__main__":
    main()
