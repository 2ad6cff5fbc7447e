"""Manual backprop MLP (course §2.2, §2.7): finite differences, scratch autograd, torch, digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from profond.scratch.autograd import Tensor, cross_entropy
from profond.scratch.mlp import ManualMLP, gradcheck, numerical_grad, relative_error

ACTS = ["relu", "tanh", "sigmoid"]
LOSSES = ["ce", "mse"]
N_IN, N_HID, N_OUT, BATCH = 5, 6, 3, 7


def make(depth, activation, loss, seed=0):
    """A model with ``depth`` affine layers and a batch of inputs/targets for it."""
    sizes = [N_IN] + [N_HID] * (depth - 1) + [N_OUT]
    model = ManualMLP(sizes, activation=activation, loss=loss, seed=seed)
    rng = np.random.default_rng(100 + seed)
    X = rng.standard_normal((BATCH, N_IN))
    y = rng.integers(0, N_OUT, BATCH) if loss == "ce" else rng.standard_normal((BATCH, N_OUT))
    return model, X, y


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_gradcheck_every_parameter(depth, activation, loss):
    model, X, y = make(depth, activation, loss, seed=depth)
    grads = model.backward(X, y)
    assert [g.shape for g in grads] == [p.shape for p in model.params()]
    numeric = numerical_grad(lambda: model.loss(X, y), model.params())
    for g, n in zip(grads, numeric, strict=True):
        assert relative_error(g, n) < 1e-6
    assert gradcheck(lambda: model.loss(X, y), model.params(), grads) < 1e-6


def test_gradcheck_detects_a_wrong_gradient():
    model, X, y = make(2, "tanh", "ce")
    grads = [g.copy() for g in model.backward(X, y)]
    grads[0][0, 0] += 0.1
    assert gradcheck(lambda: model.loss(X, y), model.params(), grads) > 1e-3


def _scratch_grads(model, X, y):
    """The same network written with the scratch autograd engine."""
    params = [Tensor(p.copy(), requires_grad=True) for p in model.params()]
    a = Tensor(X)
    for i in range(model.depth):
        a = a @ params[2 * i] + params[2 * i + 1]
        if i < model.depth - 1:
            a = getattr(a, model.activation)()
    loss = cross_entropy(a, y) if model.loss_name == "ce" else ((a - Tensor(y)) ** 2).mean()
    loss.backward()
    return loss.item(), [p.grad for p in params]


def _torch_grads(model, X, y):
    """The same network in torch float64 (weights copied)."""
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in model.params()]
    a = torch.tensor(X, dtype=torch.float64)
    for i in range(model.depth):
        a = a @ params[2 * i] + params[2 * i + 1]
        if i < model.depth - 1:
            a = getattr(torch, model.activation)(a)
    if model.loss_name == "ce":
        loss = torch.nn.functional.cross_entropy(a, torch.as_tensor(y))
    else:
        loss = torch.nn.functional.mse_loss(a, torch.tensor(y))
    loss.backward()
    return loss.item(), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("depth", [1, 3])
def test_grads_equal_scratch_autograd_and_torch(depth, activation, loss):
    model, X, y = make(depth, activation, loss, seed=7)
    manual = model.backward(X, y)
    value = model.loss(X, y)
    for ref_value, ref_grads in (_scratch_grads(model, X, y), _torch_grads(model, X, y)):
        assert value == pytest.approx(ref_value, rel=1e-12)
        for g, r in zip(manual, ref_grads, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)


def test_forward_caches_and_row_vector_convention():
    model, X, _ = make(3, "relu", "ce")
    out = model.forward(X)
    assert len(model.zs) == 3 and len(model.activations) == 4
    assert model.activations[0] is not None and model.activations[-1] is out
    assert [W.shape for W in model.W] == [(N_IN, N_HID), (N_HID, N_HID), (N_HID, N_OUT)]
    np.testing.assert_allclose(model.zs[0], X @ model.W[0] + model.b[0])
    np.testing.assert_allclose(model.activations[1], np.maximum(model.zs[0], 0))


def test_step_is_gradient_descent_and_decreases_loss():
    model, X, y = make(2, "tanh", "mse")
    before = [p.copy() for p in model.params()]
    loss0 = model.loss(X, y)
    grads = model.backward(X, y)
    model.step(0.05)
    for p, b, g in zip(model.params(), before, grads, strict=True):
        np.testing.assert_allclose(p, b - 0.05 * g)
    assert model.loss(X, y) < loss0


def test_init_scales_and_validation():
    relu = ManualMLP([400, 300, 10], activation="relu", seed=1)
    tanh = ManualMLP([400, 300, 10], activation="tanh", seed=1)
    assert relu.W[0].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)  # He
    assert tanh.W[0].std() == pytest.approx(np.sqrt(2 / 700), rel=0.02)  # Xavier
    assert ManualMLP([3, 2], dtype=np.float32).W[0].dtype == np.float32
    with pytest.raises(ValueError, match="activation"):
        ManualMLP([3, 2], activation="gelu")
    with pytest.raises(ValueError, match="loss"):
        ManualMLP([3, 2], loss="hinge")
    with pytest.raises(RuntimeError):
        ManualMLP([3, 2]).step(0.1)


def test_trains_on_digits_above_90_percent():
    """§2.7 for real: one hidden layer of 64, 300 full-batch gradient-descent steps."""
    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits  # ships with scikit-learn

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1400], order[1400:]
    model = ManualMLP([64, 64, 10], activation="relu", loss="ce", seed=0)
    first = model.loss(X[train], y[train])
    # small matrices: one BLAS thread is fastest, and avoids oversubscribing a busy machine
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(300):
            model.backward(X[train], y[train])
            model.step(0.5)
    assert model.loss(X[train], y[train]) < first / 5
    assert model.accuracy(X[test], y[test]) > 0.9
