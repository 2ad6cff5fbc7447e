"""Differential privacy (course §12.7.1, def. 12.4): DP-SGD's noisy clipped gradient and the
Rényi-DP accountant that turns (sampling rate q, noise multiplier σ, steps, δ) into ε.

``profond.privacy.epsilon(sample_rate, noise_multiplier, steps, delta)`` is the function the
training loop reports ε with; :func:`noise_for_epsilon` picks σ for a target ε.
"""

from profond.privacy.accountant import (
    DEFAULT_ORDERS,
    epsilon,
    epsilon_with_order,
    noise_for_epsilon,
    rdp_sampled_gaussian,
    rdp_to_epsilon,
)
from profond.privacy.dpsgd import (
    PoissonSampler,
    add_noise,
    check_per_example,
    clip_per_example,
    dp_gradient,
    per_example_grads,
    surrogate_loss,
)

__all__ = [
    "DEFAULT_ORDERS", "PoissonSampler", "add_noise", "check_per_example", "clip_per_example",
    "dp_gradient", "epsilon", "epsilon_with_order", "noise_for_epsilon", "per_example_grads",
    "rdp_sampled_gaussian", "rdp_to_epsilon", "surrogate_loss",
]
