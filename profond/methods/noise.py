r"""The noise process of a diffusion model (course ch. 10), pure math that knows nothing of training.

Notation map (course symbol -> attribute of :class:`NoiseSchedule`, diffusers-scheduler style).
Timestep *indices* are integers ``0 … T−1``; index ``i`` is the course's ``t = i + 1`` and
``t_prev = -1`` stands for ``x_0`` (ᾱ = 1)::

    β_t                 betas[i]                   (10.17) linear, (10.18) cosine, or sigmoid
    α_t = 1 − β_t       alphas[i]                  (10.6)
    ᾱ_t = Π_{s≤t} α_s   alphas_cumprod[i]          (10.7)
    ᾱ_{t−1}             alphas_cumprod_prev[i]     1 at index 0 (ᾱ_0 = 1)
    √ᾱ_t, √(1 − ᾱ_t)    sqrt_alphas_cumprod[i], sqrt_one_minus_alphas_cumprod[i]   (10.8)
    β̃_t                 posterior_variance[i]      (10.12), 0 at index 0
    µ̃_t coefficients    posterior_mean_coef1[i] (of x_0), posterior_mean_coef2[i] (of x_t)  (10.11)
    SNR(t) = ᾱ/(1 − ᾱ)  snr(t)

The pieces, each tagged with its equation:

* the forward process: one Markov step :meth:`NoiseSchedule.q_step` (eq. 10.1) and the closed
  form :meth:`NoiseSchedule.q_sample` (theorem 10.3, eq. 10.8);
* the posterior :meth:`NoiseSchedule.q_posterior` (theorem 10.4, eqs. 10.10–10.12);
* what the network predicts: ε (eq. 10.16), x_0, or v = √ᾱ ε − √(1 − ᾱ) x_0 (Salimans & Ho
  2022), with the conversions between them and the min-SNR-γ weighting (Hang et al. 2023);
* one reverse step of DDPM (eq. 10.20) and of DDIM (eq. 10.21, with Song et al.'s η), the
  sub-sequence of S steps (remark 10.7) and the respaced process that lets DDPM use it;
* the Euler reading of DDIM (exercise 10.3): in ``x̄ = x/√ᾱ`` and ``σ = √(1 − ᾱ)/√ᾱ`` the
  DDIM step with η = 0 is exactly one Euler step of ``dx̄/dσ = ε(x, σ)``;
* the variational bound (theorem 10.5, eq. 10.15) in nats and in bits per dimension;
* the linear path of flow matching / rectified flow (:class:`FlowPath`).

Tensors are kept in float64 and cast to the input's dtype and device when gathered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["PREDICTIONS", "SCHEDULES", "SIGMAS", "FlowPath", "NoiseSchedule", "check_prediction",
           "discretized_gaussian_log_likelihood", "normal_kl"]

#: the named β schedules
ScheduleName = Literal["linear", "cosine", "sigmoid"]
SCHEDULES: tuple[str, ...] = get_args(ScheduleName)
#: what the network predicts
Prediction = Literal["eps", "x0", "v"]
PREDICTIONS: tuple[str, ...] = get_args(Prediction)
#: the variance of the DDPM reverse step (eq. 10.20): σ² = β̃_t or σ² = β_t
Sigma = Literal["beta_tilde", "beta"]
SIGMAS: tuple[str, ...] = get_args(Sigma)

TimeIndex = Tensor | int


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ConfigError(f"prediction {prediction!r} is not a parameterisation: use one of {', '.join(PREDICTIONS)} "
                          "(eps: the noise, eq. 10.16; x0: the clean image; v: √ᾱ ε − √(1−ᾱ) x_0).")
    return prediction


def _check_sigma(sigma: str) -> str:
    if sigma not in SIGMAS:
        raise ConfigError(f"sigma {sigma!r}: use beta_tilde (σ² = β̃_t, eq. 10.12) or beta (σ² = β_t), eq. 10.20.")
    return sigma


def _float_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """``KL(N(mean1, var1) ‖ N(mean2, var2))`` elementwise, in nats (var2 > 0)."""
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor, bins: int = 256) -> Tensor:
    """``log P(x)`` elementwise, in nats, where ``P`` puts on each of ``bins`` pixel values of
    [-1, 1] the mass of ``N(mean, var)`` over its bin (width ``2/(bins−1)``; the two end bins
    reach ±∞), the decoder of Ho et al. 2020 (eq. 13). ``x`` must lie on the grid
    ``-1 + 2k/(bins−1)``."""
    half = 1.0 / (bins - 1)
    std = var.sqrt()
    upper = (x + half - mean) / std
    lower = (x - half - mean) / std
    log_cdf_upper = torch.special.log_ndtr(upper)              # log Φ(upper): the bin at -1
    log_sf_lower = torch.special.log_ndtr(-lower)              # log (1 − Φ(lower)): the bin at +1
    # log(Φ(u) − Φ(l)) without cancellation: reflect a bin right of 0 to the left (Φ(u) − Φ(l) =
    # Φ(−l) − Φ(−u)), then log Φ(u) + log(1 − exp(log Φ(l) − log Φ(u)))
    flip = lower > 0
    u, lo = torch.where(flip, -lower, upper), torch.where(flip, -upper, lower)
    lu, ll = torch.special.log_ndtr(u), torch.special.log_ndtr(lo)
    mid = lu + torch.log(-torch.expm1((ll - lu).clamp(max=-1e-300)))
    return torch.where(x < -1 + half, log_cdf_upper, torch.where(x > 1 - half, log_sf_lower, mid))


class NoiseSchedule:
    r"""The forward process of def. 10.1 with a named β schedule, and everything computed from it.

    * ``linear`` (course §10.3.1, eq. 10.17): ``β_t = β_min + (t−1)/(T−1)·(β_max − β_min)``;
    * ``cosine`` (§10.3.2, eq. 10.18, Nichol & Dhariwal 2021): ``ᾱ_t = f(t)/f(0)``,
      ``f(t) = cos²((t/T + s)/(1 + s)·π/2)``, then ``β_t = 1 − ᾱ_t/ᾱ_{t−1}`` clipped at
      ``max_beta`` (and ᾱ recomputed from the clipped β);
    * ``sigmoid`` (GeoDiff, Xu et al. 2022): ``β = sigmoid(linspace(−6, 6, T))`` scaled into
      ``[β_min, β_max]``: slow at both ends, fast in the middle.

    ``beta_start`` / ``beta_end`` are the values for T = 1000 (Ho et al. 2020) and are scaled by
    ``1000/T`` (as Nichol & Dhariwal do), so that ᾱ_T stays near 0 for any T: at T = 200 the
    linear schedule runs from 5·10⁻⁴ to 0.1. Every β is clipped at ``max_beta``.
    Build one from explicit betas with :meth:`from_betas` (e.g. :meth:`respaced`).
    """

    def __init__(self, name: str = "linear", T: int = 1000, *, beta_start: float = 1e-4, beta_end: float = 0.02,
                 s: float = 0.008, max_beta: float = 0.999) -> None:
        if name not in SCHEDULES:
            raise ConfigError(f"noise schedule {name!r} is unknown: use one of {', '.join(SCHEDULES)}.")
        if isinstance(T, bool) or not isinstance(T, int) or T < 2:
            raise ConfigError(f"T={T!r}: a diffusion needs an integer number of steps T >= 2 (e.g. 1000).")
        if not (0 < beta_start <= beta_end) or not (0 < max_beta < 1):
            raise ConfigError(f"beta_start={beta_start}, beta_end={beta_end}, max_beta={max_beta}: use "
                              "0 < beta_start <= beta_end and 0 < max_beta < 1.")
        scale = 1000.0 / T
        b0, b1 = beta_start * scale, beta_end * scale
        if name == "linear":
            betas = torch.linspace(b0, b1, T, dtype=torch.float64)                   # (10.17)
        elif name == "sigmoid":
            betas = torch.sigmoid(torch.linspace(-6.0, 6.0, T, dtype=torch.float64)) * (b1 - b0) + b0
        else:
            steps = torch.arange(T + 1, dtype=torch.float64) / T
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2                 # (10.18)
            abar = f / f[0]
            betas = 1.0 - abar[1:] / abar[:-1]
        self._setup(betas.clamp(max=max_beta), name)

    @classmethod
    def from_betas(cls, betas: Tensor, name: str = "custom",
                   timestep_map: Tensor | None = None) -> NoiseSchedule:
        """A schedule with the given ``betas`` (S,) in (0, 1); ``timestep_map`` (S,) long: the
        index the network sees for each of its steps (default ``0 … S−1``)."""
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if len(betas) < 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ConfigError("betas must be a non-empty sequence of values in (0, 1).")
        self = cls.__new__(cls)
        self._setup(betas, name, timestep_map)
        return self

    def _setup(self, betas: Tensor, name: str, timestep_map: Tensor | None = None) -> None:
        self.name = name
        self.T = len(betas)
        self.betas = betas                                                          # (T,)
        self.alphas = 1.0 - betas                                                   # (10.6)
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)                         # (10.7)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        one_m = 1.0 - self.alphas_cumprod
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / one_m          # (10.12)
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / one_m        # (10.11) of x_0
        self.posterior_mean_coef2 = self.alphas.sqrt() * (1.0 - self.alphas_cumprod_prev) / one_m  # of x_t
        self.timestep_map = (torch.arange(self.T) if timestep_map is None
                             else torch.as_tensor(timestep_map, dtype=torch.long).clone())

    def __repr__(self) -> str:
        return f"NoiseSchedule({self.name!r}, T={self.T})"

    # -- indexing ------------------------------------------------------------------------------
    def _index(self, t: TimeIndex, lo: int = 0) -> TimeIndex:
        if isinstance(t, Tensor):
            if t.dtype.is_floating_point:
                raise ConfigError("timestep indices must be an integer tensor (got a float one): pass t.long().")
            return t
        t = int(t)
        if not lo <= t < self.T:
            raise ConfigError(f"timestep index {t} is outside {lo}..{self.T - 1}.")
        return t

    def gather(self, a: Tensor, t: TimeIndex, x: Tensor) -> Tensor:
        """``a[t]`` shaped ``(N, 1, …, 1)`` to broadcast with ``x`` (``(1, …, 1)`` for an int
        ``t``), in ``x``'s dtype and device."""
        t = self._index(t)
        dev = x.device
        if isinstance(t, int):
            v = a[t].reshape([1] * max(x.dim(), 1))
        else:
            v = a.to(dev, _float_dtype(dev))[t.to(dev)]
            v = v.reshape(-1, *([1] * (x.dim() - 1)))
        return v.to(dev, x.dtype)

    def _abar(self, t: TimeIndex, x: Tensor) -> Tensor:
        """ᾱ at index ``t`` with ``t = -1`` meaning ᾱ = 1 (x_0)."""
        if isinstance(t, Tensor):
            ext = torch.cat([self.alphas_cumprod, torch.ones(1, dtype=torch.float64)])  # ext[-1] = 1
            return self.gather(ext, torch.where(t < 0, torch.full_like(t, self.T), t), x)
        t = int(t)
        if not -1 <= t < self.T:
            raise ConfigError(f"timestep index {t} is outside -1..{self.T - 1}.")
        return self.gather(self.alphas_cumprod, t, x) if t >= 0 else torch.ones([1] * max(x.dim(), 1),
                                                                                 dtype=x.dtype, device=x.device)

    # -- forward process -------------------------------------------------------------------------
    def q_step(self, x_prev: Tensor, t: TimeIndex, noise: Tensor) -> Tensor:
        """One step of the Markov chain, from index ``t−1`` to ``t``:
        ``x_t = √(1 − β_t) x_{t−1} + √β_t ε`` (eq. 10.1)."""
        b = self.gather(self.betas, t, x_prev)
        return (1 - b).sqrt() * x_prev + b.sqrt() * noise                           # (10.1)

    def q_sample(self, x0: Tensor, t: TimeIndex, noise: Tensor) -> Tensor:
        """``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`` (theorem 10.3, eq. 10.8)."""
        return (self.gather(self.sqrt_alphas_cumprod, t, x0) * x0
                + self.gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)  # (10.8)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: TimeIndex) -> tuple[Tensor, Tensor]:
        """``(µ̃_t(x_t, x_0), β̃_t)`` of ``q(x_{t−1} | x_t, x_0)`` (theorem 10.4, eqs. 10.10–10.12);
        the variance is shaped to broadcast (``0`` at index 0, where x_{t−1} = x_0)."""
        mean = self.gather(self.posterior_mean_coef1, t, xt) * x0 + self.gather(self.posterior_mean_coef2, t, xt) * xt
        return mean, self.gather(self.posterior_variance, t, xt)                  # (10.11), (10.12)

    # -- parameterisations -------------------------------------------------------------------------
    def predict_x0(self, xt: Tensor, t: TimeIndex, out: Tensor, prediction: str = "eps") -> Tensor:
        """x̂_0 from the network output ``out`` (ε: eq. 10.8 solved for x_0; v: ``√ᾱ x_t − √(1−ᾱ) v``)."""
        check_prediction(prediction)
        if prediction == "x0":
            return out
        a, s = self.gather(self.sqrt_alphas_cumprod, t, xt), self.gather(self.sqrt_one_minus_alphas_cumprod, t, xt)
        if prediction == "eps":
            return (xt - s * out) / a                                               # (10.8) for x_0
        return a * xt - s * out

    def predict_eps(self, xt: Tensor, t: TimeIndex, out: Tensor, prediction: str = "eps") -> Tensor:
        """ε̂ from the network output (x_0: eq. 10.8 solved for ε; v: ``√(1−ᾱ) x_t + √ᾱ v``)."""
        check_prediction(prediction)
        if prediction == "eps":
            return out
        a, s = self.gather(self.sqrt_alphas_cumprod, t, xt), self.gather(self.sqrt_one_minus_alphas_cumprod, t, xt)
        if prediction == "x0":
            return (xt - a * out) / s
        return s * xt + a * out

    def target(self, x0: Tensor, noise: Tensor, t: TimeIndex, prediction: str = "eps") -> Tensor:
        """The regression target of ``prediction``: ε (eq. 10.16), x_0, or ``v = √ᾱ ε − √(1−ᾱ) x_0``."""
        check_prediction(prediction)
        if prediction == "eps":
            return noise
        if prediction == "x0":
            return x0
        return (self.gather(self.sqrt_alphas_cumprod, t, x0) * noise
                - self.gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0)

    def snr(self, t: TimeIndex) -> Tensor:
        """``SNR(t) = ᾱ_t / (1 − ᾱ_t)`` (float64, the shape of ``t``)."""
        t = self._index(t)
        a = self.alphas_cumprod.to(t.device)[t] if isinstance(t, Tensor) else self.alphas_cumprod[t]
        return a / (1 - a)

    def loss_weight(self, t: TimeIndex, prediction: str = "eps", min_snr_gamma: float | None = None) -> Tensor:
        r"""Min-SNR-γ weights (Hang et al. 2023), float32, the shape of ``t``; all ones for ``None``.

        The squared errors of the three parameterisations are proportional:
        ``‖ε − ε̂‖² = SNR·‖x_0 − x̂_0‖² = ᾱ·‖v − v̂‖²``. The weights make every one equal to
        ``min(SNR, γ)/SNR · ‖ε − ε̂‖²``::

            eps: min(SNR, γ) / SNR      x0: min(SNR, γ)      v: min(SNR, γ) / (SNR + 1)
        """
        check_prediction(prediction)
        t = self._index(t)
        if min_snr_gamma is None:
            return torch.ones(t.shape if isinstance(t, Tensor) else (), dtype=torch.float32,
                              device=t.device if isinstance(t, Tensor) else None)
        if not min_snr_gamma > 0:
            raise ConfigError(f"min_snr_gamma={min_snr_gamma}: use a γ > 0 (e.g. 5) or None (no weighting).")
        snr = self.snr(t)
        m = snr.clamp(max=float(min_snr_gamma))
        w = {"eps": m / snr, "x0": m, "v": m / (snr + 1)}[prediction]
        return w.float()

    # -- reverse steps ----------------------------------------------------------------------------
    def ddpm_step(self, x_t: Tensor, eps: Tensor, t: TimeIndex, sigma: str = "beta_tilde",
                  noise: Tensor | None = None) -> Tensor:
        """One ancestral step (eq. 10.20): ``x_{t−1} = (x_t − β_t/√(1−ᾱ_t)·ε̂)/√α_t + σ_t z`` with
        ``σ_t² = β̃_t`` or ``β_t``. The mean is µ̃_t(x_t, x̂_0(ε̂)) of eq. 10.11. No noise is
        added at index 0 (``noise`` may then be None); elsewhere ``noise`` is required."""
        _check_sigma(sigma)
        b = self.gather(self.betas, t, x_t)
        mean = (x_t - b / self.gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) \
            / self.gather(self.alphas, t, x_t).sqrt()                               # (10.20)
        var = self.gather(self.posterior_variance if sigma == "beta_tilde" else self.betas, t, x_t)
        last = (t == 0) if isinstance(t, Tensor) else t == 0
        if isinstance(last, Tensor):
            if bool(last.all()):
                return mean
        elif last:
            return mean
        if noise is None:
            raise ConfigError("ddpm_step needs noise z ~ N(0, I) for a step above index 0.")
        if isinstance(last, Tensor):
            var = var * (~last).to(var.dtype).reshape(var.shape)
        return mean + var.sqrt() * noise

    def ddim_sigma(self, t: TimeIndex, t_prev: TimeIndex, eta: float, like: Tensor | None = None) -> Tensor:
        """``σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)`` (Song et al. 2021, eq. 16);
        η = 1 gives the DDPM variance β̃ of the (sub-)sequence, η = 0 the deterministic DDIM."""
        _check_eta(eta)
        like = torch.zeros(1, dtype=torch.float64) if like is None else like
        a, ap = self._abar(t, like), self._abar(t_prev, like)
        return eta * ((1 - ap) / (1 - a)).sqrt() * (1 - a / ap).clamp_min(0).sqrt()

    def ddim_step(self, x_t: Tensor, eps: Tensor, t: TimeIndex, t_prev: TimeIndex, eta: float = 0.0,
                  noise: Tensor | None = None) -> Tensor:
        r"""One DDIM step from index ``t`` to ``t_prev < t`` (−1: x_0), eq. 10.21 with Song et al.'s η::

            x_prev = √ᾱ_prev · x̂_0 + √(1 − ᾱ_prev − σ²) · ε̂ + σ z,   x̂_0 = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t

        For η = 0 this is exactly one Euler step of the ODE ``dx̄/dσ = ε`` in ``x̄ = x/√ᾱ``,
        ``σ = √(1−ᾱ)/√ᾱ`` (exercise 10.3; see :meth:`ode_euler_step`). ``noise`` is required
        when η > 0."""
        _check_eta(eta)
        a, ap = self._abar(t, x_t), self._abar(t_prev, x_t)
        x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()                                # « prédiction de » x_0
        sig = self.ddim_sigma(t, t_prev, eta, like=x_t)
        out = ap.sqrt() * x0 + (1 - ap - sig**2).clamp_min(0).sqrt() * eps         # (10.21)
        if eta > 0:
            if noise is None:
                raise ConfigError("ddim_step with eta > 0 needs noise z ~ N(0, I): pass noise=.")
            out = out + sig * noise
        return out

    # -- exercise 10.3: DDIM as the Euler discretisation of an ODE -------------------------------
    def ode_sigma(self, t: TimeIndex, like: Tensor | None = None) -> Tensor:
        """``σ(t) = √(1 − ᾱ_t)/√ᾱ_t`` (0 at ``t = −1``), the ODE's time variable (exercise 10.3)."""
        like = torch.zeros(1, dtype=torch.float64) if like is None else like
        a = self._abar(t, like)
        return ((1 - a) / a).sqrt()

    def ode_velocity(self, x: Tensor, t: TimeIndex, eps: Tensor) -> Tensor:
        """The vector field of the probability-flow ODE in DDIM's variables (exercise 10.3):
        ``dx̄/dσ = ε(x, σ)`` with ``x̄ = x/√ᾱ``; for the standard time ``x`` itself this reads
        ``dx/dσ = √ᾱ ε + x·(d log √ᾱ / dσ)``; in ``x̄`` it is just ``ε`` (``x`` is unused,
        kept for the signature of a vector field)."""
        del x, t
        return eps

    def ode_euler_step(self, x_t: Tensor, eps: Tensor, t: TimeIndex, t_prev: TimeIndex) -> Tensor:
        """One Euler step ``x̄_prev = x̄_t + (σ_prev − σ_t)·ε`` mapped back to ``x = √ᾱ x̄``: the
        same as :meth:`ddim_step` with η = 0 (exercise 10.3)."""
        a, ap = self._abar(t, x_t), self._abar(t_prev, x_t)
        xbar = x_t / a.sqrt()
        xbar_prev = xbar + (self.ode_sigma(t_prev, x_t) - self.ode_sigma(t, x_t)) * self.ode_velocity(x_t, t, eps)
        return ap.sqrt() * xbar_prev

    # -- sub-sequences (remark 10.7) --------------------------------------------------------------
    def timesteps(self, S: int) -> Tensor:
        """``S`` indices ``τ_S > … > τ_1`` (long, descending) evenly spaced over ``0 … T−1``, always
        starting at ``T−1`` ("trailing" spacing, Lin et al. 2024: the first step starts from
        pure noise); ``S = T`` gives every index (remark 10.7)."""
        if isinstance(S, bool) or not isinstance(S, int) or not 1 <= S <= self.T:
            raise ConfigError(f"steps={S!r}: use 1..{self.T} sampling steps (more steps than T={self.T} do not exist).")
        k = torch.arange(S, dtype=torch.long)
        return self.T - 1 - (2 * k * self.T + S) // (2 * S)                         # T−1 − round(k·T/S)

    def respaced(self, indices: Tensor | list[int]) -> NoiseSchedule:
        """The process restricted to ``indices`` (any order, sorted here): a schedule of
        ``S = len(indices)`` steps with ``β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}`` (``ᾱ_{τ_0} = 1``), so that
        its ᾱ are exactly the ᾱ_{τ_i}; its ``timestep_map`` gives the index the network sees.
        DDPM on it (eq. 10.20 with σ² = β̃') is DDIM with η = 1 on the same sub-sequence."""
        idx = torch.as_tensor(indices, dtype=torch.long).flatten().unique(sorted=True)
        if len(idx) < 1 or int(idx[0]) < 0 or int(idx[-1]) >= self.T:
            raise ConfigError(f"respaced indices must be distinct integers in 0..{self.T - 1}.")
        abar = self.alphas_cumprod[idx]
        prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        return NoiseSchedule.from_betas(1.0 - abar / prev, f"{self.name}[{len(idx)}]",
                                        timestep_map=self.timestep_map[idx])

    # -- the variational bound (theorem 10.5) -----------------------------------------------------
    def _model_variance(self, t: Tensor, x: Tensor, sigma: str) -> Tensor:
        """σ_t² of p_θ(x_{t−1} | x_t): β̃_t or β_t, with index 0 given β̃ at index 1 (β̃_1 = 0 would
        make the decoder a point mass; Nichol & Dhariwal's convention)."""
        _check_sigma(sigma)
        v = (self.posterior_variance if sigma == "beta_tilde" else self.betas).clone()
        v[0] = self.posterior_variance[1] if self.T > 1 else self.betas[0]
        return self.gather(v, t, x)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """``KL(q(x_T | x_0) ‖ N(0, I))`` per example (N,), nats (the L_T of eq. 10.15)."""
        x = x0.double()
        last = torch.full((len(x0),), self.T - 1, dtype=torch.long, device=x0.device)
        a = self.gather(self.alphas_cumprod, last, x)
        kl = normal_kl(a.sqrt() * x, (1 - a).expand_as(x), torch.zeros_like(x), torch.ones_like(x))
        return kl.flatten(1).sum(1)

    def vlb_terms(self, x0: Tensor, xt: Tensor, t: Tensor, eps_pred: Tensor, sigma: str = "beta_tilde",
                  reduce: Literal["sum", "mean"] = "sum") -> Tensor:
        r"""The term of eq. 10.15 at index ``t`` per example (N,), nats, summed (or averaged) over
        dimensions: ``KL(q(x_{t−1} | x_t, x_0) ‖ p_θ(x_{t−1} | x_t))`` for ``t ≥ 1`` and, at
        ``t = 0``, the decoder ``−log p_θ(x_0 | x_1)``, discretized over 256 pixel bins of [-1, 1]
        (Ho et al. 2020, eq. 13). ``p_θ = N(µ̃(x_t, x̂_0(ε̂)), σ_t²)`` with σ² from ``sigma``."""
        t = torch.as_tensor(t, dtype=torch.long, device=xt.device).expand(len(xt))
        x0d, xtd, ed = x0.double(), xt.double(), eps_pred.double()
        x0_hat = self.predict_x0(xtd, t, ed, "eps")
        mean_p, _ = self.q_posterior(x0_hat, xtd, t)
        var_p = self._model_variance(t, xtd, sigma).expand_as(xtd)
        mean_q, var_q = self.q_posterior(x0d, xtd, t)
        kl = normal_kl(mean_q, var_q.expand_as(xtd).clamp_min(1e-300), mean_p, var_p)
        nll = -discretized_gaussian_log_likelihood(x0d, mean_p, var_p)
        first = (t == 0).reshape(-1, *([1] * (xt.dim() - 1)))
        term = torch.where(first, nll, kl).flatten(1)
        return term.sum(1) if reduce == "sum" else term.mean(1)

    def vlb_loss(self, x0: Tensor, xt: Tensor, t: Tensor, eps_pred: Tensor, sigma: str = "beta_tilde") -> Tensor:
        """The training loss of the bound: :meth:`vlb_terms` averaged over dimensions, (N,) nats
        per dimension, float32 (its mean over uniform ``t`` is the bound minus the prior, over
        ``T·D``; the mean keeps it on the scale of the simple loss)."""
        return self.vlb_terms(x0, xt, t, eps_pred, sigma, reduce="mean").float()

    @torch.no_grad()
    def bits_per_dim(self, eps_fn: Callable[[Tensor, Tensor], Tensor], x0: Tensor, *, timesteps: int | None = None,
                     generator: torch.Generator | None = None, sigma: str = "beta_tilde") -> Tensor:
        """The variational bound (eq. 10.15) of each image in ``x0`` (N, …) on [-1, 1], in bits per
        dimension (N,): ``(L_T + Σ_t L_{t−1}) / (D ln 2)``. ``timesteps=None`` (or ≥ T) sums over
        all T indices; ``K < T`` draws K indices per image uniformly with replacement and scales
        their sum by ``T/K`` (unbiased). ``eps_fn(x_t, t)`` gets ``t`` as a long (N,) tensor."""
        n, dev = len(x0), x0.device
        total = self.prior_kl(x0)

        def term(t: Tensor) -> Tensor:
            noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
            xt = self.q_sample(x0, t, noise)
            return self.vlb_terms(x0, xt, t, eps_fn(xt, t), sigma)

        if timesteps is None or timesteps >= self.T:
            for i in range(self.T):
                total = total + term(torch.full((n,), i, dtype=torch.long, device=dev))
        else:
            if timesteps < 1:
                raise ConfigError(f"timesteps={timesteps}: draw at least 1 timestep per image (or None: all T).")
            acc = torch.zeros(n, dtype=torch.float64, device=dev)
            for _ in range(timesteps):
                acc = acc + term(torch.randint(0, self.T, (n,), generator=generator, device=dev))
            total = total + acc * (self.T / timesteps)
        d = x0[0].numel()
        return total / (d * math.log(2.0))


def _check_eta(eta: float) -> None:
    if not (0.0 <= eta <= 1.0):
        raise ConfigError(f"eta={eta}: use a value in [0, 1] (0: deterministic DDIM, 1: DDPM's variance).")


class FlowPath:
    r"""The linear path of flow matching / rectified flow (Lipman et al. 2023, Liu et al. 2023).

    Convention: continuous time ``τ ∈ [0, 1]`` runs from **noise** (τ = 0) to **data** (τ = 1)::

        x_τ = (1 − τ)·ε + τ·x_0,     u = dx_τ/dτ = x_0 − ε

    the network regresses the constant velocity ``u``; sampling integrates ``dx/dτ = v(x, τ)``
    from ``x_0 ~ N(0, I)`` at τ = 0 to τ = 1. (This is the reverse of the diffusion's t, where
    t grows towards noise.)
    """

    @staticmethod
    def sample(x0: Tensor, noise: Tensor, tau: Tensor | float) -> Tensor:
        """``x_τ = (1 − τ) ε + τ x_0``; ``tau`` (N,) or a float."""
        tau = _bcast(tau, x0)
        return (1 - tau) * noise + tau * x0

    @staticmethod
    def target(x0: Tensor, noise: Tensor) -> Tensor:
        """The velocity ``u = x_0 − ε``."""
        return x0 - noise

    @staticmethod
    def predict_x0(x: Tensor, tau: Tensor | float, v: Tensor) -> Tensor:
        """Where the straight line through ``x`` with velocity ``v`` reaches τ = 1: ``x + (1 − τ) v``."""
        return x + (1 - _bcast(tau, x)) * v

    @staticmethod
    def predict_noise(x: Tensor, tau: Tensor | float, v: Tensor) -> Tensor:
        """Where it starts at τ = 0: ``x − τ v``."""
        return x - _bcast(tau, x) * v


def _bcast(tau: Tensor | float, x: Tensor) -> Tensor | float:
    if isinstance(tau, Tensor) and tau.dim() > 0:
        return tau.to(x.device, x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
    return tau
