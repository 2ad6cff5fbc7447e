"""Generative benchmarks of the AE / VAE family (issue 4) with the evaluation kit.

Every model is trained through the one loop (``profond.train.train``) on Fashion-MNIST,
fp32, 2 threads, then measured on the test set:

* ``vae``: the course's MLP VAE (784-512-20, §9.8) and the conv VAE (exercise 9.3) at the
  same epochs: test ELBO (nats per image); the IWAE-``k`` log-likelihood estimate (eq. 9.29,
  ``--iwae-k``, default 1000) on the first ``--iwae-n`` test images against the ELBO of the
  same images; FID / KID / IS (fmnist features) of 10,000 samples of each.
  Targets: conv ELBO > MLP ELBO; IWAE-1000 bound > ELBO (tighter).
* ``vqvae``: K = 512, d = 64 VQ-VAE (recipe ``fmnist-vqvae``): fraction of the 512 codes
  used on the test set. Target > 50%.
* ``anomaly``: one-class protocol, one conv AE per Fashion-MNIST class, test ROC-AUC per
  class and mean. Target mean >= 0.80.

    python benchmarks/generative.py                      # everything (see --help for sizes)
    python benchmarks/generative.py --only vae --epochs 10
    python benchmarks/generative.py --only anomaly --anomaly-epochs 5

Results: ``benchmarks/results/generative.json`` (merged per part) and ``generative.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from common import RESULTS_DIR, Timer, load_note, machine, md_table, read_json, write_json

JSON_PATH = RESULTS_DIR / "generative.json"
MD_PATH = RESULTS_DIR / "generative.md"


def train_run(out: Path, name: str, overrides: list[str]) -> tuple[Any, float]:
    from profond.config import resolve
    from profond.train import train

    cfg = resolve(overrides=["data.name=fashion-mnist", "train.quiet=true", "train.device=cpu",
                             "train.threads=2", "train.precision=fp32", "train.seed=0",
                             f"out={out}", f"name={name}", *overrides])
    with Timer() as t:
        res = train(cfg)
    return res, t.s


def loaded(run_dir: Path):
    from profond.train.loop import load_run

    return load_run(run_dir, checkpoint="last", device="cpu")


def bench_vae(out: Path, epochs: int, iwae_k: int, iwae_n: int, n_samples: int) -> dict[str, Any]:
    from profond.data import Batches
    from profond.methods.generative import PIXELS
    from profond.metrics.generative import evaluate_samples

    rows = []
    arches = {"mlp-512 (course §9.8)": ["model.arch=mlp", "model.hidden=[512]"],
              "conv (exercise 9.3)": ["model.arch=conv"]}
    for label, args in arches.items():
        name = "vae-" + label.split()[0]
        res, wall = train_run(out, name, ["model.name=vae", "model.latent_dim=20", *args,
                                          "optim.name=adam", "optim.lr=1e-3", "data.batch_size=128",
                                          "data.val_size=0", f"train.epochs={epochs}"])
        method, trainer = loaded(res.run_dir)
        final = res.summary["final"]
        x, y = method.test_images(iwae_n)
        sub = Batches((x * 255).round().to(torch.uint8), y, batch_size=500, shuffle=False, **PIXELS)
        elbo_sub = trainer.evaluate(sub)["elbo"]
        with Timer() as t_iwae:
            ll = method.iwae(x, k=iwae_k, seed=0)
        samples = method.sample(n_samples, seed=0)
        real, _ = method.test_images()
        with Timer() as t_fid:
            gen = evaluate_samples(samples, real, features="fmnist", progress=False)
        row = {
            "model": label, "params": res.summary["parameters"]["model"]["total"],
            "epochs": epochs, "train_s": round(res.summary["train_time_s"], 1), "wall_s": round(wall, 1),
            "test_elbo": round(final["test_elbo"], 2), "test_recon": round(final["test_recon"], 2),
            "test_kl": round(final["test_kl"], 2), "test_active_units": final.get("test_active_units"),
            f"elbo_first{iwae_n}": round(elbo_sub, 2), f"iwae{iwae_k}_first{iwae_n}": round(ll.mean().item(), 2),
            "iwae_nll_nats": round(-ll.mean().item(), 2), "iwae_s": round(t_iwae.s, 1),
            "fid": round(gen["fid"], 2), "kid_mean": round(gen["kid_mean"], 4), "kid_std": round(gen["kid_std"], 4),
            "is_mean": round(gen["is_mean"], 3), "precision": round(gen["precision"], 3),
            "recall": round(gen["recall"], 3), "fid_s": round(t_fid.s, 1),
            "class_fractions": gen["class_histogram"].get("fractions"),
        }
        print(f"  {label}: test ELBO {row['test_elbo']}  IWAE-{iwae_k} {row[f'iwae{iwae_k}_first{iwae_n}']} "
              f"(ELBO same images {row[f'elbo_first{iwae_n}']})  FID {row['fid']}  train {row['train_s']} s",
              flush=True)
        rows.append(row)
    mlp, conv = rows
    return {
        "rows": rows,
        "targets": {
            "conv_elbo_better_than_mlp": bool(conv["test_elbo"] > mlp["test_elbo"]),
            "iwae_tighter_than_elbo": all(r[f"iwae{iwae_k}_first{iwae_n}"] > r[f"elbo_first{iwae_n}"] for r in rows),
        },
        "best_iwae_nll_nats": min(r["iwae_nll_nats"] for r in rows),
        "settings": {"epochs": epochs, "iwae_k": iwae_k, "iwae_n": iwae_n, "n_samples": n_samples,
                     "likelihood": "bernoulli on grey-level pixels (BCE, as the course)"},
    }


def bench_vqvae(out: Path, epochs: int | None) -> dict[str, Any]:
    from profond.config import resolve
    from profond.train import train

    over = ["train.quiet=true", "train.device=cpu", "train.threads=2", "train.seed=0",
            f"out={out}", "name=vqvae"]
    if epochs:
        over.append(f"train.epochs={epochs}")
    cfg = resolve(recipe="fmnist-vqvae", overrides=over)
    with Timer() as t:
        res = train(cfg)
    f = res.summary["final"]
    usage = f.get("test_usage")
    row = {"recipe": "fmnist-vqvae", "epochs": cfg.train.epochs, "num_codes": cfg.model.args.get("num_codes", 512),
           "test_usage": usage, "test_perplexity": f.get("test_perplexity"), "test_psnr": f.get("test_psnr"),
           "test_recon": f.get("test_recon"), "train_s": round(res.summary["train_time_s"], 1),
           "wall_s": round(t.s, 1)}
    print(f"  vqvae: usage {usage}  perplexity {row['test_perplexity']}  PSNR {row['test_psnr']}", flush=True)
    return {"rows": [row], "targets": {"usage_above_50pct": bool(usage is not None and usage > 0.5)}}


def bench_anomaly(out: Path, epochs: int, arch: str) -> dict[str, Any]:
    from profond.experiments import finite

    rows = []
    with Timer() as t_all:
        for c in range(10):
            res, wall = train_run(out, f"ae-class{c}", [
                "model.name=ae", f"model.arch={arch}", "model.latent_dim=32", "method.loss=mse",
                f"method.normal_class={c}", "optim.name=adam", "optim.lr=1e-3",
                "data.val_size=5000", f"train.epochs={epochs}"])
            f = res.summary["final"]
            rows.append({"normal_class": c, "test_roc_auc": round(f["test_roc_auc"], 4),
                         "test_f1": round(finite(f.get("test_f1")), 4), "train_s": round(res.summary["train_time_s"], 1)})
            print(f"  class {c}: ROC-AUC {rows[-1]['test_roc_auc']}", flush=True)
    mean = sum(r["test_roc_auc"] for r in rows) / len(rows)
    return {"rows": rows, "mean_roc_auc": round(mean, 4), "arch": arch, "epochs": epochs,
            "total_s": round(t_all.s, 1), "targets": {"mean_roc_auc_ge_0.80": bool(mean >= 0.80)}}


def write_md(data: dict[str, Any]) -> None:
    lines = ["# Generative benchmarks (`benchmarks/generative.py`)", ""]
    if "vae" in data:
        v = data["vae"]
        s = v["settings"]
        lines += [f"## VAE: MLP vs conv, {s['epochs']} epochs each ({v['command']}; {v['load']})", ""]
        keys = [k for k in v["rows"][0] if k != "class_fractions"]
        lines += [md_table(keys, [[r[k] for k in keys] for r in v["rows"]]), ""]
        lines += [f"Targets: {v['targets']}. Best IWAE-{s['iwae_k']} NLL: {v['best_iwae_nll_nats']} nats "
                  f"({s['likelihood']}).", ""]
    if "vqvae" in data:
        v = data["vqvae"]
        lines += [f"## VQ-VAE K=512 ({v['command']}; {v['load']})", ""]
        keys = list(v["rows"][0])
        lines += [md_table(keys, [[r[k] for k in keys] for r in v["rows"]]), "", f"Targets: {v['targets']}", ""]
    if "anomaly" in data:
        v = data["anomaly"]
        lines += [f"## One-class anomaly detection, {v['arch']} AE, {v['epochs']} epochs per class "
                  f"({v['command']}; {v['load']})", ""]
        keys = list(v["rows"][0])
        lines += [md_table(keys, [[r[k] for k in keys] for r in v["rows"]]), "",
                  f"Mean ROC-AUC {v['mean_roc_auc']} in {v['total_s']} s. Targets: {v['targets']}", ""]
    MD_PATH.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="*", default=["vae", "vqvae", "anomaly"], choices=["vae", "vqvae", "anomaly"])
    ap.add_argument("--epochs", type=int, default=10, help="VAE epochs (both architectures)")
    ap.add_argument("--iwae-k", type=int, default=1000)
    ap.add_argument("--iwae-n", type=int, default=1000, help="test images of the IWAE estimate")
    ap.add_argument("--samples", type=int, default=10000, help="samples for FID/KID/IS")
    ap.add_argument("--vq-epochs", type=int, default=None, help="override the fmnist-vqvae recipe's epochs")
    ap.add_argument("--anomaly-epochs", type=int, default=5)
    ap.add_argument("--anomaly-arch", default="conv")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    a = ap.parse_args()
    torch.set_num_threads(2)
    data = read_json(JSON_PATH, {})
    cmd = "python benchmarks/generative.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="profond-gen-") as tmp:
        out = a.keep or Path(tmp)
        for part in a.only:
            load = load_note(__import__("os").getloadavg())
            print(f"{part} ({load})", flush=True)
            if part == "vae":
                r = bench_vae(out, a.epochs, a.iwae_k, a.iwae_n, a.samples)
            elif part == "vqvae":
                r = bench_vqvae(out, a.vq_epochs)
            else:
                r = bench_anomaly(out, a.anomaly_epochs, a.anomaly_arch)
            r.update(command=cmd, load=load, machine=machine())
            data[part] = r
            write_json(JSON_PATH, data)
            write_md(data)
    print(MD_PATH.read_text())


if __name__ == "__main__":
    main()
