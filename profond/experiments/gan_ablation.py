"""DCGAN ablation on Fashion-MNIST: the course's table 8.1 (§8.9, remark 8.11).

``gan-ablation`` trains the ten configurations of table 8.1 around the DCGAN of §8.7
(non-saturating loss of §8.3.2, Adam betas (0.5, 0.999), batch 128) through the one loop
(:func:`profond.train.train`, method ``gan``, model ``dcgan``):

* the latent dimension d ∈ {32, 64, 100 (base), 256};
* the learning rates of G and D, each optimizer with its own (``optim.per_optimizer``):
  "LR G plus élevé" 5e-4 / 2e-4, "LR D plus élevé" 2e-4 / 5e-4, TTUR (Heusel et al. 2017)
  1e-4 / 4e-4;
* n_critic, the D updates per G update: 1 (the base run, listed twice as in the course's
  table: one training run, two rows), 3 (same non-saturating loss, G updated on every third
  step), and 5 = WGAN-GP (Wasserstein critic with the gradient penalty of eq. 8.16, λ = 10,
  LayerNorm in the critic instead of BatchNorm, Adam 1e-4 / 1e-4, batch 64: the
  ``fmnist-wgan-gp`` recipe).

Each row reports the FID (Heusel et al., eq. 8.19) and the KID (mean ± std over random
subsets) of ``N`` samples of the *last* checkpoint against the first ``N_real`` test images,
both on the shipped Fashion-MNIST feature net (:mod:`profond.metrics.generative`; its own
scale, **not** an Inception FID, so only the ranking compares with the course's numbers),
the class histogram of the samples under that net as a mode-collapse check (normalised
entropy, classes under 1 % of the samples), the parameter count (G + D), the training
seconds, the course's FID and a ``diverged`` flag: a run stopped by
:class:`~profond.errors.TrainingDiverged` (NaN loss, or the GAN collapse guard of
:mod:`profond.methods.gan`) is recorded (status, step) and the experiment goes on; its scores
are NaN. The notes check the three claims of remark 8.11 on the measured table and on the
course's (:func:`remark_8_11`).

Budget. The course trains 25 epochs of 60,000 images with DCGAN widths 64: on 2 CPU cores
that is out of reach. The full mode keeps every row on the **same reduced budget**: widths
``features_g = features_d = 32``, **3 epochs** of the 55,000 training images (after the
5,000-image validation split; 1,290 D steps at batch 128), FID / KID on 5,000 samples vs the
10,000 test images. At this budget the n_critic = 5 run makes 1/5 of the G updates of the
base (516 vs 1,290): the course's claim (3) is tested at equal data, not equal G updates.
Much shorter runs do not rank the rows (the generators are still mode-collapsed blobs).

``--quick`` (CI): widths 8, 1 epoch of 1,280 training images (10 D steps at batch 128, 20
for WGAN-GP at batch 64), one torch thread (tiny nets), FID / KID on 500 samples vs 1,000
test images, every row of the table. Its numbers only show that the pipeline runs; they rank nothing (the generators are still
near their initialisation: grey samples, one predicted class).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ..errors import TrainingDiverged  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, finite, run_training  # noqa: E402
from .generative import _fid_reference, _load  # noqa: E402


@dataclass(frozen=True)
class GANConfig:
    """One row of the course's table 8.1 (its FID is after 25 epochs, Inception features)."""

    label: str
    axis: str  # base | latent | lr | n_critic
    latent_dim: int
    lr_g: float
    lr_d: float
    n_critic: int
    course_fid: float
    loss: str = "non-saturating"
    gp_weight: float = 0.0
    d_norm: str = "batch"
    batch_size: int = 128
    beta2: float = 0.999  # Adam's β2 (β1 = 0.5 on every row)

    @property
    def key(self) -> tuple:
        """Rows with the same key share one training run (the base is also "n_critic = 1")."""
        return (self.latent_dim, self.lr_g, self.lr_d, self.n_critic, self.loss, self.gp_weight, self.d_norm,
                self.batch_size, self.beta2)

    @property
    def run_name(self) -> str:
        loss = {"non-saturating": "ns", "wasserstein": "wgan"}.get(self.loss, self.loss)
        gp = f"-gp{self.gp_weight:g}" if self.gp_weight else ""
        return f"dcgan-z{self.latent_dim}-g{self.lr_g:g}-d{self.lr_d:g}-nc{self.n_critic}-{loss}{gp}-b{self.batch_size}"


BASE = "Base"
Z32, Z64, Z256 = "z ∈ R^32", "z ∈ R^64", "z ∈ R^256"
LR_G_UP, LR_D_UP, TTUR = "LR G plus élevé", "LR D plus élevé", "TTUR (G < D)"
NC1, NC3, NC5 = "n_critic = 1 (standard)", "n_critic = 3", "n_critic = 5 (WGAN-GP)"

#: table 8.1 of the course, in its order
TABLE_8_1 = [
    GANConfig(BASE, "base", 100, 2e-4, 2e-4, 1, 28.3),
    GANConfig(Z32, "latent", 32, 2e-4, 2e-4, 1, 35.1),
    GANConfig(Z64, "latent", 64, 2e-4, 2e-4, 1, 30.2),
    GANConfig(Z256, "latent", 256, 2e-4, 2e-4, 1, 27.8),
    GANConfig(LR_G_UP, "lr", 100, 5e-4, 2e-4, 1, 32.5),
    GANConfig(LR_D_UP, "lr", 100, 2e-4, 5e-4, 1, 41.7),
    GANConfig(TTUR, "lr", 100, 1e-4, 4e-4, 1, 25.9),
    GANConfig(NC1, "n_critic", 100, 2e-4, 2e-4, 1, 28.3),
    GANConfig(NC3, "n_critic", 100, 2e-4, 2e-4, 3, 26.7),
    GANConfig(NC5, "n_critic", 100, 1e-4, 1e-4, 5, 23.4, loss="wasserstein", gp_weight=10.0, d_norm="layer",
              batch_size=64, beta2=0.9),
]
LATENT_ROWS = [Z32, Z64, BASE, Z256]


@dataclass(frozen=True)
class Budget:
    """What every row of one mode trains on and is scored with (all rows alike)."""

    features: int       # DCGAN widths features_g = features_d (course: 64)
    epochs: int         # course: 25
    subset: int | None  # training images (None: the whole training split)
    val_size: int
    eval_n: int         # the loop's per-epoch validation FID samples (0 = off)
    grid_n: int         # the loop's per-epoch fixed-noise grid (0 = off)
    n_fid: int          # samples of the final FID / KID
    n_real: int         # test images they are compared with
    kid_subsets: int
    threads: int        # torch threads of the runs (tiny nets: 1 beats 2, no hand-off)
    estimate: str = ""  # the expected total time, for the notes


FULL = Budget(features=32, epochs=3, subset=None, val_size=5000, eval_n=1000, grid_n=64,
              n_fid=5000, n_real=10000, kid_subsets=100, threads=2,
              estimate="about 70 min on 2 idle CPU cores, estimated from measured step costs")
QUICK = Budget(features=8, epochs=1, subset=1280, val_size=500, eval_n=0, grid_n=0,
               n_fid=500, n_real=1000, kid_subsets=20, threads=1,
               estimate="about a minute on 2 CPU cores")
#: samples per configuration in the sample figure
GRID_COLS = 12


def budget_text(b: Budget) -> str:
    data = f"{b.subset:,} training images" if b.subset else "the 55,000 training images"
    text = (f"DCGAN widths {b.features} (course: 64), {b.epochs} epoch(s) of {data} (course: 25 epochs of "
            "60,000) for every row")
    return f"{text} ({b.estimate})" if b.estimate else text


def _lr(v: float) -> str:
    """A float YAML reads as a float (``2e-4`` alone would be a string)."""
    return f"{v:.3e}"


def gan_overrides(c: GANConfig, b: Budget) -> list[str]:
    """The ``--set`` overrides of row ``c`` under budget ``b`` (one optimizer per net, eq. 8.1's two players)."""
    return [
        "model.name=dcgan", f"model.latent_dim={c.latent_dim}", f"model.features_g={b.features}",
        f"model.features_d={b.features}", f"model.d_norm={c.d_norm}",
        "method.name=gan", f"method.loss={c.loss}", f"method.n_critic={c.n_critic}",
        f"method.gp_weight={c.gp_weight}", f"method.eval_n={b.eval_n}", f"method.grid_n={b.grid_n}",
        "optim.name=adam", f"optim.lr={_lr(c.lr_g)}", f"optim.betas=[0.5,{c.beta2:g}]",
        f"optim.per_optimizer={{G: {{lr: {_lr(c.lr_g)}}}, D: {{lr: {_lr(c.lr_d)}}}}}",
        "data.name=fashion-mnist", f"data.batch_size={c.batch_size}", f"data.val_size={b.val_size}",
        *([f"data.subset={b.subset}"] if b.subset else []), f"train.epochs={b.epochs}",
        f"train.threads={b.threads}",
    ]


def _progress(msg: str) -> None:
    print(f"gan-ablation: {msg}", file=sys.stderr, flush=True)


def train_and_score(out: Path, c: GANConfig, b: Budget, net: Any, f_real: torch.Tensor) -> dict[str, Any]:
    """Train row ``c`` and score its last checkpoint; a diverged run is recorded, not raised."""
    from ..metrics.generative import class_histogram, extract, fid, kid

    t0 = time.perf_counter()
    rec: dict[str, Any] = {"run": c.run_name, "diverged": False, "status": "completed", "fid": math.nan,
                           "kid_mean": math.nan, "kid_std": math.nan, "class_entropy": math.nan,
                           "missing_classes": -1, "samples": None}
    try:
        res, wall = run_training(out, c.run_name, gan_overrides(c, b))
        summary = res.summary
    except TrainingDiverged as e:
        wall = time.perf_counter() - t0
        path = out / "runs" / c.run_name / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        rec.update(diverged=True, status=f"diverged at step {summary.get('steps', '?')}: {str(e)[:120]}")
    params = summary.get("parameters", {})
    rec.update({
        "params": int(sum(v.get("total", 0) for v in params.values())),
        "steps": int(summary.get("steps", 0)),
        "train_s": finite(summary.get("train_time_s")), "wall_s": wall,
    })
    if rec["diverged"]:
        return rec
    method = _load(res.run_dir)
    x = method.sample(b.n_fid, seed=0)
    f_fake, p_fake = extract(net, x)
    k_mean, k_std = kid(f_real, f_fake, subsets=b.kid_subsets)
    hist = class_histogram(p_fake, getattr(net, "class_names", None) or None)
    rec.update({"fid": fid(f_real, f_fake), "kid_mean": k_mean, "kid_std": k_std,
                "class_entropy": hist["normalised_entropy"], "missing_classes": len(hist["missing"]),
                "samples": x[:GRID_COLS]})
    return rec


# ----------------------------------------------------------------------------------------
# remark 8.11


@dataclass
class Verdict:
    """One claim of remark 8.11 checked on a table: ``supported`` is None when a row it needs is NaN."""

    claim: str
    supported: bool | None
    evidence: str


def remark_8_11(table: pd.DataFrame, col: str = "fid") -> list[Verdict]:
    """The three claims of remark 8.11, read from ``table`` (rows named by ``config`` as in
    :data:`TABLE_8_1`, scores in ``col``; lower is better):

    1. *latent*: the latent dimension has a moderate impact, but too small limits diversity:
       d = 32 is the worst of the latent rows (d = 32, 64, 100, 256) and worse than the base,
       and the spread of those rows is smaller than the spread of the whole table;
    2. *TTUR*: a higher D learning rate (TTUR, 1e-4 / 4e-4) improves the FID over the base
       (the "LR D plus élevé" row, 2e-4 / 5e-4, is reported beside it: it is worse in the
       course's own table);
    3. *WGAN-GP*: n_critic = 5 with the gradient penalty (eq. 8.16) has the best (lowest) score.
    """
    v = {str(r): finite(s) for r, s in zip(table["config"], table[col], strict=True)}

    def get(*labels: str) -> list[float] | None:
        vals = [v.get(lab, math.nan) for lab in labels]
        return None if any(math.isnan(x) for x in vals) else vals

    out: list[Verdict] = []
    lat = get(*LATENT_ROWS)
    allv = [x for x in v.values() if not math.isnan(x)]
    if lat is None or len(allv) < 2:
        out.append(Verdict("latent", None, "a latent row is missing or diverged"))
    else:
        small_worst = lat[0] == max(lat) and lat[0] > lat[2]
        spread_lat, spread_all = max(lat) - min(lat), max(allv) - min(allv)
        moderate = spread_lat < spread_all
        out.append(Verdict("latent", small_worst and moderate, (
            f"d=32 {lat[0]:.4g} vs d=64 {lat[1]:.4g}, d=100 {lat[2]:.4g}, d=256 {lat[3]:.4g}: d=32 "
            f"{'is' if small_worst else 'is not'} the worst; latent spread {spread_lat:.3g} "
            f"{'<' if moderate else '>='} whole-table spread {spread_all:.3g}{_entropy_note(table) if col == 'fid' else ''}")))
    tt = get(TTUR, BASE)
    if tt is None:
        out.append(Verdict("ttur", None, "the TTUR or base row is missing or diverged"))
    else:
        d_up = v.get(LR_D_UP, math.nan)
        out.append(Verdict("ttur", tt[0] < tt[1], (
            f"TTUR {tt[0]:.4g} vs base {tt[1]:.4g}; LR D alone raised to 5e-4: {d_up:.4g}"
            f" ({'better' if d_up < tt[1] else 'worse' if d_up > tt[1] else 'n/a'} than the base)")))
    wg = get(NC5)
    if wg is None or len(allv) < 2:
        out.append(Verdict("wgan-gp", None, "the WGAN-GP row is missing or diverged"))
    else:
        best = min(v, key=lambda k: v[k] if not math.isnan(v[k]) else math.inf)
        out.append(Verdict("wgan-gp", wg[0] <= min(allv), (
            f"WGAN-GP {wg[0]:.4g}; best row: {best} {v[best]:.4g}")))
    return out


def _entropy_note(table: pd.DataFrame) -> str:
    """The samples' class entropy at d = 32 vs the base (the remark's "diversity"), when measured."""
    if "class_entropy" not in table.columns:
        return ""
    e = dict(zip(table["config"], table["class_entropy"], strict=True))
    a, b = finite(e.get(Z32)), finite(e.get(BASE))
    return "" if math.isnan(a) or math.isnan(b) else f"; class entropy d=32 {a:.3g} vs base {b:.3g}"


def verdict_text(verdicts: list[Verdict]) -> str:
    word = {True: "supported", False: "NOT supported", None: "undecided"}
    return "; ".join(f"({i}) {vd.claim}: {word[vd.supported]} ({vd.evidence})"
                     for i, vd in enumerate(verdicts, start=1))


# ----------------------------------------------------------------------------------------
# the experiment


@EXPERIMENTS.register("gan-ablation", help="DCGAN latent dim / LR G-D (TTUR) / n_critic (WGAN-GP) ablation, course "
                      "table 8.1 (full: 9 runs, widths 32, 3 epochs, ~70 min on 2 CPU cores)")
def gan_ablation(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    net, _, f_real = _fid_reference(b.n_real)
    done: dict[tuple, dict[str, Any]] = {}
    rows = []
    n_runs = len({c.key for c in TABLE_8_1})
    for c in TABLE_8_1:
        if c.key not in done:
            _progress(f"[{len(done) + 1}/{n_runs}] {c.label}: training {c.run_name} ...")
            r = done[c.key] = train_and_score(out, c, b, net, f_real)
            _progress(f"[{len(done)}/{n_runs}] {c.label}: FID {r['fid']:.4g}"
                      f"{' (diverged)' if r['diverged'] else ''}, {r['wall_s']:.1f} s")
        r = done[c.key]
        rows.append({
            "config": c.label, "axis": c.axis, "latent_dim": c.latent_dim, "lr_G": c.lr_g, "lr_D": c.lr_d,
            "n_critic": c.n_critic, "loss": c.loss + (f" + GP λ={c.gp_weight:g}" if c.gp_weight else ""),
            "batch": c.batch_size, "fid": round(r["fid"], 3), "kid_mean": round(r["kid_mean"], 5),
            "kid_std": round(r["kid_std"], 5), "class_entropy": round(r["class_entropy"], 3) + 0.0,
            "missing_classes": int(r["missing_classes"]), "params": r["params"], "steps": r["steps"],
            "train_s": round(r["train_s"], 1), "course_fid": c.course_fid, "diverged": bool(r["diverged"]),
            "status": r["status"], "run": r["run"],
        })
    table = pd.DataFrame(rows)
    samples = {c.label: done[c.key]["samples"] for c in TABLE_8_1}
    figures = [fig_fid_bars(table, out / "fid_bars.png", quick),
               fig_fid_latent(table, out / "fid_vs_latent.png", quick),
               fig_samples(samples, out / "samples.png", quick)]
    measured, course = remark_8_11(table), remark_8_11(table, "course_fid")
    notes = (
        f"Fashion-MNIST, {budget_text(b)}; non-saturating DCGAN (§8.7) unless stated, Adam betas (0.5, 0.999), "
        "batch 128 (WGAN-GP: batch 64, λ = 10, LayerNorm critic with conv biases, Adam betas (0.5, 0.9), as the "
        "fmnist-wgan-gp recipe and Gulrajani et al.). Equal epochs "
        "means equal D batches: n_critic = k makes one G update per k batches. "
        f"fid / kid_mean ± kid_std: {b.n_fid:,} samples of the last checkpoint (seed 0) vs the first "
        f"{b.n_real:,} test images on the shipped Fashion-MNIST feature net (its own scale: not an Inception "
        f"FID; KID over {b.kid_subsets} subsets of {min(1000, b.n_fid, b.n_real)}). class_entropy: normalised "
        "entropy of the samples' predicted classes (1 = uniform); missing_classes: classes under 1% of the "
        "samples (mode-collapse check). params: G + D. course_fid: table 8.1 of the course (25 epochs, "
        "widths 64, Inception FID): compare rankings, not values. The 'n_critic = 1 (standard)' row is the "
        "base run, reported twice as in the course. A diverged run (TrainingDiverged) keeps its row with "
        "diverged = True and NaN scores.\n\n"
        f"Remark 8.11 on the measured FIDs: {verdict_text(measured)}.\n\n"
        f"Remark 8.11 on the course's FIDs: {verdict_text(course)}."
        + ("\n\nQuick mode: a pipeline check; at this budget the FIDs rank nothing." if quick else ""))
    return ExperimentResult(table=table, figures=figures, notes=notes, extra={
        "budget": b.__dict__, "runs": len(done), "fid_samples": b.n_fid, "fid_real": b.n_real,
        "feature_net": "fmnist",
        "remark_8_11": {"measured": [vd.__dict__ for vd in measured], "course": [vd.__dict__ for vd in course]},
    })


# ----------------------------------------------------------------------------------------
# figures


def fig_fid_bars(table: pd.DataFrame, path: Path, quick: bool) -> Path:
    """FID per configuration, measured (fmnist features) beside the course's (Inception, 25 epochs)."""
    n = len(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.45 * n + 1.6), sharey=True, layout="constrained")
    y = np.arange(n)
    colors = {"base": "C7", "latent": "C0", "lr": "C1", "n_critic": "C2"}
    for ax, col, title in ((axes[0], "fid", "profond (Fashion-MNIST feature net)"),
                           (axes[1], "course_fid", "course table 8.1 (Inception, 25 epochs)")):
        vals = table[col].to_numpy(float)
        ax.barh(y, np.nan_to_num(vals, nan=0.0), color=[colors.get(a, "C3") for a in table["axis"]])
        finite_vals = vals[np.isfinite(vals)]
        best = finite_vals.min() if len(finite_vals) else math.nan
        for i, v in enumerate(vals):
            label = "diverged" if not math.isfinite(v) else f"{v:.3g}" + (" ★" if v == best else "")
            ax.text(0 if not math.isfinite(v) else v, i, " " + label, va="center", fontsize=8)
        ax.set(xlabel="FID (lower is better)", title=title)
        ax.set_xlim(0, (np.nanmax(vals) if len(finite_vals) else 1.0) * 1.25)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, list(table["config"]))
    axes[0].invert_yaxis()
    fig.suptitle("DCGAN ablation on Fashion-MNIST (§8.9, table 8.1)" + (" — quick" if quick else ""))
    return save_figure(fig, path)


def fig_fid_latent(table: pd.DataFrame, path: Path, quick: bool) -> Path:
    """FID against the latent dimension (LR 2e-4 / 2e-4, n_critic 1), measured and course."""
    t = table[table["config"].isin(LATENT_ROWS)].sort_values("latent_dim")
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    ax.plot(t["latent_dim"], t["fid"], "-o", color="C0", label="profond (fmnist features)")
    ax.set(xscale="log", xlabel="latent dimension d", ylabel="FID, profond")
    ax.minorticks_off()
    ax.set_xticks(list(t["latent_dim"]), [str(d) for d in t["latent_dim"]])
    ax2 = ax.twinx()
    ax2.plot(t["latent_dim"], t["course_fid"], "--s", color="C1", label="course (Inception, 25 ep.)")
    ax2.set_ylabel("FID, course table 8.1")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title("FID vs latent dimension (remark 8.11 (1))" + (" — quick" if quick else ""))
    return save_figure(fig, path)


def fig_samples(samples: dict[str, torch.Tensor | None], path: Path, quick: bool) -> Path:
    """One row of samples (seed 0) per configuration; a blank row for a diverged run."""
    from ..viz.images import save_traversal

    shape = next((x.shape[1:] for x in samples.values() if x is not None), (1, 28, 28))
    rows = [x if x is not None else torch.zeros((GRID_COLS, *shape)) for x in samples.values()]
    labels = [lab + (" (diverged)" if x is None else "") for lab, x in samples.items()]
    return save_traversal(torch.stack([r[:GRID_COLS] for r in rows]), path, row_labels=labels,
                          title="DCGAN samples per configuration (table 8.1)" + (" — quick" if quick else ""))
