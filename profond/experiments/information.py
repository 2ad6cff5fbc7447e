"""The information plane of an MLP during training (issue 19): ``information-plane``.

Course §11.9: the information bottleneck (definition 11.21, eq. 11.15) seeks a representation
``T`` minimising ``I(X;T) − β I(T;Y)``; remark 11.22 reports the conjecture of Shwartz-Ziv &
Tishby (2017) that training goes through a *fitting* phase (``I(T;Y)`` rises) then a
*compression* phase (``I(X;T)`` falls), and that the result depends on the activation and on
the mutual-information estimator (Saxe et al., 2018: compression with binning for saturating
tanh, not for ReLU).

MLPs of hidden widths ``12-10-7-5-4-3`` (Shwartz-Ziv & Tishby's architecture), one with tanh and
one with ReLU, are trained through the one loop; a callback runs every hidden layer (forward
hooks on the activations of ``loop.method.nets["model"]``) on a fixed set of training inputs
before training and after each epoch. Per epoch and layer, ``I(X;T_l)`` and ``I(T_l;Y)`` are
estimated (:mod:`profond.metrics.information`) by binning (``B`` equal bins over the layer's
range over all epochs; ``B = 30`` in the figure, ``B ∈ {10, 30, 100}`` in the table) and by the
KDE upper bound of Kolchinsky & Tracey (noise variance ``σ² = 0.1``; every 3rd epoch in quick
mode, every 5th in full mode, and the last).

Figure ``information_plane.png``: one panel per (estimator, activation), ``x = I(X;T)``,
``y = I(T;Y)``, one line per layer, points coloured by epoch. Table, one row per (activation,
estimator, layer): the maximum of ``I(X;T)`` over epochs and its epoch, the final ``I(X;T)`` and
``I(T;Y)``, and ``compressed`` = max − final > :data:`COMPRESSION_BITS`. The verdict "a
compression phase appears" for an activation and an estimator means at least one hidden layer
compressed; the notes say whether the verdict changes with ``B``.

Budgets: ``--quick`` (CI) trains on the 8x8 digits (1238 training images, 1000 of them
measured) for 30 epochs on one thread (about 25 s); the full mode, on a 5000-image
Fashion-MNIST subset (2000 measured) for 100 epochs on one thread (minutes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..contract import Callback  # noqa: E402
from ..metrics.information import binning_mi, entropy_bits, kde_mi  # noqa: E402
from ..registry import EXPERIMENTS  # noqa: E402
from ..viz.curves import save_figure  # noqa: E402
from . import ExperimentResult, num_threads, run_training, verdict  # noqa: E402


@dataclass(frozen=True)
class Budget:
    dataset: str
    subset: int | None  # training images (None: all)
    measured: int  # fixed inputs the layers are measured on
    epochs: int
    batch_size: int
    threads: int
    kde_every: int  # the KDE estimate (the costly one) at every k-th recorded epoch, and the last


QUICK = Budget(dataset="digits", subset=None, measured=1000, epochs=30, batch_size=64, threads=1, kde_every=3)
FULL = Budget(dataset="fashion-mnist", subset=5000, measured=2000, epochs=100, batch_size=128, threads=1, kde_every=5)
WIDTHS = (12, 10, 7, 5, 4, 3)
ACTIVATIONS = ("tanh", "relu")
BINS = (10, 30, 100)
#: the bin count of the figure (Shwartz-Ziv & Tishby's 30 bins)
FIG_BINS = 30
#: noise variance of the KDE estimator (Saxe et al. 2018)
NOISE_VAR = 0.1
#: a layer "compressed" when its I(X;T) fell by more than this (bits) from its maximum to the end
#: (about 2% of H(X) here: smaller drops are within the epoch-to-epoch jitter of the estimates)
COMPRESSION_BITS = 0.2


class LayerRecorder(Callback):
    """Records every hidden activation of ``loop.method.nets["model"]`` (an MLP: the non-Linear
    modules of ``features``) on fixed inputs ``x``, before training and after each epoch."""

    def __init__(self, x: torch.Tensor):
        self.x = x
        self.epochs: list[int] = []
        self.acts: list[list[np.ndarray]] = []  # [epoch][layer] -> (n, width)

    def _record(self, loop: Any, epoch: int) -> None:
        model = loop.method.nets["model"]
        layers = [m for m in model.features if not isinstance(m, nn.Linear)]
        got: list[np.ndarray] = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: got.append(o.detach().cpu().double().numpy()))
                 for m in layers]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(self.x.to(next(model.parameters()).device))
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        self.epochs.append(epoch)
        self.acts.append(got)

    def on_train_start(self, loop: Any) -> None:
        if not self.epochs:
            self._record(loop, 0)

    def on_eval_end(self, loop: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self._record(loop, epoch + 1)


def fixed_inputs(dataset: str, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``n`` training images of ``dataset``, standardised as the classifier's batches
    are (``(x/255 − mean)/std``), and their labels."""
    from ..data.vision import load_dataset

    d = load_dataset(dataset, progress=False)
    x = d.train_x[:n].float().div(255)
    mean = torch.tensor(d.mean).view(1, -1, 1, 1)
    std = torch.tensor(d.std).view(1, -1, 1, 1)
    return (x - mean) / std, d.train_y[:n].numpy()


def information_curves(rec: LayerRecorder, y: np.ndarray, kde_every: int = 1) -> pd.DataFrame:
    """Long table: one row per (epoch, layer, estimator) with ``I(X;T)`` and ``I(T;Y)`` in bits.
    Binning uses the layer's range over all recorded epochs (fixed bins for the whole run); the
    KDE bound is computed at every ``kde_every``-th recorded epoch and at the last one."""
    rows = []
    n_layers = len(rec.acts[0])
    for layer in range(n_layers):
        lo = min(float(a[layer].min()) for a in rec.acts)
        hi = max(float(a[layer].max()) for a in rec.acts)
        for k, (epoch, acts) in enumerate(zip(rec.epochs, rec.acts, strict=True)):
            t = acts[layer]
            for b in BINS:
                ixt, ity = binning_mi(t, y, bins=b, lo=lo, hi=hi)
                rows.append({"epoch": epoch, "layer": layer + 1, "estimator": f"binning B={b}",
                             "I_XT": ixt, "I_TY": ity})
            if k % kde_every and k != len(rec.epochs) - 1:
                continue
            ixt, ity = kde_mi(t, y, noise_var=NOISE_VAR, bound="upper")
            rows.append({"epoch": epoch, "layer": layer + 1, "estimator": f"KDE σ²={NOISE_VAR:g}",
                         "I_XT": ixt, "I_TY": ity})
    return pd.DataFrame(rows)


def summarise(curves: pd.DataFrame, activation: str) -> list[dict[str, Any]]:
    rows = []
    for (est, layer), g in curves.groupby(["estimator", "layer"], sort=False):
        g = g.sort_values("epoch")
        i_max = int(g["I_XT"].to_numpy().argmax())
        mx, final = float(g["I_XT"].iloc[i_max]), float(g["I_XT"].iloc[-1])
        rows.append({"activation": activation, "estimator": est, "layer": int(layer), "width": WIDTHS[layer - 1],
                     "max_I_XT": mx, "epoch_of_max": int(g["epoch"].iloc[i_max]), "final_I_XT": final,
                     "final_I_TY": float(g["I_TY"].iloc[-1]), "compression": mx - final,
                     "compressed": bool(mx - final > COMPRESSION_BITS)})
    return rows


def _figure(path: Path, curves: dict[str, pd.DataFrame], h_x: float, h_y: float) -> Path:
    ests = [f"binning B={FIG_BINS}", f"KDE σ²={NOISE_VAR:g}"]
    fig, axes = plt.subplots(len(ests), len(curves), figsize=(6 * len(curves), 4.8 * len(ests)), squeeze=False)
    for j, (act, df) in enumerate(curves.items()):
        epochs = df["epoch"].max()
        for i, est in enumerate(ests):
            ax = axes[i][j]
            d = df[df["estimator"] == est]
            for layer, g in d.groupby("layer"):
                g = g.sort_values("epoch")
                ax.plot(g["I_XT"], g["I_TY"], color="0.7", lw=0.8, zorder=1)
                sc = ax.scatter(g["I_XT"], g["I_TY"], c=g["epoch"], cmap="viridis", vmin=0, vmax=epochs, s=14,
                                zorder=2)
                last = g.iloc[-1]
                ax.annotate(f"T{layer}", (last["I_XT"], last["I_TY"]), fontsize=8, xytext=(3, 3),
                            textcoords="offset points")
            ax.axhline(h_y, ls=":", color="k", lw=0.8)
            ax.axvline(h_x, ls=":", color="k", lw=0.8)
            ax.set_xlabel("I(X;T) (bits)")
            ax.set_ylabel("I(T;Y) (bits)")
            ax.set_title(f"{act}, {est}", fontsize=10)
            fig.colorbar(sc, ax=ax, label="epoch")
    fig.suptitle(f"Information plane of a {'-'.join(map(str, WIDTHS))} MLP (dotted: H(X), H(Y))")
    return save_figure(fig, path)


@EXPERIMENTS.register("information-plane", help="information plane I(X;T) vs I(T;Y) per layer during training, "
                                                "tanh vs ReLU, binning (B=10/30/100) and KDE (issue 19; full: minutes)")
def information_plane(out: Path, quick: bool) -> ExperimentResult:
    b = QUICK if quick else FULL
    x, y = fixed_inputs(b.dataset, b.measured)
    h_x = entropy_bits(x.flatten(1).numpy())  # log2 of the number of distinct inputs
    h_y = entropy_bits(y)
    rows, curves, accs = [], {}, {}
    with num_threads(b.threads):
        for act in ACTIVATIONS:
            rec = LayerRecorder(x)
            res, _ = run_training(out, f"ip-{act}", [
                f"data.name={b.dataset}", "data.val_size=200", f"data.subset={'null' if b.subset is None else b.subset}",
                f"data.batch_size={b.batch_size}", "model.name=mlp", f"model.widths=[{','.join(map(str, WIDTHS))}]",
                f"model.activation={act}", "optim.lr=0.003", f"train.epochs={b.epochs}", f"train.threads={b.threads}",
            ], callbacks=[rec])
            accs[act] = float(res.summary["final"].get("val_accuracy", float("nan")))
            curves[act] = information_curves(rec, y, b.kde_every)
            rows += summarise(curves[act], act)
            curves[act].assign(activation=act).to_csv(out / f"curves_{act}.csv", index=False)
    table = pd.DataFrame(rows)
    fig = _figure(out / "information_plane.png", curves, h_x, h_y)

    # verdict per (activation, estimator): a compression phase appears in at least one layer
    claims, by_bins = {}, {}
    for (act, est), g in table.groupby(["activation", "estimator"], sort=False):
        key = f"compression_{act}_{est.split()[0].lower()}{est.split('=')[1] if 'binning' in est else ''}"
        claims[key] = verdict(bool(g["compressed"].any()))
        if est.startswith("binning"):
            by_bins.setdefault(act, {})[est] = claims[key]
    lines = [f"Fixed inputs: {b.measured} {b.dataset} training images (H(X) = {h_x:.3f} bits, "
             f"H(Y) = {h_y:.3f} bits); I(X;T) ≤ H(X) and I(T;Y) ≤ min(H(Y), I(X;T)) for binning. "
             f"Final validation accuracy: " + ", ".join(f"{a} {v:.3f}" for a, v in accs.items()) + ". "
             f"'compressed': max over epochs of I(X;T) − final I(X;T) > {COMPRESSION_BITS} bits; "
             f"a compression phase 'holds' for an activation and estimator when some layer compressed."]
    for act in ACTIVATIONS:
        per_b = by_bins[act]
        kde = claims[f"compression_{act}_kde"]
        depends = len(set(per_b.values())) > 1
        top = table[table["activation"] == act].sort_values("compression").iloc[-1]
        lines.append(f"Does a compression phase appear for {act}? "
                     + ", ".join(f"{e}: {v}" for e, v in per_b.items()) + f"; KDE: {kde}. "
                     + ("The conclusion depends on the number of bins B." if depends
                        else "The binning verdict is the same for every B tested.")
                     + f" Largest drop: {top['compression']:.2f} bits (layer {top['layer']}, {top['estimator']}, "
                       f"max at epoch {top['epoch_of_max']}); layers compressed: "
                     + f"{int(table[(table['activation'] == act)]['compressed'].sum())} of "
                       f"{len(WIDTHS) * (len(BINS) + 1)} (layer, estimator) pairs.")
    lines.append("Shwartz-Ziv & Tishby (2017) report compression for both activations; Saxe et al. (2018) only for "
                 "the saturating tanh with binning (remark 11.22: the result depends on activation and estimator).")
    if quick:
        lines.append("Quick mode: digits, 30 epochs; the full mode (Fashion-MNIST subset, 100 epochs) is the real figure.")
    return ExperimentResult(table=table, figures=[fig], notes="\n\n".join(lines),
                            extra={"claims": claims, "H_X": h_x, "H_Y": h_y, "val_accuracy": accs})
