"""DP-SGD (Abadi et al. 2016; course §12.7.1, after def. 12.4): the noisy clipped gradient

    g̃ = (1/B) (Σ_{i∈B} clip(g_i, C) + N(0, σ²C²I)),      clip(g, C) = g · min(1, C / ‖g‖₂),

with ``g_i = ∇_θ ℓ(f_θ(x_i), y_i)`` the gradient of example ``i`` alone, ``‖g_i‖₂`` its norm
over *all* trainable parameters together (one example's whole gradient vector, as Abadi et al.
and Opacus's "flat" clipping), ``C`` the clipping norm and ``σ`` the noise multiplier.
The privacy it buys is counted by :mod:`profond.privacy.accountant` (``epsilon(q, σ, steps, δ)``).

* :func:`per_example_grads` — every ``g_i`` at once with ``torch.func`` (``functional_call`` +
  ``vmap(grad)``): ``{name: (B, *param.shape)}``;
* :func:`clip_per_example` — ``clip(g_i, C)`` and the norms ``‖g_i‖``;
* :func:`add_noise` — ``(1/B)(Σ clip(g_i, C) + N(0, σ²C²I))`` from the clipped sum;
* :func:`dp_gradient` — the three together, in chunks of examples to bound memory: ``g̃``;
* :func:`surrogate_loss` — ``Σ_p ⟨p, g̃_p⟩``, whose gradient is exactly ``g̃`` (to hand ``g̃``
  to a loop that only knows ``loss.backward()`` + ``optimizer.step()``);
* :class:`PoissonSampler` — batches by Poisson sampling: each example independently with
  probability ``q`` (the sampling that the accountant's analysis assumes), so **batch sizes
  vary** (binomial ``(N, q)``; a batch may even be empty).

``B`` in the formula is the batch size that the noise is scaled by. For a fixed batch it is its
size; with Poisson sampling pass the *expected* batch size ``qN`` (what Opacus does): dividing
by the realised ``|B|`` would make the scale depend on the data, outside the analysis.

BatchNorm is refused (its batch statistics mix the examples, so ``g_i`` is not defined): use
GroupNorm, LayerNorm or no normalisation. The noise comes from torch's PRNG, which is not
cryptographically secure: fine for a course, not for releasing a model trained on real
personal data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import Sampler

Grads = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_per_example(model: nn.Module) -> None:
    """Raise ``ValueError`` if ``model`` has a layer without per-example gradients (BatchNorm)."""
    for name, m in model.named_modules():
        # torch's BatchNorm*d / SyncBatchNorm, and any hand-written one (profond.scratch.BatchNorm)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or "batchnorm" in type(m).__name__.lower():
            raise ValueError(
                f"DP-SGD needs per-example gradients, but layer {name or '<root>'!r} is "
                f"{type(m).__name__}, whose batch statistics mix the examples of a batch; replace "
                "it with GroupNorm (nn.GroupNorm) or LayerNorm, or use no normalisation."
            )


def _check_clip(max_norm: float) -> None:
    if not (max_norm > 0 and math.isfinite(max_norm)):
        raise ValueError(f"max_norm (the clipping norm C) must be a finite number > 0, got {max_norm!r}.")


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}


def per_example_grads(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor | tuple[torch.Tensor, ...],
                      targets: torch.Tensor) -> Grads:
    """``{name: g}`` with ``g[i] = ∇_θ loss_fn(model(x_i), y_i)``, shape ``(B, *param.shape)``,
    for every parameter with ``requires_grad``.

    Each example is run alone, as a batch of one (``x_i.unsqueeze(0)``), through
    ``functional_call`` under ``vmap(grad)``; ``loss_fn(output, target)`` gets that batch of one
    (e.g. ``F.cross_entropy``). ``inputs`` may be a tuple of tensors batched on dim 0. Dropout
    draws an independent mask per example. BatchNorm, and a custom ``autograd.Function`` without
    functorch support, raise ``ValueError``.
    """
    check_per_example(model)
    params = _trainable(model)
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    if not isinstance(inputs, tuple):
        inputs = (inputs,)

    def loss_one(p: dict[str, torch.Tensor], xs: tuple[torch.Tensor, ...], y: torch.Tensor):
        out = functional_call(model, (p, buffers), tuple(x.unsqueeze(0) for x in xs))
        return loss_fn(out, y.unsqueeze(0))

    if inputs[0].shape[0] == 0:  # an empty batch (Poisson sampling can draw one)
        return {k: v.new_zeros((0, *v.shape)) for k, v in params.items()}
    try:
        return vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")(params, inputs, targets)
    except RuntimeError as e:
        if "autograd.Function" not in str(e):
            raise
        raise ValueError(
            "DP-SGD needs per-example gradients (torch.func.vmap), but the model uses a custom "
            "torch.autograd.Function without functorch support (e.g. a profond.scratch layer); "
            "use the torch layer instead (e.g. norm=layernorm, not scratch-layernorm)."
        ) from e


def clip_per_example(grads: Mapping[str, torch.Tensor], max_norm: float) -> tuple[Grads, torch.Tensor]:
    """``(clip(g_i, C) for every i, ‖g_i‖)``: each example's gradient scaled by
    ``min(1, C / ‖g_i‖₂)``, the norm taken over all its parameters together (course §12.7.1)."""
    _check_clip(max_norm)
    flat = [g.reshape(g.shape[0], -1) for g in grads.values()]
    norms = torch.cat(flat, dim=1).norm(dim=1)  # ‖g_i‖₂ over every parameter of example i
    factor = (max_norm / norms.clamp_min(torch.finfo(norms.dtype).tiny)).clamp(max=1.0)
    clipped = {k: g * factor.reshape(-1, *([1] * (g.dim() - 1))) for k, g in grads.items()}
    return clipped, norms


def add_noise(clipped_sum: Mapping[str, torch.Tensor], max_norm: float, noise_multiplier: float,
              batch_size: float, generator: torch.Generator | None = None) -> Grads:
    """``g̃ = (1/B)(Σ_i clip(g_i, C) + N(0, σ²C²I))`` (course §12.7.1) from ``Σ_i clip(g_i, C)``.

    ``batch_size`` is ``B`` (the expected ``qN`` under Poisson sampling); the noise is drawn
    from ``generator`` (on its device, then moved to each parameter's), fresh at every call.
    """
    _check_clip(max_norm)
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ValueError(f"noise_multiplier (σ) must be a finite number >= 0, got {noise_multiplier!r}.")
    if not (batch_size > 0):
        raise ValueError(f"batch_size (B, the divisor of g̃) must be > 0, got {batch_size!r}.")
    std = noise_multiplier * max_norm
    out = {}
    for k, s in clipped_sum.items():
        dev = generator.device if generator is not None else s.device
        noise = torch.randn(s.shape, generator=generator, dtype=s.dtype, device=dev).to(s.device)
        out[k] = (s + std * noise) / batch_size  # (1/B)(Σ clip(g_i, C) + N(0, σ²C²I))
    return out


def dp_gradient(model: nn.Module, loss_fn: LossFn, inputs: torch.Tensor | tuple[torch.Tensor, ...],
                targets: torch.Tensor, *, max_norm: float, noise_multiplier: float,
                batch_size: float | None = None, generator: torch.Generator | None = None,
                chunk_size: int | None = None) -> Grads:
    """DP-SGD's noisy clipped gradient ``g̃`` (course §12.7.1) of ``model`` on one batch:
    ``{name: tensor of the parameter's shape}`` for every parameter with ``requires_grad``.

    ``batch_size`` (B) defaults to the number of examples given; under Poisson sampling pass the
    expected batch size ``q·N``. ``chunk_size`` examples at a time have their per-example
    gradients materialised (memory ``chunk_size × #params``; default: all at once). With
    ``noise_multiplier=0`` and a huge ``max_norm`` this is the ordinary mean-loss gradient.
    """
    xs = inputs if isinstance(inputs, tuple) else (inputs,)
    n = int(targets.shape[0])
    if batch_size is None:
        batch_size = n
    step = n if chunk_size is None else int(chunk_size)
    if step < 1 and n > 0:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}.")
    check_per_example(model)
    total = {k: torch.zeros_like(v) for k, v in _trainable(model).items()}
    for start in range(0, n, max(step, 1)):
        sl = slice(start, start + step)
        g = per_example_grads(model, loss_fn, tuple(x[sl] for x in xs), targets[sl])
        clipped, _ = clip_per_example(g, max_norm)
        for k, c in clipped.items():
            total[k] += c.sum(0)  # Σ_{i∈B} clip(g_i, C)
    return add_noise(total, max_norm, noise_multiplier, batch_size, generator)


def surrogate_loss(model: nn.Module, g_tilde: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``Σ_p ⟨p, g̃_p⟩`` over the parameters named in ``g_tilde``: its gradient with respect to
    each ``p`` is exactly ``g̃_p`` (``g̃`` is a constant), so ``surrogate_loss(...).backward()``
    followed by ``optimizer.step()`` is one DP-SGD step with that optimizer."""
    params = dict(model.named_parameters())
    missing = [k for k in g_tilde if k not in params]
    if missing:
        raise ValueError(f"g̃ names parameters that the model does not have: {missing}")
    return sum((params[k] * g.detach().to(params[k].dtype)).sum() for k, g in g_tilde.items())


class PoissonSampler(Sampler[list[int]]):
    """Batches of indices by Poisson sampling: in each batch every one of the ``num_examples``
    examples is included independently with probability ``sample_rate`` (q), so batch sizes
    vary — binomial ``(N, q)``, mean ``qN`` (:attr:`expected_batch_size`), and a batch may be
    empty. This is the sampling that :func:`profond.privacy.epsilon` accounts for.

    One iteration (an "epoch") yields ``steps`` batches, by default ``round(1/q)`` (each example
    seen once in expectation). Draws come from a ``torch.Generator`` seeded with ``seed``, and
    continue from one epoch to the next (two epochs differ; the same seed replays them);
    :meth:`state_dict` / :meth:`load_state_dict` save and restore it. Usable as a DataLoader's
    ``batch_sampler``, whose collate must then accept an empty list of examples, or skip it.
    """

    def __init__(self, num_examples: int, sample_rate: float, steps: int | None = None, seed: int = 0):
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples must be an integer >= 1, got {num_examples!r}.")
        if not (0 < sample_rate <= 1):
            raise ValueError(f"sample_rate (q) must be in (0, 1], got {sample_rate!r}.")
        if steps is None:
            steps = max(1, round(1 / sample_rate))
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps (batches per epoch) must be an integer >= 1, got {steps!r}.")
        self.num_examples, self.sample_rate, self.steps = num_examples, float(sample_rate), steps
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def expected_batch_size(self) -> float:
        """``q·N``, the ``B`` to divide ``Σ clip(g_i, C) + noise`` by."""
        return self.sample_rate * self.num_examples

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.steps):
            mask = torch.rand(self.num_examples, generator=self.generator) < self.sample_rate
            yield mask.nonzero().flatten().tolist()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
