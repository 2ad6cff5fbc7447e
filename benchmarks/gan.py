"""GAN benchmarks (issue 5, course chapter 8) with the evaluation kit of issue 4.

Every model is trained through the one loop (``profond.train.train``) from its recipe on the
Fashion-MNIST training set (55,000 images; 5,000 held out for the per-epoch val FID), fp32,
2 threads (``--threads``), seed 0, with a **fixed budget stated in the results**
(``--epochs``, default 5; ``--features`` 32 for G and D, i.e. the §8.7 layout at half the
course's width, because a features-64 DCGAN step takes ~0.5 s on this 2-core CPU and the
course's 25 epochs would take ~100 min per model). Samples come from the EMA generator
(``--ema``, default 0.995: an average over the last ~200 steps; after 2,150 steps the initial
weights keep a share 0.995^2150 ≈ 2e-5).

* ``gans``: ``dcgan`` (non-saturating, BatchNorm D, §8.7), ``wgan-gp`` (eq. 8.16, λ = 10,
  n_critic = 5, LayerNorm critic with conv biases, Adam 2e-4 betas (0, 0.9)), ``hinge-sn`` (hinge loss, spectral norm, no
  norm in D, TTUR 1e-4 / 4e-4) and ``cgan`` (conditional DCGAN, eq. 8.17). For each:
  FID / KID / IS / precision / recall (fmnist features) of ``--samples`` samples against the
  10,000 test images, the class histogram of the samples (entropy, smallest class share,
  missing classes), and for the cGAN the share of samples the kit's classifier assigns to
  their conditioning class (labels balanced, ``i mod 10``).
  Targets: cGAN label accuracy >= 85%; the best unconditional model (lowest FID) has no
  class under 5% of its samples.
* ``img2img``: the recipes ``fmnist-pix2pix-edges``, ``fmnist-pix2pix-inpaint`` and
  ``fmnist-sr`` as they are: test PSNR against their naive baselines (training-mean image,
  mean-filled hole, bicubic). Target: above the baseline, each.

    python benchmarks/gan.py                                # everything (~1 h on 2 idle cores)
    python benchmarks/gan.py --only gans --models dcgan cgan --epochs 5
    python benchmarks/gan.py --only img2img

Results: ``benchmarks/results/gan.json`` (merged per model) and ``gan.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import (
    RESULTS_DIR,
    Timer,
    add_lane_args,
    load_note,
    machine,
    md_table,
    read_json,
    record,
    train_recipe,
    write_json,
)

JSON_PATH = RESULTS_DIR / "gan.json"
MD_PATH = RESULTS_DIR / "gan.md"

#: model -> (recipe, extra overrides). Each row of table 8.1 of the course has its own knobs.
GANS: dict[str, tuple[str, list[str]]] = {
    "dcgan": ("fmnist-dcgan", []),
    "wgan-gp": ("fmnist-wgan-gp", []),
    "hinge-sn": ("fmnist-dcgan", ["method.loss=hinge", "model.spectral_norm=true", "model.d_norm=none",
                                  "optim.lr=1e-4", "optim.per_optimizer={D: {lr: 4e-4}}"]),
    "cgan": ("fmnist-cgan", []),
}
#: the course's DCGAN FID (table 8.1, base row: 25 epochs, features 64, its own feature net)
COURSE_FID = {"dcgan": 28.3, "wgan-gp": 23.4}
I2I = ["fmnist-pix2pix-edges", "fmnist-pix2pix-inpaint", "fmnist-sr"]


#: torch threads of each training run (``--threads``; 1 when two lanes share the 2 cores)
THREADS = 2


def bench_gan(out: Path, name: str, epochs: int, features: int, ema: float | None, n_samples: int,
              subset: int | None = None, sets: list[str] | None = None) -> dict[str, Any]:
    from profond.metrics.generative import evaluate_samples, extract, load_feature_net
    from profond.train.loop import load_run

    recipe, extra = GANS[name]
    over = [f"train.epochs={epochs}", f"model.features_g={features}", f"model.features_d={features}",
            "method.eval_n=2000", *extra]
    over += [f"train.ema_decay={ema}"] if ema else []
    over += [f"data.subset={subset}"] if subset else []
    over += sets or []
    res, wall = train_recipe(out, recipe, over, threads=THREADS, name=name)
    method, trainer = load_run(res.run_dir, checkpoint="last", device="cpu")  # EMA weights
    cfg = trainer.cfg
    labels = torch.arange(n_samples) % method.num_classes if method.conditional else None
    with Timer() as t_s:
        fake = torch.cat([method.sample(min(1000, n_samples - i), seed=1 + i // 1000,
                                        labels=None if labels is None else labels[i: i + 1000])
                          for i in range(0, n_samples, 1000)])
    real, _ = method.test_images()
    with Timer() as t_fid:
        gen = evaluate_samples(fake, real, features="fmnist", progress=False)
    hist = gen["class_histogram"]
    fr = hist["fractions"]
    g_updates = sum(1 for s in range(res.summary["steps"]) if s % method.opts.n_critic == 0)
    row: dict[str, Any] = {
        "model": name, "recipe": recipe, "loss": method.opts.loss, "n_critic": method.opts.n_critic,
        "lr_G/lr_D": _lrs(cfg), "batch": cfg.data.batch_size, "epochs": epochs, "threads": THREADS, "G_updates": g_updates,
        "params_G": res.summary["parameters"]["G"]["total"], "params_D": res.summary["parameters"]["D"]["total"],
        "train_s": round(res.summary["train_time_s"], 1), "wall_s": round(wall, 1),
        "fid": round(gen["fid"], 2), "kid_mean": round(gen["kid_mean"], 4), "kid_std": round(gen["kid_std"], 4),
        "is_mean": round(gen["is_mean"], 3), "precision": round(gen["precision"], 3),
        "recall": round(gen["recall"], 3), "class_entropy": round(hist["normalised_entropy"], 4),
        "min_class_fraction": round(min(fr.values()), 4), "min_class": min(fr, key=fr.get),
        "missing_classes": len(hist["missing"]), "course_fid": COURSE_FID.get(name),
        "status": res.summary.get("status"), "sample_s": round(t_s.s, 1), "fid_s": round(t_fid.s, 1),
        "class_fractions": fr,
    }
    if labels is not None:
        _, probs = extract(load_feature_net("fmnist"), fake)
        pred = probs.argmax(1)
        row["label_accuracy"] = round(float((pred == labels).double().mean()), 4)
        row["label_accuracy_per_class"] = {method.classes[c]: round(float((pred[labels == c] == c).double().mean()), 4)
                                           for c in range(method.num_classes)}
    print(f"  {name}: FID {row['fid']}  KID {row['kid_mean']}  min class {row['min_class_fraction']} "
          f"({row['min_class']})" + (f"  label acc {row['label_accuracy']}" if labels is not None else "")
          + f"  train {row['train_s']} s", flush=True)
    return row


def _lrs(cfg: Any) -> str:
    from profond.train.optim import optimizer_cfg_for

    return " / ".join(f"{optimizer_cfg_for(cfg.optim, n).lr:g}" for n in ("G", "D"))


def bench_img2img(out: Path) -> list[dict[str, Any]]:
    rows = []
    for recipe in I2I:
        res, wall = train_recipe(out, recipe, threads=THREADS)
        f = res.summary["final"]
        row = {"recipe": recipe, "test_psnr": round(f["test_psnr"], 2),
               "baseline_psnr": round(f["test_baseline_psnr"], 2), "gain_db": round(f["test_psnr_gain"], 2),
               "test_ssim": round(f["test_ssim"], 3) if "test_ssim" in f else None,
               "baseline_ssim": round(f["test_baseline_ssim"], 3) if "test_baseline_ssim" in f else None,
               "train_s": round(res.summary["train_time_s"], 1), "wall_s": round(wall, 1)}
        print(f"  {recipe}: PSNR {row['test_psnr']} vs baseline {row['baseline_psnr']}", flush=True)
        rows.append(row)
    return rows


def targets(data: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    gans = data.get("gans", {})
    if "cgan" in gans:
        t["cgan_label_accuracy_ge_0.85"] = bool(gans["cgan"]["label_accuracy"] >= 0.85)
    unc = [r for k, r in gans.items() if k != "cgan"]
    if unc:
        best = min(unc, key=lambda r: r["fid"])
        t["best_unconditional"] = best["model"]
        t["best_no_class_under_5pct"] = bool(best["min_class_fraction"] >= 0.05)
    for r in data.get("img2img", {}).get("rows", []):
        t[f"{r['recipe']}_above_baseline"] = bool(r["test_psnr"] > r["baseline_psnr"])
    return t


def write_md(data: dict[str, Any]) -> None:
    lines = ["# GAN benchmarks (`benchmarks/gan.py`)", ""]
    gans = data.get("gans", {})
    if gans:
        lines += ["## Unconditional and conditional GANs on Fashion-MNIST", "",
                  "FID / KID / IS / precision / recall with the shipped Fashion-MNIST feature net (not "
                  "Inception: the course's FIDs in `course_fid` are not on the same scale), samples of the "
                  "EMA generator against the 10,000 test images. Each row's command and load are listed below.",
                  ""]
        keys = [k for k in next(iter(gans.values())) if k not in ("class_fractions", "label_accuracy_per_class",
                                                                   "command", "load", "machine")]
        keys += ["label_accuracy"] if "label_accuracy" not in keys and "cgan" in gans else []
        lines += [md_table(keys, [[r.get(k, "") for k in keys] for r in gans.values()]), ""]
        for k, r in gans.items():
            lines.append(f"- `{k}`: `{r['command']}` ({r['load']})")
        if "cgan" in gans:
            lines += ["", "cGAN label accuracy per class: " + ", ".join(
                f"{c} {v:.2f}" for c, v in gans["cgan"]["label_accuracy_per_class"].items())]
        lines.append("")
    if "img2img" in data:
        v = data["img2img"]
        lines += [f"## Image-to-image recipes ({v['command']}; {v['load']})", ""]
        keys = list(v["rows"][0])
        lines += [md_table(keys, [[r[k] for k in keys] for r in v["rows"]]), ""]
    lines += [f"Targets: {targets(data)}", ""]
    MD_PATH.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=["gans", "img2img"], choices=["gans", "img2img"])
    ap.add_argument("--models", nargs="*", default=list(GANS), choices=list(GANS))
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each GAN (full training set)")
    ap.add_argument("--features", type=int, default=32, help="features_g = features_d (course: 64)")
    ap.add_argument("--ema", type=float, default=0.995, help="EMA decay of G (0 = none)")
    ap.add_argument("--samples", type=int, default=10000, help="samples for FID/KID/IS")
    ap.add_argument("--subset", type=int, default=None, help="train on the first N images (smoke tests only)")
    ap.add_argument("--set", nargs="*", default=[], dest="sets", metavar="KEY=VALUE",
                    help="extra overrides for every model (a trial; the row records them)")
    add_lane_args(ap)
    a = ap.parse_args()
    global THREADS
    THREADS = a.threads
    torch.set_num_threads(a.threads)
    cmd = "python benchmarks/gan.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="profond-gan-") as tmp:
        out = a.keep or Path(tmp)
        for part in a.only:
            if part == "gans":
                for name in a.models:
                    load = load_note(os.getloadavg())
                    print(f"{name} ({load})", flush=True)
                    row = bench_gan(out, name, a.epochs, a.features, a.ema if a.ema > 0 else None, a.samples,
                                    a.subset, a.sets)
                    row.update(overrides=a.sets, command=cmd, load=load, machine=machine())
                    data = read_json(JSON_PATH, {})  # re-read: parallel invocations merge per model
                    data.setdefault("gans", {})[name] = row
                    data["targets"] = targets(data)
                    write_json(JSON_PATH, data)
                    write_md(data)
            else:
                load = load_note(os.getloadavg())
                print(f"img2img ({load})", flush=True)
                rows = bench_img2img(out)
                write_md(record(JSON_PATH, "img2img", {"rows": rows, "command": cmd, "load": load,
                                                       "machine": machine()}, targets))
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main()
