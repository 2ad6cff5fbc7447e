#!/usr/bin/env python
"""Train and export the Fashion-MNIST feature net of the generative evaluation kit.

    python scripts/train_feature_net.py                      # train (recipe fmnist-features) + export
    python scripts/train_feature_net.py --export RUN_DIR     # export an existing run only

Training goes through profond's own loop: ``profond train --recipe fmnist-features``
(model ``fmnist-features`` of :mod:`profond.metrics.features`; 9 epochs on 2 CPU threads:
the shipped run took 51 min on a machine shared with three other jobs; the similar
``fmnist-best`` recipe takes ~9 min on an idle one). The export then writes

* ``profond/assets/fmnist_features.safetensors``: the model's ``state_dict`` (fp32);
* ``profond/assets/fmnist_features.json``: its SHA-256 and size, this command, the data it
  saw, the recipe, the architecture, the normalisation and the test accuracy measured
  through :class:`profond.metrics.features.FeatureNet` on the 10,000 test images.

The export refuses (exit 1) a net under ``--min-accuracy`` (default 0.93) unless ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import save as st_save

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from profond import __version__  # noqa: E402
from profond.metrics import features as FN  # noqa: E402  (registers the fmnist-features model)

RECIPE = "fmnist-features"


def train(out: Path, threads: int, overrides: list[str]) -> Path:
    from profond.config import resolve
    from profond.train import train as run_train

    run_dir = out / f"fmnist-features-{datetime.now():%Y%m%d-%H%M%S}"
    cfg = resolve(recipe=RECIPE, flags={"train.threads": threads, "out": str(out), "name": run_dir.name},
                  overrides=overrides)
    t0 = time.perf_counter()
    result = run_train(cfg, run_dir=run_dir)
    print(f"trained in {time.perf_counter() - t0:.0f}s -> {result.run_dir}", flush=True)
    return Path(result.run_dir)


def test_accuracy(net: FN.FeatureNet, batch_size: int = 1000) -> tuple[float, float, dict]:
    """Accuracy of ``net`` on the Fashion-MNIST test set, fed [0, 1] images (the kit's input)."""
    from profond.data import load_dataset

    data = load_dataset("fashion-mnist")
    x, y = data.test_x, data.test_y
    correct, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            _, logits = net(x[i:i + batch_size].float() / 255.0)
            correct += int((logits.argmax(1) == y[i:i + batch_size]).sum())
    from profond.data.vision import PAYLOAD_SHA256

    # the decompressed IDX payloads: the same for every distribution of the files (gzip differs)
    data_info = {"dataset": "fashion-mnist", "source": data.source,
                 "train_examples": int(len(data.train_y)), "test_examples": int(len(y)),
                 "payload_sha256": {k: v[1] for k, v in PAYLOAD_SHA256["fashion-mnist"].items()}}
    return correct / len(y), time.perf_counter() - t0, data_info


def export(run_dir: Path, min_accuracy: float, force: bool) -> int:
    from profond.train import load_run

    method, trainer = load_run(run_dir, device="cpu")
    cfg = method.cfg
    model = method.raw_nets["model"].to("cpu").float().eval()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    # no safetensors metadata: it is a hash map whose key order varies between processes,
    # which would change the bytes (and the SHA-256) of identical weights
    data = st_save(state)

    arch = {"name": cfg.model.name, **cfg.model.args}
    info = {
        "name": "fmnist",
        "file": "fmnist_features.safetensors",
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "command": FN.TRAIN_COMMAND,
        "recipe": RECIPE,
        "config": {"model": arch, "optim": {"name": cfg.optim.name, "lr": cfg.optim.lr},
                   "sched": cfg.sched.name, "epochs": cfg.train.epochs,
                   "batch_size": cfg.data.batch_size, "augment": list(cfg.data.augment or []),
                   "seed": cfg.train.seed, "threads": cfg.train.threads},
        "model": {k: (list(v) if isinstance(v, tuple) else v) for k, v in arch.items()},
        "normalisation": {"mean": FN.FMNIST_MEAN, "std": FN.FMNIST_STD,
                          "input": "float images in [0, 1], (N, 1, H, W); resized to 28x28 (bilinear)"},
        "feature_dim": int(arch.get("dim", 128)),
        "feature_layer": "head[:-1]: FC -> BN -> ReLU embedding (input of the last Linear)",
        "num_classes": len(method.classes),
        "classes": list(method.classes),
    }
    net = FN.build_fmnist_net(state, info)
    acc, secs, data_info = test_accuracy(net)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    info.update({
        "test_accuracy": round(acc, 4),
        "data": {**data_info, "trained_on": "the 60,000 training images (val_size 0), random "
                 "horizontal flips; the test set was only used for the accuracy above"},
        "train_time_s": summary.get("train_time_s"),
        "run": run_dir.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"profond": __version__, "torch": torch.__version__, "python": platform.python_version()},
    })
    print(f"test accuracy {acc:.4f} (eval {secs:.1f}s), {len(data)} bytes, sha256 {info['sha256']}")
    if acc < min_accuracy and not force:
        print(f"refusing to export: test accuracy {acc:.4f} < {min_accuracy} (use --force)", file=sys.stderr)
        return 1
    weights, record = FN.asset_paths("fmnist")
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(data)
    record.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {weights} and {record}")
    FN.load_feature_net("fmnist")  # round trip: the hash check passes
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--export", type=Path, metavar="RUN_DIR", help="export this finished run, do not train")
    p.add_argument("--out", type=Path, default=ROOT / "runs", help="parent folder of the run (default runs/)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-accuracy", type=float, default=0.93)
    p.add_argument("--force", action="store_true", help="export even below --min-accuracy")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for a trial run (the shipped net uses none)")
    args = p.parse_args(argv)
    run_dir = args.export if args.export else train(args.out, args.threads, args.overrides)
    return export(run_dir, args.min_accuracy, args.force)


if __name__ == "__main__":
    sys.exit(main())
