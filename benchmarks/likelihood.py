"""Likelihood benchmarks (issue 18): exact bits/dim of the flows (RealNVP, Glow) and of the Gated
PixelCNN against training time in a CPU budget, and what a sample costs in each family.

1. **Sampling** (``sampling``): the recipes ``fmnist-realnvp``, ``fmnist-glow`` and
   ``fmnist-pixelcnn`` built as they are (random weights: the time of a call does not depend on
   them; the method's own ``sample``), each drawing a batch of ``--batch`` images, rows timed
   interleaved ``--repeats`` times, median. A flow draws a batch in **one** inverse pass
   (``x = s⁻¹(f⁻¹(τ ε))``); the PixelCNN in **H·W** sequential forward passes (one per pixel, in
   raster order; pass ``i`` reads the rows up to pixel ``i``). Reported: seconds per image,
   network passes per image, parameters, and the PixelCNN / flow ratio of the time per image.
2. **Curve** (``curve``, long: run on demand): each family trained from its recipe through the
   one loop on ``--dataset`` (``auto``: MNIST when its files load with ``download=False``, else
   Fashion-MNIST, the results say which and why) for a CPU budget of ``--budget-s`` training
   seconds per family. A probe of ``--probe-steps`` steps gives the seconds per step (median,
   the first step left out); the run then takes ``steps = budget / (s/step)`` optimizer steps.
   The recipe's LR schedule (warm-up, cosine) spans its epochs, so the run is made of exactly
   those steps: under one epoch of the training set, one epoch of ``data.subset = steps × batch``
   images; above, ``E = ⌈steps / batches per epoch⌉`` epochs of the first ``⌈steps / E⌉ × batch``
   images (``train.max_steps`` cuts the < E extra steps): the schedule ends with the budget (the
   final learning rate is recorded). ``data.val_size=0`` (no validation pass: the curve is
   measured on test images), ``method.grid_n=0`` (no sample grids), fp32, seed 0.
   Every ``steps / 8`` steps (and before the first) a callback measures the test bits/dim of a
   fixed subset of ``--eval-n`` test images (seeded, the method's ``image_bpd``, dequantization
   seed 0 for the flows), and the training seconds so far, **without** the evaluations. The
   final row: budget, steps, fraction of an epoch, the final bits/dim on the **full** test set
   (the loop's test evaluation), the target and the published anchor. Targets (MNIST): flow
   <= 1.20, Gated PixelCNN <= 0.80 bits/dim; anchors (MNIST): RealNVP 1.06, Glow 1.05, a pixel
   Transformer 0.62. On another dataset the targets are not judged. ``likelihood_curve.png``
   (bits/dim against training seconds, anchors dashed on MNIST) is written next to the results.

    python benchmarks/likelihood.py --only sampling             # a few minutes, 1 thread
    python benchmarks/likelihood.py --only curve                # 3 x 600 s of training + evaluations
    python benchmarks/likelihood.py --only curve --budget-s 1800 --dataset fashion-mnist
    python benchmarks/likelihood.py --quick --out /tmp/bench    # digits 8x8, tiny models, seconds

Writes ``OUT/likelihood.json`` and ``likelihood.md`` (``--out``, default ``benchmarks/results``),
merged per part, each part with its command, load average and machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import RESULTS_DIR, load_note, machine, md_table, provenance, read_json, write_json

from profond.contract import Callback, Env

PARTS = ("sampling", "curve")
#: family -> recipe (all 28x28, 1 channel)
RECIPES = {"realnvp": "fmnist-realnvp", "glow": "fmnist-glow", "pixelcnn": "fmnist-pixelcnn"}
#: test bits/dim targets of issue 18, for MNIST: a flow <= 1.20, the Gated PixelCNN <= 0.80
TARGETS = {"realnvp": 1.20, "glow": 1.20, "pixelcnn": 0.80}
#: published MNIST test bits/dim the issue compares with
ANCHORS = {"realnvp": ("RealNVP", 1.06), "glow": ("Glow", 1.05), "pixelcnn": ("a pixel Transformer", 0.62)}
#: --quick: models of a few hundred parameters on 8x8 digits
QUICK_MODELS = {"realnvp": ["model.hidden=8", "model.steps=1"], "glow": ["model.hidden=8", "model.steps=1"],
                "pixelcnn": ["model.width=8", "model.layers=2", "model.out_hidden=16"]}
CURVE_POINTS = 8
FIGURE = "likelihood_curve.png"


def is_flow(method: Any) -> bool:
    return method.cfg.method.name == "flow"


def overrides_for(family: str, a: argparse.Namespace, dataset: str) -> list[str]:
    """What every run of ``family`` changes of its recipe (quiet CPU fp32, seed 0, the dataset)."""
    return ["train.quiet=true", "train.device=cpu", f"train.threads={a.threads}", "train.precision=fp32",
            "train.seed=0", f"data.name={dataset}", "data.download=false",
            *(QUICK_MODELS[family] if a.quick else [])]


def build_method(family: str, overrides: list[str]) -> Any:
    """The recipe's method with its nets built (random weights), no training loaders."""
    from profond.config import resolve, resolve_method
    from profond.registry import METHODS, load_all

    load_all()
    cfg = resolve_method(resolve(recipe=RECIPES[family], overrides=overrides))
    torch.manual_seed(0)
    method = METHODS.get(cfg.method.name)(cfg, Env(device=torch.device("cpu")), with_data=False)
    method.unwrapped().eval()
    return method


def params(method: Any) -> int:
    return sum(p.numel() for p in method.unwrapped().parameters())


def passes_per_image(method: Any) -> int:
    """Network passes to draw an image: one inverse pass for a flow, H·W for the PixelCNN."""
    if is_flow(method):
        return 1
    _, h, w = method.grid_shape
    return h * w


@torch.no_grad()
def warm_up(method: Any, n: int) -> None:
    """One pass of the net at the batch size (allocator, oneDNN kernels) before timing."""
    if is_flow(method):
        method.sample(n, seed=1)
    else:
        with method.eval_mode() as model:
            model(method.levels_input(torch.zeros(n, *method.grid_shape, dtype=torch.long)), None)


def bench_sampling(a: argparse.Namespace) -> dict[str, Any]:
    dataset = "digits" if a.quick else "fashion-mnist"  # the recipes' data (28x28); --quick: 8x8
    methods = {f: build_method(f, overrides_for(f, a, dataset)) for f in RECIPES}
    for m in methods.values():
        warm_up(m, a.batch)
    times: dict[str, list[float]] = {f: [] for f in methods}
    for r in range(a.repeats):  # interleaved: a change of load hits every row alike
        for f, m in methods.items():
            t0 = time.perf_counter()
            x = m.sample(a.batch, seed=r)
            times[f].append(time.perf_counter() - t0)
            assert x.shape == (a.batch, *m.image_shape)
    rows = []
    for f, m in methods.items():
        s_call = statistics.median(times[f])
        passes = passes_per_image(m)
        row = {"family": f, "recipe": RECIPES[f], "model": m.cfg.model.name, "model_args": dict(m.cfg.model.args),
               "params": params(m), "passes_per_image": passes, "s_per_batch": round(s_call, 4),
               "s_per_image": round(s_call / a.batch, 5), "images_per_s": round(a.batch / s_call, 3),
               "ms_per_pass": round(1e3 * s_call / passes, 3), "times_s": [round(t, 4) for t in times[f]]}
        rows.append(row)
        print(f"  {f}: {row['s_per_image']} s/image ({passes} passes of batch {a.batch}, "
              f"{row['ms_per_pass']} ms/pass), {row['params']:,} parameters", flush=True)
    per_image = {r["family"]: r["s_per_image"] for r in rows}
    ratios = {f"pixelcnn/{f}": round(per_image["pixelcnn"] / per_image[f], 1) for f in ("realnvp", "glow")}
    print(f"  PixelCNN / flow time per image: {ratios}", flush=True)
    return {"dataset": dataset, "image_shape": list(methods["pixelcnn"].image_shape), "batch": a.batch,
            "repeats": a.repeats, "temperature": 1.0, "rows": rows, "ratio_s_per_image": ratios}


# -- the curve ---------------------------------------------------------------------------------
def pick_dataset(a: argparse.Namespace) -> tuple[str, str]:
    """The dataset of the curve and why: --quick digits, --dataset, else MNIST if it loads."""
    from profond.data.vision import load_dataset
    from profond.errors import DatasetError

    if a.quick:
        return "digits", "--quick: scikit-learn's 8x8 digits (offline) and tiny models"
    if a.dataset != "auto":
        return a.dataset, f"--dataset {a.dataset}"
    try:
        load_dataset("mnist", download=False, progress=False)
        return "mnist", "MNIST files found (load_dataset('mnist', download=False))"
    except DatasetError as e:
        why = str(e).split(". ")[0]
        return "fashion-mnist", (f"MNIST is not on this machine (load_dataset('mnist', download=False): {why}): "
                                 "Fashion-MNIST instead")


class ProbeDone(Exception):
    """Raised by :class:`Probe` to leave the loop once its steps are timed (no test pass)."""


class Probe(Callback):
    """Times ``steps`` optimizer steps, then stops training by raising :class:`ProbeDone`."""

    def __init__(self, steps: int):
        self.steps, self.step_s = steps, []

    def on_train_start(self, loop: Any) -> None:
        self.t = time.perf_counter()

    def on_step_end(self, loop: Any, step: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        self.step_s.append(now - self.t)
        self.t = now
        if len(self.step_s) >= self.steps:
            raise ProbeDone


class BpdCurve(Callback):
    """Test bits/dim of fixed images ``x`` before training and every ``every`` steps (and at
    ``last``), against the training seconds so far: the time between the end of one step
    and the end of the next, the evaluations (this callback's and the loop's) left out."""

    def __init__(self, x: torch.Tensor, every: int, last: int, seed: int):
        self.x, self.every, self.last, self.seed = x, every, last, seed
        self.points: list[dict[str, Any]] = []
        self.train_s = self.eval_s = 0.0
        self.final_lr: float | None = None

    def measure(self, loop: Any, step: int) -> None:
        t0 = time.perf_counter()
        bpd = float(loop.method.image_bpd(self.x, seed=self.seed).mean())
        dt = time.perf_counter() - t0
        self.eval_s += dt
        self.points.append({"step": step, "train_s": round(self.train_s, 2), "bpd": round(bpd, 4),
                            "eval_s": round(dt, 2)})

    def on_train_start(self, loop: Any) -> None:
        self.measure(loop, 0)
        self.t = time.perf_counter()

    def on_step_end(self, loop: Any, step: int, metrics: dict[str, float]) -> None:
        self.train_s += time.perf_counter() - self.t
        self.final_lr = loop.lr()
        if step % self.every == 0 or step == self.last:
            self.measure(loop, step)
        self.t = time.perf_counter()

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self.t = time.perf_counter()  # an epoch's end (validation, if any) is not training


def run_loop(family: str, overrides: list[str], out: Path, name: str, callback: Callback) -> Any:
    """One run of the family's recipe through the one loop into ``out/name``."""
    from profond.config import resolve
    from profond.train import train

    cfg = resolve(recipe=RECIPES[family], overrides=[*overrides, f"out={out}", f"name={name}"])
    return train(cfg, callbacks=[callback])


def train_family(family: str, a: argparse.Namespace, dataset: str, out: Path) -> dict[str, Any]:
    from profond.config import resolve
    from profond.data.vision import default_val_size, load_dataset

    base = [*overrides_for(family, a, dataset), "data.val_size=0", "method.grid_n=0"]
    probe = Probe(a.probe_steps)
    try:
        run_loop(family, base, out, f"{family}-probe", probe)
    except ProbeDone:
        pass
    s_step = statistics.median(probe.step_s[1:] or probe.step_s)  # the first step warms up
    steps = max(a.min_steps, int(a.budget_s / s_step))
    if a.max_steps:
        steps = min(steps, a.max_steps)
    cfg = resolve(recipe=RECIPES[family], overrides=base)
    data = load_dataset(dataset, download=False, progress=False)
    n_train, batch = len(data.train_y), cfg.data.batch_size
    per_epoch = math.ceil(n_train / batch)
    # E epochs of the first ceil(steps / E) batches of images: the recipe's LR schedule (over the
    # run's epochs) ends with the budget; one epoch when the budget is under one
    epochs = math.ceil(steps / per_epoch)
    images = min(math.ceil(steps / epochs) * batch, n_train)
    plan = [f"data.subset={images}", f"train.epochs={epochs}", f"train.max_steps={steps}"]
    g = torch.Generator().manual_seed(a.eval_seed)
    idx = torch.randperm(len(data.test_y), generator=g)[: a.eval_n].sort().values
    x_eval = data.test_x[idx].float() / 255.0
    curve = BpdCurve(x_eval, max(1, steps // CURVE_POINTS), steps, a.eval_seed)
    t0 = time.perf_counter()
    res = run_loop(family, [*base, *plan], out, family, curve)
    wall = time.perf_counter() - t0
    s = res.summary
    final = s["final"]
    bpd = final.get("test_bpd", final.get("test_loss"))
    recipe = resolve(recipe=RECIPES[family])
    val = default_val_size(recipe.data.val_size, n_train)
    recipe_train = n_train - (val if val < n_train else default_val_size(None, n_train))
    recipe_steps = recipe.train.epochs * math.ceil(recipe_train / recipe.data.batch_size)
    name, anchor = ANCHORS[family]
    row = {
        "recipe": RECIPES[family], "model": cfg.model.name, "model_args": dict(cfg.model.args),
        "params": s["parameters"]["model"]["total"], "batch": batch, "plan": plan, "train_images": images,
        "epochs": epochs,
        "probe_s_per_step": round(s_step, 4), "budget_s": a.budget_s, "steps": s["steps"],
        "epochs_fraction": round(s["steps"] * batch / n_train, 3), "train_s": round(curve.train_s, 1),
        "eval_s": round(curve.eval_s, 1), "wall_s": round(wall, 1),
        "final_lr": curve.final_lr, "peak_lr": cfg.optim.lr, "sched": cfg.sched.name,
        "curve": curve.points, "final_test_bpd": None if bpd is None else round(float(bpd), 4),
        "test_examples": s.get("test_examples"), "target": TARGETS[family], "anchor": {"name": name, "bpd": anchor},
        # the recipe's own CPU budget (its epochs) at the speed this probe measured
        "recipe_epochs": recipe.train.epochs, "recipe_budget_s_at_probe_speed": round(recipe_steps * s_step),
    }
    print(f"  {family}: {row['steps']} steps ({row['epochs_fraction']} epoch) in {row['train_s']} s of training, "
          f"test bpd {row['final_test_bpd']} (subset curve {[p['bpd'] for p in curve.points]})", flush=True)
    return row


def bench_curve(a: argparse.Namespace) -> dict[str, Any]:
    dataset, why = pick_dataset(a)
    print(f"  dataset {dataset}: {why}", flush=True)
    families = {}
    with tempfile.TemporaryDirectory(prefix="likelihood-") as tmp:
        out = a.keep or Path(tmp)
        for f in RECIPES:
            families[f] = train_family(f, a, dataset, out)
    entry = {"dataset": dataset, "dataset_note": why, "mnist": dataset == "mnist", "budget_s": a.budget_s,
             "eval_n": a.eval_n, "eval_seed": a.eval_seed, "families": families, "figure": FIGURE,
             "final_bpd_on": "the full test set (the loop's test evaluation)"}
    plot_curve(entry, a.out / FIGURE)
    return entry


def plot_curve(curve: dict[str, Any], path: Path) -> None:
    """Bits/dim of the test subset against training seconds, one line per family; on MNIST
    the published anchors as dashed lines of the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (f, row) in enumerate(curve["families"].items()):
        color = f"C{i}"
        pts = row["curve"]
        ax.plot([p["train_s"] for p in pts], [p["bpd"] for p in pts], "o-", color=color,
                label=f"{f} ({row['model']}, {row['params']:,} params)")
        if curve["mnist"]:
            name, bpd = row["anchor"]["name"], row["anchor"]["bpd"]
            ax.axhline(bpd, color=color, ls="--", lw=1, label=f"{name} (published) {bpd}")
    ax.set_xlabel("training seconds (evaluations excluded)")
    ax.set_ylabel(f"test bits/dim ({curve['eval_n']} test images)")
    ax.set_title(f"{curve['dataset']}: bits/dim against CPU time, budget {curve['budget_s']} s per family")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- targets and the report ----------------------------------------------------------------------
def targets(data: dict[str, Any]) -> dict[str, Any]:
    c = data.get("curve") or {}
    out: dict[str, Any] = {}
    for f, target in TARGETS.items():
        row = (c.get("families") or {}).get(f)
        key = f"{f}_test_bpd_le_{target:.2f}"
        if row is None:
            out[key] = None
        elif not c.get("mnist"):
            out[key] = f"target is for MNIST: not judged ({c['dataset']} {row['final_test_bpd']})"
        else:
            out[key] = bool(row["final_test_bpd"] is not None and row["final_test_bpd"] <= target)
    out["sampling_pixelcnn_over_flow"] = (data.get("sampling") or {}).get("ratio_s_per_image")
    return out


def write_md(data: dict[str, Any], path: Path) -> None:
    parts = ["# Likelihood models (benchmarks/likelihood.py)\n"]
    if s := data.get("sampling"):
        parts.append(
            f"## Sampling time, batch {s['batch']}, {s['dataset']} {'x'.join(map(str, s['image_shape']))}\n\n"
            f"Each recipe's method as built (random weights), `method.sample({s['batch']})` at temperature 1, "
            f"median of {s['repeats']} interleaved repeats. A flow draws the batch in one inverse pass, the "
            "PixelCNN in H·W sequential passes (pass i reads the rows up to pixel i).\n\n"
            + md_table(["family", "recipe", "model", "parameters", "passes / image", "s / batch", "s / image",
                        "images/s", "ms / pass"],
                       [[r["family"], r["recipe"], r["model"], f"{r['params']:,}", r["passes_per_image"],
                         r["s_per_batch"], r["s_per_image"], r["images_per_s"], r["ms_per_pass"]]
                        for r in s["rows"]])
            + "\n\nPixelCNN / flow time per image: "
            + ", ".join(f"{k} {v}x" for k, v in s["ratio_s_per_image"].items())
            + f".\n\n{provenance(s)}\n")
    if c := data.get("curve"):
        fams = c["families"]
        parts.append(
            f"## Test bits/dim in a CPU budget of {c['budget_s']} s per family, dataset {c['dataset']}\n\n"
            f"Dataset: {c['dataset']} ({c['dataset_note']}). Final bits/dim on {c['final_bpd_on']}; the curve on "
            f"{c['eval_n']} fixed test images (seed {c['eval_seed']}). Training seconds exclude the evaluations. "
            "Targets and anchors are MNIST numbers"
            + ("." if c["mnist"] else ": not judged on this dataset.") + "\n\n"
            + md_table(["family", "model", "parameters", "budget s", "s/step (probe)", "steps", "epochs",
                        "train s", "final lr / peak", "test bpd", "target", "anchor", "recipe budget"],
                       [[f, r["model"], f"{r['params']:,}", r["budget_s"], r["probe_s_per_step"], r["steps"],
                         r["epochs_fraction"], r["train_s"], f"{r['final_lr']:.2g} / {r['peak_lr']:g}",
                         r["final_test_bpd"], f"≤ {r['target']:.2f}" + ("" if c["mnist"] else " (MNIST)"),
                         f"{r['anchor']['name']} {r['anchor']['bpd']}",
                         f"{r['recipe_epochs']} epochs ≈ {r['recipe_budget_s_at_probe_speed']} s"]
                        for f, r in fams.items()])
            + "\n\nBits/dim of the test subset against training seconds:\n\n"
            + md_table(["family", *(f"point {i}" for i in range(max(len(r["curve"]) for r in fams.values())))],
                       [[f, *(f"{p['train_s']} s: {p['bpd']}" for p in r["curve"])] for f, r in fams.items()])
            + f"\n\n![bits/dim against training seconds]({c['figure']})\n\n{provenance(c)}\n")
    else:
        parts.append("## Test bits/dim in a CPU budget\n\nNot measured (`--only curve`: 3 x `--budget-s` of training plus evaluations, about 40 minutes at the default 600 s).\n")
    parts.append(f"Targets: {targets(data)}\n")
    path.write_text("\n".join(parts))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="digits 8x8, tiny models, batch 4, 1-s budgets (16-24 steps)")
    ap.add_argument("--only", default="sampling,curve", help="comma-separated parts: " + ",".join(PARTS))
    ap.add_argument("--batch", type=int, default=16, help="images per sample() call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dataset", default="auto", help="curve: auto (mnist if its files load, else fashion-mnist) "
                                                      "or a dataset name")
    ap.add_argument("--budget-s", type=float, default=600.0, help="curve: training seconds per family")
    ap.add_argument("--probe-steps", type=int, default=6, help="curve: steps timed to size the budget")
    ap.add_argument("--min-steps", type=int, default=2, help="curve: at least this many steps per family")
    ap.add_argument("--max-steps", type=int, default=None, help="curve: at most this many steps per family")
    ap.add_argument("--eval-n", type=int, default=500, help="curve: test images of each point")
    ap.add_argument("--eval-seed", type=int, default=0, help="curve: seed of those images (and dequantization)")
    ap.add_argument("--keep", type=Path, default=None, help="curve: keep the run folders here")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder of likelihood.json / likelihood.md")
    a = ap.parse_args(argv)
    only = set(a.only.split(","))
    if unknown := only - set(PARTS):
        ap.error(f"--only {','.join(sorted(unknown))}: use parts of {','.join(PARTS)}")
    if a.quick:
        a.batch, a.repeats, a.budget_s, a.probe_steps, a.eval_n = 4, 1, 1.0, 3, 200
        a.min_steps, a.max_steps = 16, 24  # a 1-s budget, within a fixed range of steps: the test stays fast
    torch.set_num_threads(a.threads)
    json_path, md_path = a.out / "likelihood.json", a.out / "likelihood.md"
    command = "python benchmarks/likelihood.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = read_json(json_path, {})
    for part, fn in (("sampling", bench_sampling), ("curve", bench_curve)):
        if part not in only:
            continue
        load = load_note(os.getloadavg())
        print(f"{part} ({load})", flush=True)
        entry = fn(a)
        torch.set_num_threads(a.threads)  # the loop set the run's threads (the same)
        entry.update(command=command, quick=a.quick, threads=a.threads, load=load, machine=machine())
        data = read_json(json_path, {})  # re-read: parallel invocations merge per part
        data[part] = entry
        data["targets"] = targets(data)
        write_json(json_path, data)
    data["targets"] = targets(data)
    write_json(json_path, data)
    write_md(data, md_path)
    print(f"-> {json_path}, {md_path}")
    return data


if __name__ == "__main__":
    main()
