"""Evaluation kit for generative models: FID, KID, Inception Score, precision/recall and a
class histogram (mode-collapse check), on the features of a trained classifier.

The course (course seed 004, "Évaluation des Modèles
Génératifs" and "IS vs FID") presents the two classic scores: the *Inception Score* rewards
confident and diverse class predictions but never looks at real data and misses mode
collapse inside a class; the *Fréchet Inception Distance* compares the Gaussian
statistics of real and generated features and is the preferred one. This module adds KID
(unbiased, works with few samples), precision/recall (quality and coverage separately)
and the histogram of predicted classes (which classes a generator drops).

Features come from :mod:`profond.metrics.features`: by default the shipped Fashion-MNIST
net (``features="fmnist"``: 128-d embedding, 10 classes, >= 93% test accuracy), or the
standard InceptionV3 (``features="inception"``, needs torch-fidelity and its weights). FID
values on different feature nets are **not comparable**: an "fmnist FID" is its own scale.

Typical use::

    from profond.metrics.generative import evaluate_samples
    report = evaluate_samples(fake, real)          # images float [0, 1], (N, 1, 28, 28)
    report["fid"], report["class_histogram"]["collapsed"]

or step by step::

    net = load_feature_net("fmnist")
    fa, pa = extract(net, real); fb, pb = extract(net, fake)
    fid(fa, fb); kid(fa, fb); inception_score(pb); precision_recall(fa, fb); class_histogram(pb)

All statistics are computed in float64 on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError, ProfondError
from .features import FEATURE_NETS, FeatureNet, check_images, load_feature_net

__all__ = [
    "FeatureNet", "load_feature_net", "extract", "extract_batches", "fid", "frechet_distance", "gaussian_stats",
    "kid", "inception_score", "precision_recall", "class_histogram", "evaluate_samples",
    "MISSING_FRACTION", "COLLAPSE_MAX_FRACTION", "COLLAPSE_MIN_ENTROPY",
]

#: a class predicted for less than this fraction of the samples is reported as missing
MISSING_FRACTION = 0.01
#: collapse: one class takes more than this fraction of the samples ...
COLLAPSE_MAX_FRACTION = 0.5
#: ... or the class entropy is below this fraction of its maximum log(K)
COLLAPSE_MIN_ENTROPY = 0.5


# ----------------------------------------------------------------------------------------
# features


def _progress(total: int, label: str):
    """A transient rich progress bar on stderr (None when rich is missing)."""
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
    except ImportError:  # pragma: no cover - rich is a dependency
        return None
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)


@torch.no_grad()
def extract(net: torch.nn.Module, images: Tensor, batch_size: int = 500,
            progress: bool = False) -> tuple[Tensor, Tensor]:
    """Features and class probabilities of ``images`` under the feature net ``net``.

    ``images``: float in [0, 1] (or uint8), ``(N, C, H, W)`` (``(N, H, W)`` is taken as one
    channel), on any device; they go to ``net``'s device ``batch_size`` at a time.
    Returns ``(features (N, D) float64, probs (N, K) float64)`` on the CPU; ``probs`` is the
    softmax of the net's logits. ``progress=True`` draws a rich progress bar on stderr.
    """
    if not torch.is_tensor(images):
        raise ProfondError(f"images must be a torch.Tensor (N, C, H, W) in [0, 1], got {type(images).__name__}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer.")
    n = len(images)
    if n == 0:
        raise ProfondError("no images to evaluate (got an empty tensor).")
    if torch.is_tensor(images) and images.is_floating_point():
        lo, hi = float(images.min()), float(images.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ProfondError("images contain NaN or Inf values.")
        if lo < -0.01 or hi > 1.01:
            raise ProfondError(f"images must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
                               "(map [-1, 1] outputs with (x + 1) / 2).")
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
    except StopIteration:  # pragma: no cover - a net without parameters
        device = torch.device("cpu")
    feats, probs = [], []
    bar = _progress(n, "features") if progress else None
    try:
        if bar is not None:
            bar.start()
            task = bar.add_task("extract", total=n)
        for i in range(0, n, batch_size):
            x = images[i:i + batch_size]
            if not x.is_floating_point() and x.dtype != torch.uint8:
                raise ProfondError(f"images must be float in [0, 1] (or uint8), got dtype {x.dtype}.")
            f, logits = net(x.to(device))
            feats.append(f.detach().to("cpu", torch.float64))
            probs.append(torch.softmax(logits.detach().to("cpu", torch.float64), dim=1))
            if bar is not None:
                bar.update(task, advance=len(x))
    finally:
        if bar is not None:
            bar.stop()
        net.train(was_training)
    return torch.cat(feats), torch.cat(probs)


def extract_batches(net: torch.nn.Module, batches: Iterable[Tensor], *, total: int | None = None,
                    batch_size: int = 500, progress: bool = False, what: str = "images") -> tuple[Tensor, Tensor]:
    """:func:`extract` over a stream of image batches (e.g. samples drawn batch by batch):
    only one batch of images is held at a time, the features and probabilities of all.
    ``total`` (the number of images to come) sizes the progress bar."""
    feats, probs = [], []
    bar = _progress(total, what) if progress and total else None
    try:
        if bar is not None:
            bar.start()
            task = bar.add_task("extract", total=total)
        for x in batches:
            x = check_images(x, x.shape[1] if torch.is_tensor(x) and x.dim() == 4 else 1, what)
            f, p = extract(net, x, batch_size=batch_size)
            feats.append(f)
            probs.append(p)
            if bar is not None:
                bar.update(task, advance=len(x))
    finally:
        if bar is not None:
            bar.stop()
    if not feats:
        raise ProfondError(f"no {what} to evaluate (the stream of batches was empty).")
    return torch.cat(feats), torch.cat(probs)


# ----------------------------------------------------------------------------------------
# FID (Heusel et al. 2017)


def _features(x: Any, what: str, min_n: int = 2) -> Tensor:
    """``x`` (tensor or array) as a finite float64 CPU tensor ``(N, D)`` with ``N >= min_n``."""
    try:
        t = torch.as_tensor(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x), dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise ProfondError(f"{what} must be a 2-D array of features (N, D): {e}") from None
    if t.dim() != 2:
        raise ProfondError(f"{what} must have shape (N, D), got {tuple(t.shape)}.")
    if len(t) < min_n:
        raise ProfondError(f"{what} has {len(t)} samples; this statistic needs at least {min_n}.")
    if not torch.isfinite(t).all():
        raise ProfondError(f"{what} contain NaN or Inf values.")
    return t


def _same_dim(a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ProfondError(f"the two feature sets have different dimensions ({a.shape[1]} vs {b.shape[1]}): "
                           "extract both with the same feature net.")


def gaussian_stats(feats: Any) -> tuple[Tensor, Tensor]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (divided by N-1) in float64."""
    x = _features(feats, "features")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (len(x) - 1)


def _psd_sqrt(s: Tensor) -> Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues -> 0)."""
    w, v = torch.linalg.eigh((s + s.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet (2-Wasserstein) distance² between N(mu1, sigma1) and N(mu2, sigma2):

    ``‖mu1 - mu2‖² + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})``.

    ``tr((S1 S2)^{1/2})`` is computed as ``Σ sqrt(eig(S1^{1/2} S2 S1^{1/2}))``: the matrix
    ``S1^{1/2} S2 S1^{1/2}`` has the eigenvalues of ``S1 S2`` but is symmetric PSD, so the
    symmetric eigen-solver gives real, non-negative values even for singular covariances
    (no complex parts to discard, unlike a general ``sqrtm``). Round-off below 0 gives 0.
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    s1, s2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return max(float(d2), 0.0)


def fid(feats_a: Any, feats_b: Any) -> float:
    """Fréchet Inception Distance (Heusel et al. 2017, "GANs Trained by a Two Time-Scale
    Update Rule Converge to a Local Nash Equilibrium"): the Fréchet distance between
    Gaussians fitted (mean, unbiased covariance) to two feature sets ``(N, D)``.

    Symmetric, 0 for identical statistics, lower is better (course: "Une FID plus basse
    indique une plus grande similitude avec les données réelles"). It is biased upwards for
    small N (the covariance estimates are noisy): compare FIDs at equal sample sizes, and
    only FIDs computed with the same feature net.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    _same_dim(a, b)
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


# ----------------------------------------------------------------------------------------
# KID (Bińkowski et al. 2018)


def _poly_kernel(x: Tensor, y: Tensor, degree: int, gamma: float, coef: float) -> Tensor:
    return (x @ y.T * gamma + coef) ** degree


def _mmd2_unbiased(x: Tensor, y: Tensor, degree: int, gamma: float, coef: float) -> float:
    """Unbiased MMD² of two equal-sized samples: the within-set kernel means skip the diagonal
    (i ≠ j), the cross term averages all m² pairs."""
    m = len(x)
    kxx = _poly_kernel(x, x, degree, gamma, coef)
    kyy = _poly_kernel(y, y, degree, gamma, coef)
    kxy = _poly_kernel(x, y, degree, gamma, coef)
    within = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / (m * m))


def kid(feats_a: Any, feats_b: Any, subsets: int = 100, subset_size: int = 1000, degree: int = 3,
        seed: int = 0, gamma: float | None = None, coef: float = 1.0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

    The unbiased estimator of the squared MMD with the polynomial kernel
    ``k(x, y) = (gamma·xᵀy + coef)^degree`` (``gamma = 1/D`` by default, the paper's
    kernel), averaged over ``subsets`` random subsets of ``m = min(subset_size, N_a, N_b)``
    samples drawn without replacement from each set (``torch.Generator`` seeded with
    ``seed``: deterministic). Returns ``(mean, std)`` over the subsets (population std, as
    torchmetrics). Unbiased: it can be slightly negative when the sets match; unlike FID its
    expectation does not depend on N. Cost: ``subsets × 3`` kernel matrices ``m × m``.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    _same_dim(a, b)
    for name, v in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"kid: {name}={v!r} must be a positive integer.")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ProfondError("kid needs at least 2 samples per set.")
    gamma = 1.0 / a.shape[1] if gamma is None else float(gamma)
    g = torch.Generator().manual_seed(int(seed))
    scores = []
    for _ in range(subsets):
        ia = torch.randperm(len(a), generator=g)[:m]
        ib = torch.randperm(len(b), generator=g)[:m]
        scores.append(_mmd2_unbiased(a[ia], b[ib], degree, gamma, coef))
    s = np.asarray(scores, dtype=np.float64)
    return float(s.mean()), float(s.std())


# ----------------------------------------------------------------------------------------
# Inception Score (Salimans et al. 2016)


def _probs(probs: Any, what: str = "probs") -> Tensor:
    p = _features(probs, what, min_n=1)
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise ProfondError(f"{what} must be class probabilities (non-negative rows summing to 1); "
                           "apply softmax to logits first (extract() returns probabilities).")
    return p


def inception_score(probs: Any, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs"):
    ``IS = exp(E_x KL(p(y|x) ‖ p(y)))``, with ``p(y)`` the mean of ``p(y|x)`` over the split.

    High when each image gets a confident class (low entropy of ``p(y|x)``) and the classes
    are diverse (high entropy of ``p(y)``), the two conditions of the course; bounded by 1
    (all images alike) and K, the number of classes (confident and uniform over classes).
    ``probs`` ``(N, K)`` is cut into ``splits`` consecutive near-equal parts (in the given
    order: shuffle class-sorted data first), one score per part; returns ``(mean, std)``
    (population std, as the paper's code). It never looks at real data.
    """
    p = _probs(probs)
    if isinstance(splits, bool) or not isinstance(splits, int) or not 1 <= splits <= len(p):
        raise ConfigError(f"inception_score: splits={splits!r} must be an integer in [1, N={len(p)}].")
    scores = []
    for part in torch.tensor_split(p, splits):
        py = part.mean(0, keepdim=True)
        # KL(p(y|x) || p(y)) with 0·log 0 = 0
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, py)).sum(1)
        scores.append(math.exp(float(kl.mean())))
    s = np.asarray(scores, dtype=np.float64)
    return float(s.mean()), float(s.std())


# ----------------------------------------------------------------------------------------
# precision / recall (Kynkäänniemi et al. 2019)


def _chunk_rows(n_cols: int, budget: int = 10_000_000) -> int:
    return max(1, budget // max(n_cols, 1))


def _sq_dists(x: Tensor, y: Tensor, y_sq: Tensor) -> Tensor:
    """Squared Euclidean distances ``(len(x), len(y))`` as ``|x|² + |y|² - 2 x·y`` (one GEMM)."""
    d2 = torch.addmm(y_sq[None, :], x, y.T, alpha=-2.0)
    return d2.add_((x * x).sum(1, keepdim=True)).clamp_(min=0)


def _knn_sq_radii(x: Tensor, k: int) -> Tensor:
    """Squared distance of each row of ``x`` to its k-th nearest other row (self excluded)."""
    out = torch.empty(len(x), dtype=torch.float64)
    x_sq = (x * x).sum(1)
    step = _chunk_rows(len(x))
    for i in range(0, len(x), step):
        d2 = _sq_dists(x[i:i + step], x, x_sq)
        # the smallest distance is the point itself (0), so the k-th neighbour is the (k+1)-th value
        out[i:i + step] = d2.topk(k + 1, dim=1, largest=False).values[:, k]
    return out


def precision_recall(feats_real: Any, feats_fake: Any, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and
    Recall Metric for Assessing Generative Models").

    Each set's manifold is the union of balls around its samples, of radius the distance
    to the sample's k-th nearest neighbour in the same set. *Precision*: fraction of fake
    samples inside the real manifold (quality); *recall*: fraction of real samples inside
    the fake manifold (coverage; a mode-collapsed generator has low recall). Both in
    [0, 1]; Euclidean distances in float64. Cost O(N²·D) time, memory bounded by chunks.

    Caveat (seen with the fmnist feature net): precision trusts every real ball, and a few
    strongly textured real images (patterned bags, shirts) sit next to the tight cluster
    where uniform noise lands, so pure noise can get a high precision, the higher the more
    real images are used (its recall stays 0). Read precision together with recall, FID
    and the class histogram, which all reject noise.
    """
    r, f = _features(feats_real, "feats_real"), _features(feats_fake, "feats_fake")
    _same_dim(r, f)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"precision_recall: k={k!r} must be a positive integer.")
    if min(len(r), len(f)) <= k:
        raise ProfondError(f"precision_recall with k={k} needs more than {k} samples per set "
                           f"(got {len(r)} real, {len(f)} fake).")
    r2_real, r2_fake = _knn_sq_radii(r, k), _knn_sq_radii(f, k)
    in_real = torch.zeros(len(f), dtype=torch.bool)  # fake sample inside the real manifold
    in_fake = torch.zeros(len(r), dtype=torch.bool)  # real sample inside the fake manifold
    r_sq = (r * r).sum(1)
    step = _chunk_rows(len(r))
    for i in range(0, len(f), step):  # one fake-real distance block serves both directions
        d2 = _sq_dists(f[i:i + step], r, r_sq)
        in_real[i:i + step] = (d2 <= r2_real[None, :]).any(1)
        in_fake |= (d2 <= r2_fake[i:i + step, None]).any(0)
    return float(in_real.double().mean()), float(in_fake.double().mean())


# ----------------------------------------------------------------------------------------
# class histogram (mode collapse)


def class_histogram(probs: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Histogram of the predicted classes (argmax of ``probs`` ``(N, K)``) of a sample set.

    Returns a JSON-able dict:

    * ``classes``: the K names (``class_names`` or ``"0"``, ``"1"``, ...); ``n``: N;
    * ``counts`` / ``fractions``: per class name;
    * ``entropy``: entropy of the fractions in nats (``log K`` when uniform, 0 when one class);
      ``normalised_entropy``: ``entropy / log K`` in [0, 1];
    * ``max_class`` / ``max_fraction``: the most frequent class and its share;
    * ``missing``: classes predicted for less than ``MISSING_FRACTION`` (1%) of the samples
      (one tenth of the uniform share for 10 classes);
    * ``collapsed``: True when one class takes more than ``COLLAPSE_MAX_FRACTION`` (50%) of the
      samples or ``normalised_entropy < COLLAPSE_MIN_ENTROPY`` (0.5); ``collapse_rule`` says so
      in words. Balanced real data gives ``normalised_entropy`` ≈ 1 and no missing class;
    * ``mean_confidence``: the mean of the highest probability (how sure the net is).

    A generator can collapse *within* classes with a perfect histogram: read it with
    recall (precision_recall) and FID.
    """
    p = _probs(probs)
    k = p.shape[1]
    if class_names is None:
        names = [str(i) for i in range(k)]
    else:
        names = [str(c) for c in class_names]
        if len(names) != k:
            raise ProfondError(f"class_names has {len(names)} names for {k} classes.")
    counts = torch.bincount(p.argmax(1), minlength=k).tolist()
    n = len(p)
    fractions = [c / n for c in counts]
    entropy = -sum(q * math.log(q) for q in fractions if q > 0)
    norm_entropy = entropy / math.log(k) if k > 1 else 0.0
    top = int(np.argmax(counts))
    collapsed = fractions[top] > COLLAPSE_MAX_FRACTION or norm_entropy < COLLAPSE_MIN_ENTROPY
    return {
        "classes": names,
        "n": n,
        "counts": dict(zip(names, counts, strict=True)),
        "fractions": dict(zip(names, fractions, strict=True)),
        "entropy": entropy,
        "normalised_entropy": norm_entropy,
        "max_class": names[top],
        "max_fraction": fractions[top],
        "missing": [c for c, q in zip(names, fractions, strict=True) if q < MISSING_FRACTION],
        "collapsed": bool(collapsed),
        "collapse_rule": (f"one class > {COLLAPSE_MAX_FRACTION:.0%} of the samples or normalised "
                          f"entropy < {COLLAPSE_MIN_ENTROPY}"),
        "mean_confidence": float(p.max(1).values.mean()),
    }


# ----------------------------------------------------------------------------------------
# all at once


def evaluate_samples(fake: Tensor | Iterable[Tensor], real: Tensor, *, features: str = "fmnist",
                     device: str = "cpu", batch_size: int = 500, progress: bool = False, kid_subsets: int = 100,
                     n_fake: int | None = None) -> dict[str, Any]:
    """Every score of the kit for generated images ``fake`` against real images ``real``.

    Both are float tensors in [0, 1], ``(N, 1, H, W)`` (other sizes are resized; see
    :class:`~profond.metrics.features.FeatureNet`). ``fake`` may also be an iterable of such
    batches (``n_fake`` images in all, for the progress bar): the samples are then never all
    in memory, only their features (:func:`extract_batches`). ``features``: ``"fmnist"``
    (default) or ``"inception"``. Returns::

        {"fid", "kid_mean", "kid_std",           # fake vs real (KID subsets of min(1000, N))
         "is_mean", "is_std",                     # Inception Score of the fake set, 10 splits
         "precision", "recall",                   # k = 3
         "class_histogram": {...},                # of the fake set, see class_histogram
         "n_fake", "n_real", "features", "feature_dim"}

    Use thousands of images per set (10,000 is customary; FID is biased up at small N) and
    the same N when comparing models.
    """
    if features not in FEATURE_NETS:
        from ..registry import unknown_name_message

        raise ConfigError(unknown_name_message("feature net", str(features), list(FEATURE_NETS), "feature nets"))
    streamed = not torch.is_tensor(fake)
    real_x = check_images(real, real.shape[1] if torch.is_tensor(real) and real.dim() == 4 else 1, "real images")
    if not streamed:
        fake = check_images(fake, fake.shape[1] if fake.dim() == 4 else 1, "fake images")

    def too_few(n: int | None) -> ProfondError:
        got = f"{n} fake, {len(real_x)} real" if n is not None else f"{len(real_x)} real"
        return ProfondError(f"evaluate_samples needs at least 2 images per set (got {got}); use thousands "
                            "for meaningful scores.")

    if len(real_x) < 2 or (not streamed and len(fake) < 2):
        raise too_few(n_fake if streamed else len(fake))
    net = load_feature_net(features, device=device)
    f_real, _ = extract(net, real_x, batch_size=batch_size, progress=progress)
    if streamed:
        f_fake, p_fake = extract_batches(net, fake, total=n_fake, batch_size=batch_size, progress=progress,
                                         what="fake images")
        if len(f_fake) < 2:
            raise too_few(len(f_fake))
    else:
        f_fake, p_fake = extract(net, fake, batch_size=batch_size, progress=progress)
    kid_mean, kid_std = kid(f_real, f_fake, subsets=kid_subsets)
    is_mean, is_std = inception_score(p_fake, splits=min(10, len(p_fake)))
    k = min(3, len(f_real) - 1, len(f_fake) - 1)
    precision, recall = precision_recall(f_real, f_fake, k=k)
    return {
        "fid": fid(f_real, f_fake),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "is_mean": is_mean,
        "is_std": is_std,
        "precision": precision,
        "recall": recall,
        "class_histogram": class_histogram(p_fake, getattr(net, "class_names", None) or None),
        "n_fake": len(f_fake),
        "n_real": len(real_x),
        "features": features,
        "feature_dim": int(f_real.shape[1]),
    }
