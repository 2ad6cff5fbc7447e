"""A multilayer perceptron with hand-written backpropagation, in NumPy only.

This generalises the two-layer ``ManualMLP`` of course §2.7 (*Implémentation complète :
rétropropagation manuelle*) to any depth, three activations and two losses, and implements
literally the recurrence derived in §2.2 (*Dérivation de la rétropropagation pour un MLP*).

Row-vector convention
---------------------
The course writes one example as a column vector: ``z(ℓ) = W(ℓ) h(ℓ-1) + b(ℓ)`` with
``W(ℓ)`` of shape ``(d_ℓ, d_{ℓ-1})``.  Code processes a *batch* ``X`` of ``B`` examples stacked
as **rows** (shape ``(B, d_0)``), and we store each weight as ``(d_{ℓ-1}, d_ℓ)``, i.e. our ``W``
is the course's ``Wᵀ``.  Transposing every equation of §2.2 gives (``⊙`` = elementwise product)::

    forward    z_ℓ = a_{ℓ-1} W_ℓ + b_ℓ          a_ℓ = σ(z_ℓ)   (a_0 = X, a_L = z_L)
    output     δ_L = ∂L/∂z_L                      (see below)
    recurrence δ_ℓ = (δ_{ℓ+1} W_{ℓ+1}ᵀ) ⊙ σ'(z_ℓ)   ⇔ course: δ(ℓ) = (W(ℓ+1)ᵀ δ(ℓ+1)) ⊙ σ'(z(ℓ))
    gradients  ∂L/∂W_ℓ = a_{ℓ-1}ᵀ δ_ℓ           ⇔ course: δ(ℓ) h(ℓ-1)ᵀ, summed over the batch
               ∂L/∂b_ℓ = Σ_batch δ_ℓ             ⇔ course: δ(ℓ), summed over the batch

Each row of ``δ_ℓ`` (shape ``(B, d_ℓ)``) is one example's course ``δ(ℓ)``; the matrix product
``a_{ℓ-1}ᵀ δ_ℓ`` sums the per-example outer products ``δ h ᵀ`` over the batch in one go.

Output layer and losses
-----------------------
The last layer is affine (no activation): its outputs ``z_L`` are *logits* for ``"ce"`` and
*predictions* for ``"mse"``.

* ``"ce"``: ``L = -1/B Σ_i log softmax(z_L,i)[y_i]`` with integer labels ``y``.  The softmax
  and the log cancel nicely: ``δ_L = (softmax(z_L) - onehot(y)) / B`` (as in §2.7's
  ``delta2 = (probs - y_onehot) / N``).
* ``"mse"``: ``L = mean over all B·d_L entries of (z_L - y)²`` (as ``torch.nn.MSELoss``), so
  ``δ_L = 2 (z_L - y) / (B · d_L)``; the course's ``∂L/∂h(L) ⊙ σ'(z(L))`` with ``σ`` = identity.

:func:`gradcheck` verifies all of this against central finite differences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["ACTIVATIONS", "ManualMLP", "gradcheck", "numerical_grad", "relative_error"]

def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -z))  # 1/(1+e^{-z}), without overflow for z ≪ 0


def _sigmoid_prime(z: np.ndarray) -> np.ndarray:
    s = _sigmoid(z)
    return s * (1 - s)


# name -> (σ, σ'), both as functions of z (definitions in course §1.1)
ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray],
                             Callable[[np.ndarray], np.ndarray]]] = {
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (_sigmoid, _sigmoid_prime),
}
LOSSES = ("ce", "mse")


def _log_softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ManualMLP:
    """Fully-connected network ``sizes[0] → sizes[1] → … → sizes[-1]`` with manual backprop.

    Args:
        sizes: layer widths, input first, output last (``len(sizes) - 1`` affine layers).
        activation: hidden nonlinearity, ``"relu"``, ``"tanh"`` or ``"sigmoid"``.
        loss: ``"ce"`` (softmax cross-entropy, integer labels) or ``"mse"`` (real targets).
        seed: seed of the weight initialisation.
        dtype: floating dtype of the parameters (float64 for gradient checking).

    Initialisation (course §1.5): He, ``N(0, 2/fan_in)``, for ReLU; Xavier/Glorot,
    ``N(0, 2/(fan_in + fan_out))``, for tanh/sigmoid.  Biases start at 0.
    """

    def __init__(self, sizes: Sequence[int], activation: str = "relu", loss: str = "ce",
                 seed: int = 0, dtype: type = np.float64):
        if len(sizes) < 2:
            raise ValueError("sizes needs at least an input and an output width")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        self.sizes = list(sizes)
        self.activation, self.loss_name, self.dtype = activation, loss, dtype
        self.sigma, self.sigma_prime = ACTIVATIONS[activation]
        rng = np.random.default_rng(seed)
        self.W: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            var = 2 / fan_in if activation == "relu" else 2 / (fan_in + fan_out)
            self.W.append((rng.standard_normal((fan_in, fan_out)) * np.sqrt(var)).astype(dtype))
            self.b.append(np.zeros(fan_out, dtype=dtype))
        self.grads: list[np.ndarray] | None = None
        self.zs: list[np.ndarray] = []
        self.activations: list[np.ndarray] = []

    @property
    def depth(self) -> int:
        """Number of affine layers ``L``."""
        return len(self.W)

    def params(self) -> list[np.ndarray]:
        """``[W_1, b_1, …, W_L, b_L]`` — the live arrays (updating them updates the model)."""
        return [p for pair in zip(self.W, self.b, strict=True) for p in pair]

    # ------------------------------------------------------------------ forward pass
    def forward(self, X: np.ndarray) -> np.ndarray:
        """Output ``z_L`` (logits or predictions); caches every ``z_ℓ`` and ``a_ℓ`` for backward.

        ``self.activations[ℓ]`` is ``a_ℓ`` (``a_0 = X``), ``self.zs[ℓ-1]`` is ``z_ℓ``.
        """
        a = np.asarray(X, dtype=self.dtype)
        self.activations, self.zs = [a], []
        for layer, (W, b) in enumerate(zip(self.W, self.b, strict=True), start=1):
            z = a @ W + b  # z_ℓ = a_{ℓ-1} W_ℓ + b_ℓ
            a = self.sigma(z) if layer < self.depth else z  # the output layer stays affine
            self.zs.append(z)
            self.activations.append(a)
        return a

    __call__ = forward

    def loss(self, X: np.ndarray, y: np.ndarray) -> float:
        """Mean loss over the batch (runs a forward pass)."""
        out = self.forward(X)
        if self.loss_name == "ce":
            labels = np.asarray(y, dtype=np.intp)
            return float(-_log_softmax(out)[np.arange(len(labels)), labels].mean())
        return float(np.mean((out - np.asarray(y, dtype=self.dtype).reshape(out.shape)) ** 2))

    # ------------------------------------------------------------------ backward pass
    def _output_delta(self, out: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``δ_L = ∂L/∂z_L`` for the chosen loss (see the module docstring)."""
        B = out.shape[0]
        if self.loss_name == "ce":
            labels = np.asarray(y, dtype=np.intp)
            probs = np.exp(_log_softmax(out))
            onehot = np.zeros_like(probs)
            onehot[np.arange(B), labels] = 1
            return (probs - onehot) / B
        target = np.asarray(y, dtype=self.dtype).reshape(out.shape)
        return 2 * (out - target) / out.size

    def backward(self, X: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        """Gradients ``[∂L/∂W_1, ∂L/∂b_1, …]`` (same order as :meth:`params`) by the δ recurrence.

        Also stored in ``self.grads`` for :meth:`step`.
        """
        out = self.forward(X)
        delta = self._output_delta(out, y)  # δ_L
        grads_W: list[np.ndarray] = [None] * self.depth  # type: ignore[list-item]
        grads_b: list[np.ndarray] = [None] * self.depth  # type: ignore[list-item]
        for ell in range(self.depth, 0, -1):  # ℓ = L, …, 1 (list index ℓ-1)
            a_prev = self.activations[ell - 1]
            grads_W[ell - 1] = a_prev.T @ delta  # ∂L/∂W_ℓ = a_{ℓ-1}ᵀ δ_ℓ
            grads_b[ell - 1] = delta.sum(axis=0)  # ∂L/∂b_ℓ = Σ_batch δ_ℓ
            if ell > 1:  # δ_{ℓ-1} = (δ_ℓ W_ℓᵀ) ⊙ σ'(z_{ℓ-1})
                delta = (delta @ self.W[ell - 1].T) * self.sigma_prime(self.zs[ell - 2])
        self.grads = [g for pair in zip(grads_W, grads_b, strict=True) for g in pair]
        return self.grads

    def step(self, lr: float, grads: Sequence[np.ndarray] | None = None) -> None:
        """Gradient descent ``θ ← θ - η ∇θ L`` (§2.1.1), in place, with the last :meth:`backward`'s
        gradients unless ``grads`` is given."""
        grads = self.grads if grads is None else grads
        if grads is None:
            raise RuntimeError("call backward() before step()")
        for p, g in zip(self.params(), grads, strict=True):
            p -= lr * g

    # ------------------------------------------------------------------ convenience
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted class (``"ce"``) or regression output (``"mse"``)."""
        out = self.forward(X)
        return out.argmax(axis=1) if self.loss_name == "ce" else out

    def accuracy(self, X: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))


# ---------------------------------------------------------------------- gradient checking
def numerical_grad(f: Callable[[], float], params: Sequence[np.ndarray],
                   eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences ``(f(θ+ε) - f(θ-ε)) / 2ε`` for every entry of every array.

    ``f`` reads the *current* values of ``params``; each entry is perturbed in place and
    restored, so the arrays must be the live parameters (e.g. ``model.params()``).  The error
    is ``O(ε²)`` (versus ``O(ε)`` for one-sided differences).
    """
    grads = []
    for p in params:
        g = np.zeros_like(p)
        flat_p, flat_g = p.reshape(-1), g.reshape(-1)  # views: writing flat_p writes p
        if not np.shares_memory(flat_p, p):
            raise ValueError("parameters must be contiguous arrays (perturbed in place)")
        for i in range(flat_p.size):
            saved = flat_p[i]
            flat_p[i] = saved + eps
            f_plus = f()
            flat_p[i] = saved - eps
            f_minus = f()
            flat_p[i] = saved
            flat_g[i] = (f_plus - f_minus) / (2 * eps)
        grads.append(g)
    return grads


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``‖a - b‖ / max(‖a‖ + ‖b‖, tiny)`` — scale-free, and 0 when both are 0."""
    denom = max(float(np.linalg.norm(a) + np.linalg.norm(b)), 1e-300)
    return float(np.linalg.norm(a - b)) / denom


def gradcheck(f: Callable[[], float], params: Sequence[np.ndarray],
              grads: Sequence[np.ndarray], eps: float = 1e-6) -> float:
    """Max over parameter arrays of the :func:`relative_error` between analytic ``grads`` and
    central differences of ``f``.  In float64, a correct backward gives ~1e-8 or less; a bug
    typically gives ~1e-1.

    The error is measured per array (norms) rather than per entry, so that entries whose
    true gradient is ~0 (dead ReLU units) do not turn round-off noise into a huge ratio.
    """
    numeric = numerical_grad(f, params, eps)
    return max(relative_error(g, n) for g, n in zip(grads, numeric, strict=True))
