r"""Sampling loops of the diffusion family (course §10.6–10.7), with no knowledge of ``nn.Module``.

Every sampler takes a callable ``denoise(x, t) -> output`` where ``t`` is a float ``(N,)``
tensor in timestep-index units (``0 … T−1``; for flow matching ``τ·time_scale``), and the
method closes it over the model, the labels and the guidance of eq. 10.22 (:func:`guided`).
Randomness comes only from ``generator`` (never the global RNG), and the noise is drawn on
the generator's device (or ``x_T``'s when it is given).

* :func:`sample_ddpm` — ancestral sampling (eq. 10.20), over all T steps or, for
  ``steps < T``, over the respaced process of a sub-sequence (remark 10.7);
* :func:`sample_ddim` — DDIM (theorem 10.6, eq. 10.21) with Song et al.'s η on S steps;
* :func:`sample_flow` — flow matching: Euler or Heun on ``dx/dτ = v(x, τ)`` from τ = 0
  (noise) to τ = 1 (data).

Each returns a :class:`SampleResult`: ``x`` on [-1, 1] (clamped), ``nfe`` (the number of
calls of ``denoise``, each on the whole batch; with guidance the method makes two network
passes per call) and the ``trajectory`` list. With ``trajectory`` a list, the sampler appends
``(k, x, x̂_0)`` (CPU tensors) at sampler steps ``k = 0, every, 2·every, …`` (``k = 0`` is x_T,
before any step; ``x`` is the state before step ``k``, ``x̂_0`` the prediction made from it) and
``(S, x_0, x_0)`` at the end. ``progress(k, S)`` is called after each of the S steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ConfigError
from .noise import SIGMAS, FlowPath, NoiseSchedule, check_prediction

__all__ = ["FLOW_METHODS", "SampleResult", "guided", "sample_ddim", "sample_ddpm", "sample_flow"]

Denoise = Callable[[Tensor, Tensor], Tensor]
Progress = Callable[[int, int], None]
#: the ODE integrators of :func:`sample_flow`
FLOW_METHODS = ("euler", "heun")


@dataclass
class SampleResult:
    """What a sampler returns: samples ``x`` on [-1, 1], ``nfe`` calls of ``denoise`` and the
    ``trajectory`` list that was passed in (or None)."""

    x: Tensor
    nfe: int
    trajectory: list | None = field(default=None, repr=False)


def guided(cond_out: Tensor, uncond_out: Tensor, w: float) -> Tensor:
    """Classifier-free guidance (def. 10.8, eq. 10.22): ``(1 + w)·ε(x, c) − w·ε(x, ∅)``;
    ``w = 0`` returns ``cond_out`` itself (the plain conditional model)."""
    if w == 0:
        return cond_out
    return (1 + w) * cond_out - w * uncond_out                                     # (10.22)


def _start(shape: tuple[int, ...], generator: torch.Generator, x_T: Tensor | None) -> Tensor:
    if x_T is not None:
        if tuple(x_T.shape) != tuple(shape):
            raise ConfigError(f"x_T has shape {tuple(x_T.shape)}, the samples {tuple(shape)}: pass one noise per sample.")
        return x_T.clone()
    return torch.randn(tuple(shape), generator=generator, device=generator.device)


def _randn(x: Tensor, generator: torch.Generator) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _every(trajectory_every: int | None) -> int:
    if trajectory_every is None:
        return 1
    if trajectory_every < 1:
        raise ConfigError(f"trajectory_every={trajectory_every}: use an interval of at least 1 step.")
    return int(trajectory_every)


def _record(trajectory: list | None, every: int, k: int, x: Tensor, x0: Tensor) -> None:
    if trajectory is not None and k % every == 0:
        trajectory.append((k, x.detach().cpu(), x0.detach().cpu()))


def _finish(trajectory: list | None, steps: int, x: Tensor, nfe: int) -> SampleResult:
    x = x.clamp(-1, 1)
    if trajectory is not None:
        trajectory.append((steps, x.detach().cpu(), x.detach().cpu()))
    return SampleResult(x, nfe, trajectory)


def _check_steps(steps: int, T: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
        raise ConfigError(f"steps={steps!r}: use 1..{T} sampling steps (more steps than T={T} do not exist).")
    return steps


def _x0_eps(schedule: NoiseSchedule, x: Tensor, i: int, out: Tensor, prediction: str,
            clip_x0: bool) -> tuple[Tensor, Tensor]:
    """x̂_0 (clipped to [-1, 1] if asked) and the ε̂ that goes with it at index ``i``."""
    x0 = schedule.predict_x0(x, i, out, prediction)
    if clip_x0:
        x0 = x0.clamp(-1, 1)
        return x0, schedule.predict_eps(x, i, x0, "x0")
    return x0, schedule.predict_eps(x, i, out, prediction)


@torch.no_grad()
def sample_ddpm(denoise: Denoise, schedule: NoiseSchedule, shape: tuple[int, ...], *, generator: torch.Generator,
                steps: int | None = None, sigma: str = "beta_tilde", prediction: str = "eps", clip_x0: bool = True,
                x_T: Tensor | None = None, trajectory: list | None = None, trajectory_every: int | None = None,
                progress: Progress | None = None) -> SampleResult:
    r"""Ancestral sampling (course §10.6.1, eq. 10.20), ``σ_t² = β̃_t`` or ``β_t`` (``sigma``).

    ``steps=None`` or T: the T steps of the process; ``steps < T``: the process respaced on
    :meth:`~NoiseSchedule.timesteps` (``β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}``), where the network
    still sees the original indices. With ``clip_x0`` the mean is µ̃(x_t, clip(x̂_0)) (eq.
    10.11), the same as eq. 10.20 with the ε̂ of the clipped x̂_0. NFE = the number of steps.
    """
    check_prediction(prediction)
    if sigma not in SIGMAS:
        raise ConfigError(f"sigma={sigma!r}: use beta_tilde or beta (eq. 10.20).")
    steps = schedule.T if steps is None else _check_steps(steps, schedule.T)
    every = _every(trajectory_every)
    sched = schedule if steps == schedule.T else schedule.respaced(schedule.timesteps(steps))
    x = _start(shape, generator, x_T)
    n = x.shape[0]
    for k, i in enumerate(reversed(range(sched.T))):
        t_net = torch.full((n,), float(sched.timestep_map[i]), device=x.device)
        x0, eps = _x0_eps(sched, x, i, denoise(x, t_net).to(x.dtype), prediction, clip_x0)
        _record(trajectory, every, k, x, x0)
        x = sched.ddpm_step(x, eps, i, sigma, _randn(x, generator) if i > 0 else None)  # (10.20)
        if progress is not None:
            progress(k + 1, steps)
    return _finish(trajectory, steps, x, steps)


@torch.no_grad()
def sample_ddim(denoise: Denoise, schedule: NoiseSchedule, shape: tuple[int, ...], *, generator: torch.Generator,
                steps: int = 50, eta: float = 0.0, prediction: str = "eps", clip_x0: bool = True,
                x_T: Tensor | None = None, trajectory: list | None = None, trajectory_every: int | None = None,
                progress: Progress | None = None) -> SampleResult:
    r"""DDIM (course §10.6.2, theorem 10.6, eq. 10.21) on the S indices of
    :meth:`~NoiseSchedule.timesteps` (remark 10.7), ``η ∈ [0, 1]``: 0 is deterministic given
    x_T, 1 has the variance of DDPM on the same sub-sequence. NFE = S."""
    check_prediction(prediction)
    steps = _check_steps(steps, schedule.T)
    if not (0.0 <= eta <= 1.0):
        raise ConfigError(f"eta={eta}: use a value in [0, 1] (0: deterministic DDIM, 1: DDPM's variance).")
    every = _every(trajectory_every)
    ts = schedule.timesteps(steps).tolist()
    x = _start(shape, generator, x_T)
    n = x.shape[0]
    for k, t in enumerate(ts):
        t_prev = ts[k + 1] if k + 1 < len(ts) else -1
        out = denoise(x, torch.full((n,), float(schedule.timestep_map[t]), device=x.device)).to(x.dtype)
        x0, eps = _x0_eps(schedule, x, t, out, prediction, clip_x0)
        _record(trajectory, every, k, x, x0)
        noise = _randn(x, generator) if eta > 0 else None
        x = schedule.ddim_step(x, eps, t, t_prev, eta, noise)                      # (10.21)
        if progress is not None:
            progress(k + 1, steps)
    return _finish(trajectory, steps, x, steps)


@torch.no_grad()
def sample_flow(velocity: Denoise, shape: tuple[int, ...], *, generator: torch.Generator, steps: int,
                method: str = "euler", time_scale: float = 1.0, x_T: Tensor | None = None,
                trajectory: list | None = None, trajectory_every: int | None = None,
                progress: Progress | None = None) -> SampleResult:
    r"""Integrate ``dx/dτ = v(x, τ)`` of flow matching (:class:`~profond.methods.noise.FlowPath`)
    from ``x ~ N(0, I)`` at τ = 0 to τ = 1 on ``steps`` equal steps ``h = 1/S``.

    ``velocity`` gets ``τ·time_scale`` (the caller's choice of units; the family passes
    ``T − 1``). ``euler``: ``x ← x + h v(x, τ)``, NFE = S. ``heun`` (the trapezoidal
    predictor-corrector): ``x̃ = x + h v₁``, ``x ← x + h (v₁ + v(x̃, τ + h))/2``, except on the
    last step, which stays Euler so the network is never asked at τ = 1: NFE = 2S − 1.
    """
    if method not in FLOW_METHODS:
        raise ConfigError(f"method={method!r}: use one of {', '.join(FLOW_METHODS)}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps={steps!r}: use at least 1 Euler/Heun step.")
    every = _every(trajectory_every)
    x = _start(shape, generator, x_T)
    n, h, nfe = x.shape[0], 1.0 / steps, 0

    def v(z: Tensor, tau: float) -> Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(z, torch.full((n,), tau * time_scale, device=z.device)).to(z.dtype)

    for k in range(steps):
        tau = k * h
        v1 = v(x, tau)
        _record(trajectory, every, k, x, FlowPath.predict_x0(x, tau, v1))
        x_euler = x + h * v1
        if method == "heun" and k + 1 < steps:
            x = x + h * 0.5 * (v1 + v(x_euler, tau + h))
        else:
            x = x_euler
        if progress is not None:
            progress(k + 1, steps)
    return _finish(trajectory, steps, x, nfe)
