"""The scratch autograd engine (course §2.3) against PyTorch's autograd, in float64.

Two layers of checks:

* property tests (hypothesis) build *random expression graphs* — random op sequences over
  random-shaped inputs, with broadcasting and nodes reused — once with our :class:`Tensor` and
  once with ``torch``, and compare every output value and every leaf gradient;
* explicit unit tests per operation and for the tricky cases (repeated indices, reductions over
  axis tuples, diamond graphs, gradient accumulation, the course's example).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profond.scratch.autograd import Tensor, cross_entropy, no_grad, tensor, unbroadcast

RTOL, ATOL = 1e-8, 1e-10
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def close(ours, theirs, rtol=RTOL, atol=ATOL):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    ours = ours.data if isinstance(ours, Tensor) else ours
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol)


def pair(array, requires_grad=True):
    """The same float64 leaf in both engines."""
    array = np.asarray(array, dtype=np.float64)
    return (Tensor(array.copy(), requires_grad=requires_grad),
            torch.tensor(array, dtype=torch.float64, requires_grad=requires_grad))


def check_grads(build, *arrays, upstream_seed=0):
    """Run ``build(*leaves)`` in both engines on a weighted sum; compare value and gradients."""
    ours, theirs = zip(*(pair(a) for a in arrays), strict=True)
    out_o, out_t = build(*ours), build(*theirs)
    close(out_o, out_t)
    w = np.random.default_rng(upstream_seed).standard_normal(out_o.shape)
    (out_o * w).sum().backward()
    (out_t * torch.tensor(w)).sum().backward()
    for o, t in zip(ours, theirs, strict=True):
        close(o.grad, t.grad)


# ======================================================================= random graphs
def _broadcast_variant(draw, shape):
    """A shape that broadcasts against ``shape``: some leading axes dropped, some sizes → 1."""
    drop = draw(st.integers(0, len(shape)))
    kept = shape[drop:]
    return tuple(1 if draw(st.booleans()) else n for n in kept)


@st.composite
def random_graph(draw):
    """A recipe: leaf shapes plus a list of ops (applied identically to both engines)."""
    ndim = draw(st.integers(1, 3))
    base = tuple(draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim)))
    n_ops = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    ops = [draw(st.sampled_from(OPS)) for _ in range(n_ops)]
    choices = [draw(st.integers(0, 10**6)) for _ in range(n_ops * 4)]
    return base, ops, seed, choices


# Each op takes the node pool `pool` (list of (ours, torch) pairs), a supply of integers `c`,
# fresh leaves `new(shape)`, and returns a new (ours, torch) pair.  Ops that need a safe domain
# inspect the current values (known at construction time) and, if needed, first map their
# input into the domain with a smooth differentiable function — still built in both engines.
def _pick(pool, c):
    return pool[next(c) % len(pool)]


def _positive(x):
    """Map a pair into (0, ∞) away from 0 if it is not already: x² + 0.5."""
    o, t = x
    if o.data.size and o.data.min() > 0.2:
        return o, t
    return o * o + 0.5, t * t + 0.5


def _bounded(x):
    """Keep magnitudes moderate (before exp): tanh if any |x| > 4."""
    o, t = x
    if np.abs(o.data).max(initial=0) <= 4:
        return o, t
    return o.tanh(), t.tanh()


def _axis_args(o, c):
    """(axis, keepdims) for a reduction: None, an int, or a tuple of axes."""
    kind = next(c) % 3
    if kind == 0 or o.ndim == 0:
        return None, bool(next(c) % 2)
    if kind == 1:
        return next(c) % o.ndim - o.ndim * (next(c) % 2), bool(next(c) % 2)  # maybe negative
    axes = tuple(sorted({next(c) % o.ndim for _ in range(2)}))
    return axes, bool(next(c) % 2)


def op_binary(pool, c, new):
    (a_o, a_t) = _pick(pool, c)
    # the other operand: an existing node of a compatible shape, or a fresh broadcast leaf
    others = [p for p in pool if _broadcasts(p[0].shape, a_o.shape)]
    b_o, b_t = _pick(others, c) if others and next(c) % 2 else new(a_o.shape)
    kind = next(c) % 4
    if kind == 0:
        return a_o + b_o, a_t + b_t
    if kind == 1:
        return a_o - b_o, a_t - b_t
    if kind == 2:
        return a_o * b_o, a_t * b_t
    b_o, b_t = _positive((b_o, b_t))
    return a_o / b_o, a_t / b_t


def _broadcasts(s1, s2):
    try:
        np.broadcast_shapes(s1, s2)
        return True
    except ValueError:
        return False


def op_scalar(pool, c, new):
    o, t = _pick(pool, c)
    k = 1.5 + next(c) % 3
    match next(c) % 5:
        case 0:
            return o * k, t * k
        case 1:
            return k - o, k - t
        case 2:
            return o + k, t + k
        case 3:
            o, t = _positive((o, t))
            return k / o, k / t
        case _:
            return -o, -t


def op_unary(pool, c, new):
    o, t = _pick(pool, c)
    match next(c) % 6:
        case 0:
            o, t = _bounded((o, t))
            return o.exp(), t.exp()
        case 1:
            o, t = _positive((o, t))
            return o.log(), t.log()
        case 2:
            return o.relu(), t.relu()
        case 3:
            return o.sigmoid(), t.sigmoid()
        case 4:
            return o.tanh(), t.tanh()
        case _:
            p = [2.0, 3.0, 0.5, -1.0, 1.5][next(c) % 5]
            o, t = _positive((o, t))
            return o**p, t**p


def op_reduce(pool, c, new):
    o, t = _pick(pool, c)
    axis, keep = _axis_args(o, c)
    dim = tuple(range(t.ndim)) if axis is None else axis
    match next(c) % 3:
        case 0:
            return o.sum(axis=axis, keepdims=keep), t.sum(dim=dim, keepdim=keep)
        case 1:
            return o.mean(axis=axis, keepdims=keep), t.mean(dim=dim, keepdim=keep)
        case _:
            if o.ndim == 0:
                return o.exp(), t.exp()
            ax = next(c) % o.ndim
            return o.logsumexp(axis=ax, keepdims=keep), t.logsumexp(dim=ax, keepdim=keep)


def op_softmax(pool, c, new):
    o, t = _pick(pool, c)
    if o.ndim == 0:
        return o.sigmoid(), t.sigmoid()
    ax = next(c) % o.ndim - o.ndim * (next(c) % 2)
    return o.log_softmax(axis=ax), torch.log_softmax(t, dim=ax)


def op_shape(pool, c, new):
    o, t = _pick(pool, c)
    match next(c) % 4:
        case 0:
            perm = tuple(np.random.default_rng(next(c)).permutation(o.ndim).tolist())
            return o.transpose(perm), t.permute(perm)
        case 1:
            return o.reshape(-1), t.reshape(-1)
        case 2 if o.ndim >= 1:
            n = o.shape[0]
            idx = np.random.default_rng(next(c)).integers(0, n, size=n + 1)  # repeats likely
            return o[idx], t[torch.as_tensor(idx)]
        case 3 if o.ndim >= 1:
            start = next(c) % o.shape[-1]
            return o[..., start:], t[..., start:]
        case _:
            return o.T, t.permute(tuple(reversed(range(t.ndim))))


def op_matmul(pool, c, new):
    o, t = _pick(pool, c)
    if o.ndim == 0:
        return o * o, t * t
    k = 1 + next(c) % 3
    if next(c) % 2:  # right-multiply: (..., n) @ (n, k) or (n,) for a matrix-vector product
        w_shape = (o.shape[-1], k) if next(c) % 3 else (o.shape[-1],)
        w_o, w_t = new(w_shape, exact=True)
        return o @ w_o, t @ w_t
    # left-multiply: (k, m) @ (..., m, n), or (m,) @ (..., m, n); needs ndim ≥ 2 for the
    # (..., m, n) side, else it is a vector·vector / matrix·vector product
    m = o.shape[-2] if o.ndim >= 2 else o.shape[0]
    w_shape = (k, m) if next(c) % 2 else (m,)
    w_o, w_t = new(w_shape, exact=True)
    return w_o @ o, w_t @ t


OPS = [op_binary, op_scalar, op_unary, op_reduce, op_softmax, op_shape, op_matmul]


@settings(PROPERTY, max_examples=150)
@given(random_graph())
def test_random_graphs_match_torch(recipe):
    base, ops, seed, choices = recipe
    rng = np.random.default_rng(seed)
    leaves: list[tuple[Tensor, torch.Tensor]] = []
    c = iter(choices * 50)

    def new(like_shape, exact=False):
        """A fresh leaf of ``like_shape``, or (default) of a shape broadcasting against it."""
        shape = like_shape
        if not exact:  # drop some leading axes, set some sizes to 1
            shape = tuple(1 if next(c) % 2 else n for n in shape[next(c) % (len(shape) + 1):])
        leaf = pair(rng.standard_normal(shape))
        leaves.append(leaf)
        return leaf

    pool = [new(base, exact=True), new(base)]
    for op in ops:
        o, t = op(pool, c, new)
        assert o.shape == tuple(t.shape), op.__name__
        close(o, t)
        pool.append((o, t))

    # reduce the last node (plus, sometimes, others: several paths into the same leaves)
    out_o, out_t = pool[-1]
    w = rng.standard_normal(out_o.shape)
    loss_o, loss_t = (out_o * w).sum(), (out_t * torch.tensor(w)).sum()
    if len(pool) > 3:
        loss_o, loss_t = loss_o + pool[2][0].sum(), loss_t + pool[2][1].sum()
    loss_o.backward()
    loss_t.backward()
    close(loss_o, loss_t)
    for o, t in leaves:
        if t.grad is None:  # leaf not on any path to the loss
            assert o.grad is None or not np.any(o.grad)
        else:
            close(o.grad, t.grad)


@PROPERTY
@given(st.lists(st.integers(1, 4), min_size=0, max_size=4), st.data())
def test_unbroadcast_is_adjoint_of_broadcast(shape, data):
    """<broadcast(x), g> = <x, unbroadcast(g)> for every x: unbroadcast is broadcast's transpose."""
    shape = tuple(shape)
    small = _broadcast_variant(data.draw, shape) if shape else ()
    rng = np.random.default_rng(0)
    x, g = rng.standard_normal(small), rng.standard_normal(shape)
    lhs = np.sum(np.broadcast_to(x, shape) * g)
    rhs = np.sum(x * unbroadcast(g, small))
    assert unbroadcast(g, small).shape == small
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


# ======================================================================= the course example
def test_course_example_matches_torch():
    """§2.3 *Autograd en action*: x=[2,3], w=[1,-1], loss=(σ(x·w)-1)²."""
    x, w = Tensor([2.0, 3.0], requires_grad=True), Tensor([1.0, -1.0], requires_grad=True)
    loss = ((x @ w).sigmoid() - 1) ** 2
    loss.backward()
    xt = torch.tensor([2.0, 3.0], dtype=torch.float64, requires_grad=True)
    wt = torch.tensor([1.0, -1.0], dtype=torch.float64, requires_grad=True)
    lt = ((xt @ wt).sigmoid() - 1) ** 2
    lt.backward()
    close(loss, lt)
    close(x.grad, xt.grad, rtol=1e-14, atol=0)
    close(w.grad, wt.grad, rtol=1e-14, atol=0)
    # by hand: ∂L/∂z = 2(σ(-1)-1)σ(-1)(1-σ(-1)), ∂L/∂x = ∂L/∂z·w, ∂L/∂w = ∂L/∂z·x
    s = 1 / (1 + np.exp(1.0))
    dz = 2 * (s - 1) * s * (1 - s)
    close(x.grad, dz * np.array([1.0, -1.0]), rtol=1e-14, atol=0)
    close(w.grad, dz * np.array([2.0, 3.0]), rtol=1e-14, atol=0)


# ======================================================================= per-op unit tests
RNG = np.random.default_rng(1234)


def randn(*shape):
    return RNG.standard_normal(shape)


@pytest.mark.parametrize("name, build, shapes", [
    ("add-broadcast", lambda a, b: a + b, [(3, 4), (4,)]),
    ("sub-broadcast", lambda a, b: a - b, [(3, 1), (1, 4)]),
    ("mul-broadcast", lambda a, b: a * b, [(2, 3, 4), (3, 1)]),
    ("div", lambda a, b: a / (b * b + 1), [(3, 4), (3, 4)]),
    ("reflected", lambda a: 2.0 - 3.0 * a + 1.0 / (a * a + 1) + (a + 1.0) / 2.0, [(5,)]),
    ("neg", lambda a: -a, [(3,)]),
    ("pow", lambda a: (a * a + 1) ** 1.5, [(2, 3)]),
    ("rpow", lambda a: 2.0 ** a, [(4,)]),
    ("exp", lambda a: a.exp(), [(2, 3)]),
    ("log", lambda a: (a * a + 0.1).log(), [(2, 3)]),
    ("relu", lambda a: a.relu(), [(10,)]),
    ("sigmoid", lambda a: (a * 20).sigmoid(), [(10,)]),
    ("tanh", lambda a: a.tanh(), [(10,)]),
    ("matmul-2d", lambda a, b: a @ b, [(3, 4), (4, 5)]),
    ("matmul-vec-mat", lambda a, b: a @ b, [(4,), (4, 5)]),
    ("matmul-mat-vec", lambda a, b: a @ b, [(3, 4), (4,)]),
    ("matmul-dot", lambda a, b: a @ b, [(4,), (4,)]),
    ("matmul-batched", lambda a, b: a @ b, [(2, 3, 4), (2, 4, 5)]),
    ("matmul-batch-broadcast", lambda a, b: a @ b, [(2, 1, 3, 4), (5, 4, 2)]),
    ("reshape", lambda a: a.reshape(4, 3) * a.reshape((4, 3)), [(2, 6)]),
    ("T", lambda a: a.T @ a, [(3, 2)]),
    ("slice", lambda a: a[1:, ::2] * a[:-1, 1::2], [(3, 4)]),
    ("int-index", lambda a: a[1] * a[-1, 2], [(3, 4)]),
    ("sum-all", lambda a: a.sum(), [(3, 4)]),
    ("sum-axis", lambda a: a.sum(axis=1), [(3, 4)]),
    ("sum-neg-axis-keep", lambda a: a.sum(axis=-1, keepdims=True), [(3, 4)]),
    ("mean-axis", lambda a: a.mean(axis=0), [(3, 4)]),
    ("logsumexp", lambda a: a.logsumexp(axis=1), [(3, 4)]),
    ("logsumexp-keep", lambda a: a.logsumexp(axis=0, keepdims=True), [(3, 4)]),
    ("log_softmax-last", lambda a: a.log_softmax(axis=-1), [(3, 4)]),
    ("log_softmax-first", lambda a: a.log_softmax(axis=0), [(3, 4, 2)]),
    ("softmax", lambda a: a.softmax(axis=1), [(3, 4)]),
])
def test_op_matches_torch(name, build, shapes):
    check_grads(build, *(randn(*s) for s in shapes))


def _torch_only_ops():
    """Ops whose names differ between the two engines, as (ours, torch) builders."""
    return [
        (lambda a: a.sum(axis=(0, 2), keepdims=True), lambda a: a.sum(dim=(0, 2), keepdim=True)),
        (lambda a: a.sum(axis=(0, 2)), lambda a: a.sum(dim=(0, 2))),
        (lambda a: a.mean(axis=(1, -1), keepdims=True),
         lambda a: a.mean(dim=(1, -1), keepdim=True)),
        (lambda a: a.mean(axis=(0, 1)), lambda a: a.mean(dim=(0, 1))),
        (lambda a: a.mean(), lambda a: a.mean()),
        (lambda a: a.logsumexp(axis=(0, 2)), lambda a: a.logsumexp(dim=(0, 2))),
        (lambda a: a.log_softmax(axis=1), lambda a: torch.log_softmax(a, dim=1)),
        (lambda a: a.transpose(), lambda a: a.permute(2, 1, 0)),
        (lambda a: a.transpose(2, 0, 1), lambda a: a.permute(2, 0, 1)),
        (lambda a: a.transpose((1, 0, 2)), lambda a: a.permute(1, 0, 2)),
    ]


@pytest.mark.parametrize("i", range(len(_torch_only_ops())))
def test_reductions_over_axis_tuples(i):
    ours_fn, torch_fn = _torch_only_ops()[i]
    x = randn(2, 3, 4)
    o, t = pair(x)
    out_o, out_t = ours_fn(o), torch_fn(t)
    close(out_o, out_t)
    w = randn(*out_o.shape)
    (out_o * w).sum().backward()
    (out_t * torch.tensor(w)).sum().backward()
    close(o.grad, t.grad)


def test_log_softmax_is_stable_and_matches_torch():
    x = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]])
    o, t = pair(x)
    lo, lt = o.log_softmax(axis=1), torch.log_softmax(t, dim=1)
    assert np.all(np.isfinite(lo.data))
    close(lo, lt)
    lo[:, 0].sum().backward()
    lt[:, 0].sum().backward()
    close(o.grad, t.grad)


def test_indexing_with_repeated_indices_accumulates():
    """x[[0, 0, 2]] reads x[0] twice, so x[0] receives the gradient twice (np.add.at)."""
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([0, 0, 2])].sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, 1.0, 0.0])
    # fancy indexing along two axes and mixed with a slice, against torch
    idx = np.array([1, 1, 0, 2, 1])
    check_grads(lambda a: a[idx, :2], randn(3, 4))
    rows, cols = np.array([0, 0, 2, 0]), np.array([1, 1, 3, 1])
    check_grads(lambda a: a[rows, cols], randn(3, 4))
    check_grads(lambda a: a[..., idx % 2], randn(2, 3, 2))


def test_indexing_with_boolean_mask_and_tensor_index():
    x = randn(3, 4)
    mask = x > 0
    check_grads(lambda a: a[mask] if isinstance(a, Tensor) else a[torch.as_tensor(mask)], x)
    t = Tensor(x, requires_grad=True)
    t[Tensor([2, 2])].sum().backward()
    np.testing.assert_array_equal(t.grad, np.stack([np.zeros(4), np.zeros(4), 2 * np.ones(4)]))


def test_cross_entropy_matches_torch():
    logits, labels = randn(6, 5), np.array([0, 4, 4, 1, 2, 0])
    o, t = pair(logits)
    lo = cross_entropy(o, labels)
    lt = torch.nn.functional.cross_entropy(t, torch.as_tensor(labels))
    lo.backward()
    lt.backward()
    close(lo, lt)
    close(o.grad, t.grad)


# ======================================================================= graph mechanics
def test_diamond_graph_accumulates():
    """x feeds two branches that meet again: its gradient is the sum over both paths."""
    x = Tensor(3.0, requires_grad=True)
    a = x * 2  # path 1
    b = x.exp()  # path 2
    y = a * b + a  # a used twice as well
    y.backward()
    # y = 2x eˣ + 2x  ⇒  y' = 2eˣ + 2x eˣ + 2
    np.testing.assert_allclose(x.grad, 2 * np.exp(3) + 6 * np.exp(3) + 2, rtol=1e-14)
    # same node twice in one op
    z = Tensor([1.0, -2.0], requires_grad=True)
    (z * z).sum().backward()
    np.testing.assert_array_equal(z.grad, [2.0, -4.0])


def test_gradients_accumulate_across_backward_calls_until_zeroed():
    w = Tensor([1.0, 2.0], requires_grad=True)
    (w * 3).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(w.grad, [6.0, 6.0])
    w.zero_grad()
    (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, [2.0, 4.0])


def test_deep_chain_has_no_recursion_limit():
    x = Tensor(0.5, requires_grad=True)
    y = x
    for _ in range(5000):  # far beyond Python's default recursion limit of 1000
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad == pytest.approx(1.0)


def test_no_grad_records_nothing_and_constants_get_no_grad():
    w = Tensor([1.0, 2.0], requires_grad=True)
    c = Tensor([5.0, 5.0])
    with no_grad():
        y = w * 2
    assert not y.requires_grad and y.is_leaf
    z = (w * c).sum()
    z.backward()
    assert c.grad is None
    np.testing.assert_array_equal(w.grad, [5.0, 5.0])


def test_backward_errors_and_explicit_seed():
    w = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (w * 2).backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(1.0).backward()
    (w * 2).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(w.grad, [2.0, 20.0])


def test_dtypes_and_numpy_interop():
    assert tensor([1, 2]).dtype == np.float64  # ints promoted
    x = Tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = (2 * x + 1.0).sum()
    assert y.dtype == np.float32  # scalars do not upcast
    y.backward()
    assert x.grad.dtype == np.float32
    a = Tensor([1.0, 2.0], requires_grad=True)
    r = np.array([3.0, 4.0]) * a  # ndarray on the left defers to Tensor.__rmul__
    assert isinstance(r, Tensor)
    (np.eye(2) @ r).sum().backward()
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])
