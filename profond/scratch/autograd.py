"""A tiny reverse-mode automatic differentiation engine on NumPy arrays.

This is the machinery of course §2.3 (*Graphe de calcul et autograd*) written out by hand:
"PyTorch construit dynamiquement un graphe de calcul (DAG) lors de la passe avant. Chaque
opération enregistre comment calculer son gradient. L'appel à ``loss.backward()`` parcourt
ce graphe en sens inverse."  Here, each :class:`Tensor` produced by an operation remembers

* its **parents** (the tensors it was computed from), and
* a **backward closure** that maps the gradient of the loss w.r.t. this tensor,
  :math:`\\bar{y} = \\partial L / \\partial y`, to the gradients w.r.t. each parent, by the
  chain rule of §2.2.1 (a vector-Jacobian product: :math:`\\bar{x} = \\bar{y}\\,\\partial y/\\partial x`).

:meth:`Tensor.backward` sorts the graph topologically (children after parents) and walks it
in reverse, so that every node's gradient is complete — all its consumers have contributed —
before it is pushed further to its own parents.  This is exactly the delta recurrence of
§2.2 (``δ(ℓ) = (W(ℓ+1)ᵀ δ(ℓ+1)) ⊙ σ'(z(ℓ))``), generalised from a chain of layers to any DAG;
cost is linear in the size of the graph (Proposition 2.2).

The course example (§2.3, *Autograd en action*) runs unchanged apart from the import::

    >>> x = Tensor([2.0, 3.0], requires_grad=True)
    >>> w = Tensor([1.0, -1.0], requires_grad=True)
    >>> loss = ((x @ w).sigmoid() - 1) ** 2
    >>> loss.backward()
    >>> x.grad.round(4), w.grad.round(4)
    (array([-0.2875,  0.2875]), array([-0.5749, -0.8624]))

These are exactly PyTorch's values.  (The *Sortie* box printed in the course,
``[-0.0689, 0.0689]`` and ``[-0.1378, 0.2067]``, is inconsistent with its own code: by hand,
``z = x·w = -1``, ``y = σ(-1) ≈ 0.2689``, ``∂L/∂z = 2(y-1)·y(1-y) ≈ -0.2875``, hence
``∂L/∂x = ∂L/∂z · w`` and ``∂L/∂w = ∂L/∂z · x`` — note ``∂L/∂w`` must have the sign pattern
of ``x = [2, 3]``, which the printed ``[-0.1378, 0.2067]`` does not.)

Conventions

* Data are ``float64`` by default (integers and Python scalars are promoted; an existing
  floating array keeps its dtype).  Gradients have the same shape and dtype as the data.
* **Broadcasting** follows NumPy.  An operand that was broadcast received the *same* value in
  several output positions, so its gradient is the *sum* of the output gradient over those
  positions: see :func:`unbroadcast`.
* **Gradients accumulate**: :meth:`Tensor.backward` *adds* into ``.grad`` (as PyTorch does);
  call :meth:`Tensor.zero_grad` between steps.  Unlike PyTorch, intermediate nodes also get
  their ``.grad`` filled in, which is handy for looking at the ``δ``'s of a network.
* Inside ``with no_grad():`` no graph is recorded (e.g. for a parameter update).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["Tensor", "cross_entropy", "is_grad_enabled", "no_grad", "tensor", "unbroadcast"]

# A backward closure receives ∂L/∂out and returns one gradient (or None) per parent.
BackwardFn = Callable[[np.ndarray], Sequence[np.ndarray | None]]

_GRAD_ENABLED = True


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Within this block, operations record no graph (like ``torch.no_grad``)."""
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


def is_grad_enabled() -> bool:
    """Whether new operations currently record the graph."""
    return _GRAD_ENABLED


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` (the gradient of a broadcast result) back down to an operand's ``shape``.

    NumPy broadcasting (1) prepends axes of size 1 until both operands have the same number of
    dimensions, then (2) stretches every size-1 axis to the other operand's size.  Each
    stretched element was *copied* into several outputs, and the derivative of a copy is the
    sum of the gradients of all copies.  So we undo the two steps in reverse: sum away the
    prepended leading axes, then sum (keeping the axis) every axis that had size 1.
    """
    grad = np.asarray(grad)
    # (1) leading axes that did not exist in the operand
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    # (2) axes of size 1 that were stretched
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


def _normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """``axis`` as a sorted tuple of non-negative ints (``None`` means all axes)."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    return tuple(sorted(int(a) % ndim if ndim else 0 for a in axes))


def _expand_reduced(grad: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...],
                    keepdims: bool) -> np.ndarray:
    """Broadcast the gradient of a reduction (sum/mean/logsumexp) back to the input ``shape``."""
    if not keepdims and axes:
        grad = np.expand_dims(grad, axes)  # put the reduced axes back, with size 1
    return np.broadcast_to(grad, shape)


class Tensor:
    """An ``np.ndarray`` plus what reverse-mode autodiff needs: ``grad``, parents, backward.

    Args:
        data: anything ``np.asarray`` accepts.
        requires_grad: whether gradients w.r.t. this tensor are wanted (a *leaf*, e.g. a weight).
        dtype: force a dtype; by default floats keep theirs and everything else becomes float64.
    """

    # Make ``ndarray <op> Tensor`` defer to our reflected operators instead of NumPy looping
    # over the Tensor as an object array.
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None, *,
                 _parents: tuple[Tensor, ...] = (), _backward: BackwardFn | None = None,
                 _op: str = ""):
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data, dtype=dtype)
        if dtype is None and not np.issubdtype(array.dtype, np.floating):
            array = array.astype(np.float64)
        self.data: np.ndarray = array
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._parents = _parents
        self._backward = _backward
        self._op = _op

    # ---------------------------------------------------------------- basic properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def is_leaf(self) -> bool:
        """A tensor created by the user rather than by an operation."""
        return self._backward is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._op}" if self._op else ""
        return f"Tensor({self.data!r}{grad}{op})"

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        """The same values, cut from the graph."""
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    # ---------------------------------------------------------------- graph construction
    def _lift(self, other: Any) -> Tensor:
        """Wrap a scalar/array operand; scalars take our dtype (so float32 stays float32)."""
        if isinstance(other, Tensor):
            return other
        return Tensor(np.asarray(other, dtype=self.data.dtype))

    @staticmethod
    def _make(data: np.ndarray, parents: tuple[Tensor, ...], backward: BackwardFn,
              op: str) -> Tensor:
        """The result of an operation; it records the graph only if some parent needs a gradient."""
        if _GRAD_ENABLED and any(p.requires_grad for p in parents):
            return Tensor(data, requires_grad=True, _parents=parents, _backward=backward, _op=op)
        return Tensor(data)

    # ---------------------------------------------------------------- elementwise binary ops
    # For y = a ∘ b with broadcasting, each closure computes the local VJP at full output
    # shape, then `unbroadcast` sums it back to each operand's own shape.
    def __add__(self, other: Any) -> Tensor:
        a, b = self, self._lift(other)

        def backward(g):  # ∂(a+b)/∂a = ∂(a+b)/∂b = 1
            return unbroadcast(g, a.shape), unbroadcast(g, b.shape)

        return Tensor._make(a.data + b.data, (a, b), backward, "add")

    def __sub__(self, other: Any) -> Tensor:
        a, b = self, self._lift(other)

        def backward(g):
            return unbroadcast(g, a.shape), unbroadcast(-g, b.shape)

        return Tensor._make(a.data - b.data, (a, b), backward, "sub")

    def __mul__(self, other: Any) -> Tensor:
        a, b = self, self._lift(other)

        def backward(g):  # ∂(ab)/∂a = b, ∂(ab)/∂b = a
            return unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)

        return Tensor._make(a.data * b.data, (a, b), backward, "mul")

    def __truediv__(self, other: Any) -> Tensor:
        a, b = self, self._lift(other)

        def backward(g):  # ∂(a/b)/∂a = 1/b, ∂(a/b)/∂b = -a/b²
            return (unbroadcast(g / b.data, a.shape),
                    unbroadcast(-g * a.data / (b.data * b.data), b.shape))

        return Tensor._make(a.data / b.data, (a, b), backward, "div")

    # reflected versions: `2 - x` calls x.__rsub__(2), and so on
    def __radd__(self, other: Any) -> Tensor:
        return self._lift(other) + self

    def __rsub__(self, other: Any) -> Tensor:
        return self._lift(other) - self

    def __rmul__(self, other: Any) -> Tensor:
        return self._lift(other) * self

    def __rtruediv__(self, other: Any) -> Tensor:
        return self._lift(other) / self

    def __neg__(self) -> Tensor:
        def backward(g):
            return (-g,)

        return Tensor._make(-self.data, (self,), backward, "neg")

    def __pow__(self, exponent: float) -> Tensor:
        """``x ** p`` for a constant scalar ``p``: gradient ``p · x^(p-1)``."""
        if isinstance(exponent, Tensor):
            raise TypeError("only constant scalar exponents are supported; use exp(p * log(x))")
        p = float(exponent)
        x = self

        def backward(g):
            return (g * p * x.data ** (p - 1),)

        return Tensor._make(x.data ** p, (x,), backward, f"pow{p:g}")

    def __rpow__(self, base: float) -> Tensor:
        """``c ** x`` for a constant positive scalar ``c``, i.e. ``exp(x · log c)``."""
        return (self * float(np.log(base))).exp()

    # ---------------------------------------------------------------- matrix product
    def __matmul__(self, other: Any) -> Tensor:
        """``a @ b`` with NumPy semantics (1-D, 2-D and batched, broadcasting batch axes).

        For 2-D, ``Y = A B`` gives ``Ā = Ȳ Bᵀ`` and ``B̄ = Aᵀ Ȳ`` (the ``dW = δ hᵀ`` of §2.2).
        1-D operands are promoted to matrices as NumPy does (a row ``(1, k)`` on the left, a
        column ``(k, 1)`` on the right) so the same two formulas serve for every case.
        """
        a, b = self, self._lift(other)

        def backward(g):
            a2 = a.data[None, :] if a.ndim == 1 else a.data
            b2 = b.data[:, None] if b.ndim == 1 else b.data
            # re-insert the axes NumPy dropped from the result for 1-D operands
            if b.ndim == 1:
                g = g[..., None]
            if a.ndim == 1:
                g = g[..., None, :]
            ga = g @ np.swapaxes(b2, -1, -2)
            gb = np.swapaxes(a2, -1, -2) @ g
            # batch axes may have been broadcast: reduce them, then drop the promoted axes
            return (unbroadcast(ga, a2.shape).reshape(a.shape),
                    unbroadcast(gb, b2.shape).reshape(b.shape))

        return Tensor._make(a.data @ b.data, (a, b), backward, "matmul")

    def __rmatmul__(self, other: Any) -> Tensor:
        return self._lift(other) @ self

    # ---------------------------------------------------------------- elementwise unary ops
    def exp(self) -> Tensor:
        out = np.exp(self.data)

        def backward(g):  # (eˣ)' = eˣ
            return (g * out,)

        return Tensor._make(out, (self,), backward, "exp")

    def log(self) -> Tensor:
        x = self

        def backward(g):  # (ln x)' = 1/x
            return (g / x.data,)

        return Tensor._make(np.log(x.data), (x,), backward, "log")

    def relu(self) -> Tensor:
        x = self

        def backward(g):  # 1 where x > 0, else 0 (0 at the kink, as PyTorch)
            return (g * (x.data > 0),)

        return Tensor._make(np.maximum(x.data, 0), (x,), backward, "relu")

    def sigmoid(self) -> Tensor:
        # σ(x) = 1/(1+e^{-x}) = exp(-log(1+e^{-x})), stable for large |x|
        out = np.exp(-np.logaddexp(0, -self.data))

        def backward(g):  # σ' = σ(1-σ)
            return (g * out * (1 - out),)

        return Tensor._make(out, (self,), backward, "sigmoid")

    def tanh(self) -> Tensor:
        out = np.tanh(self.data)

        def backward(g):  # tanh' = 1 - tanh²
            return (g * (1 - out * out),)

        return Tensor._make(out, (self,), backward, "tanh")

    # ---------------------------------------------------------------- reductions
    def sum(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (int, tuple, or all): each input feeds one output with weight 1."""
        shape, axes = self.shape, _normalize_axes(axis, self.ndim)

        def backward(g):
            return (_expand_reduced(g, shape, axes, keepdims),)

        out = self.data.sum(axis=axes, keepdims=keepdims)
        return Tensor._make(np.asarray(out), (self,), backward, "sum")

    def mean(self, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Tensor:
        """Mean = sum / (number of reduced elements)."""
        axes = _normalize_axes(axis, self.ndim)
        count = int(np.prod([self.shape[a] for a in axes])) if axes else 1
        return self.sum(axis=axes, keepdims=keepdims) / count

    def logsumexp(self, axis: int | Sequence[int] | None = -1, keepdims: bool = False) -> Tensor:
        """``log Σ exp(x)`` computed stably (shift by the max); its gradient is the softmax."""
        shape, axes = self.shape, _normalize_axes(axis, self.ndim)
        m = self.data.max(axis=axes, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        lse = np.log(np.exp(self.data - m).sum(axis=axes, keepdims=True)) + m
        softmax = np.exp(self.data - lse)

        def backward(g):
            return (_expand_reduced(g, shape, axes, keepdims) * softmax,)

        out = lse if keepdims else lse.squeeze(axis=axes)
        return Tensor._make(np.asarray(out), (self,), backward, "logsumexp")

    def log_softmax(self, axis: int = -1) -> Tensor:
        """``x - logsumexp(x)`` along ``axis``.

        Backward in closed form: with ``s = softmax(x)``, ``x̄ = ȳ - s · Σ ȳ`` (sum along ``axis``).
        """
        m = self.data.max(axis=axis, keepdims=True)
        shifted = self.data - m
        out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        softmax = np.exp(out)

        def backward(g):
            return (g - softmax * g.sum(axis=axis, keepdims=True),)

        return Tensor._make(out, (self,), backward, "log_softmax")

    def softmax(self, axis: int = -1) -> Tensor:
        return self.log_softmax(axis).exp()

    # ---------------------------------------------------------------- shape ops
    def reshape(self, *shape: int | Sequence[int]) -> Tensor:
        if len(shape) == 1 and not isinstance(shape[0], int | np.integer):
            shape = tuple(shape[0])
        original = self.shape

        def backward(g):  # same elements, same order: just reshape back
            return (g.reshape(original),)

        return Tensor._make(self.data.reshape(shape), (self,), backward, "reshape")

    def transpose(self, *axes: int | Sequence[int]) -> Tensor:
        """Permute axes (reverse them by default); backward applies the inverse permutation."""
        if len(axes) == 1 and not isinstance(axes[0], int | np.integer):
            axes = tuple(axes[0])
        perm = tuple(axes) if axes else tuple(reversed(range(self.ndim)))
        inverse = tuple(np.argsort(perm))

        def backward(g):
            return (g.transpose(inverse),)

        return Tensor._make(self.data.transpose(perm), (self,), backward, "transpose")

    @property
    def T(self) -> Tensor:
        return self.transpose()

    def __getitem__(self, index: Any) -> Tensor:
        """Indexing with ints, slices, ``None``, integer/boolean arrays (NumPy rules).

        The backward *scatters* the output gradient into a zero array of the input shape with
        ``np.add.at``, which—unlike ``grad[index] += g``—adds repeated indices once per
        occurrence: ``x[[0, 0]]`` uses ``x[0]`` twice, so it gets twice the gradient.
        """
        if isinstance(index, Tensor):
            index = index.data.astype(np.intp)
        elif isinstance(index, tuple):
            index = tuple(i.data.astype(np.intp) if isinstance(i, Tensor) else i for i in index)
        x = self

        def backward(g):
            grad = np.zeros_like(x.data)
            np.add.at(grad, index, g)
            return (grad,)

        return Tensor._make(np.asarray(x.data[index]), (x,), backward, "getitem")

    # ---------------------------------------------------------------- reverse pass
    def _topological_order(self) -> list[Tensor]:
        """Nodes reachable from ``self`` (through nodes needing grad), parents before children.

        Iterative depth-first search with an explicit stack, so graphs deeper than Python's
        recursion limit (long chains, RNN unrolls) are fine.  A node is emitted after all its
        parents ("post-order"); reversing the list visits every consumer before its inputs.
        """
        order: list[Tensor] = []
        visited: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, parents_done = stack.pop()
            if parents_done:
                order.append(node)
                continue
            if id(node) in visited:
                continue
            visited.add(id(node))
            stack.append((node, True))  # emitted once the parents pushed below are done
            for parent in node._parents:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
        return order

    def backward(self, grad: Any = None) -> None:
        """Accumulate ``∂self/∂x`` into ``x.grad`` for every ``x`` in the graph needing a gradient.

        Args:
            grad: the upstream gradient ``∂L/∂self``; defaults to 1 for a one-element tensor
                (the usual case ``loss.backward()``).
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad")
        if grad is None:
            if self.size != 1:
                raise RuntimeError("grad can be implicitly created only for one-element tensors")
            seed = np.ones_like(self.data)
        else:
            seed = np.broadcast_to(np.asarray(grad, dtype=self.dtype), self.shape).copy()

        # Gradients of this backward pass, summed over all the paths reaching each node.
        grads: dict[int, np.ndarray] = {id(self): seed}
        for node in reversed(self._topological_order()):
            g = grads.pop(id(node), None)
            if g is None:  # reachable only through inputs whose gradient is not needed
                continue
            node.grad = g.copy() if node.grad is None else node.grad + g
            if node._backward is None:
                continue  # a leaf: nothing further upstream
            for parent, parent_grad in zip(node._parents, node._backward(g), strict=True):
                if parent_grad is None or not parent.requires_grad:
                    continue
                if id(parent) in grads:  # a node used several times: sum the contributions
                    grads[id(parent)] = grads[id(parent)] + parent_grad
                else:
                    grads[id(parent)] = np.asarray(parent_grad, dtype=parent.dtype)


def tensor(data: Any, requires_grad: bool = False, dtype: Any = None) -> Tensor:
    """Shorthand constructor, mirroring ``torch.tensor``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def cross_entropy(logits: Tensor, labels: np.ndarray | Sequence[int]) -> Tensor:
    """Mean cross-entropy of integer ``labels`` under ``softmax(logits)`` (rows = examples).

    ``-1/B Σ_i log softmax(z_i)[y_i]``, the loss of course §2.7, with the log-softmax computed
    stably and the true-class entries picked out by integer-array indexing.
    """
    labels = np.asarray(labels, dtype=np.intp)
    logp = logits.log_softmax(axis=-1)
    return -logp[np.arange(len(labels)), labels].mean()
