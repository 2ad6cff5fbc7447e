"""Hand-written optimizers (profond.scratch.optim) against torch.optim and the course's formulas."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from profond.scratch import optim as so

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(seed: int):
    """A small random float64 MLP regression problem: (model, inputs, targets)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(32, 5, generator=g, dtype=torch.float64)
    y = torch.randn(32, 3, generator=g, dtype=torch.float64)
    return model, x, y


def _train_side_by_side(ours_cls, ref_cls, kw, seed, steps=100, ref_kw=None):
    model_a, x, y = _problem(seed)
    model_b = copy.deepcopy(model_a)
    opt_a = ours_cls(model_a.parameters(), **kw)
    opt_b = ref_cls(model_b.parameters(), **(ref_kw or kw))
    pairs = list(zip(model_a.parameters(), model_b.parameters(), strict=True))
    for step in range(steps):
        for model, opt in ((model_a, opt_a), (model_b, opt_b)):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        with torch.no_grad():   # one cheap check per step: largest gap over all parameters
            gap = max((pa - pb).abs().max().item() for pa, pb in pairs)
        assert gap <= 1e-6, f"step {step}: max |ours - torch| = {gap:.3g}"
    return model_a, opt_a


CASES = [
    (so.SGD, torch.optim.SGD, {"lr": 0.1}),
    (so.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (so.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (so.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.1}),
    (so.SGD, torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.05}),
    (so.RMSprop, torch.optim.RMSprop, {"lr": 1e-2}),
    (so.RMSprop, torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "momentum": 0.9,
                                       "weight_decay": 0.01}),
    (so.Adam, torch.optim.Adam, {"lr": 1e-2}),
    (so.Adam, torch.optim.Adam, {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.1}),
    (so.AdamW, torch.optim.AdamW, {"lr": 1e-2}),
    (so.AdamW, torch.optim.AdamW, {"lr": 1e-2, "betas": (0.85, 0.995), "weight_decay": 0.3}),
]


@pytest.mark.parametrize("ours,ref,kw", CASES,
                         ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_matches_torch_every_step(ours, ref, kw):
    _train_side_by_side(ours, ref, kw, seed=len(str(kw)))


def test_state_dict_roundtrip_continues_identically():
    model, opt = _train_side_by_side(so.Adam, torch.optim.Adam, {"lr": 1e-2}, seed=3, steps=5)
    clone = copy.deepcopy(model)
    opt2 = so.Adam(clone.parameters(), lr=123.0)
    # deepcopy as torch.save/torch.load would: load_state_dict keeps same-dtype tensors by
    # reference, so without it both optimizers would share (and double-update) their buffers
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt2.param_groups[0]["lr"] == 1e-2
    _, x, y = _problem(3)
    for _ in range(5):
        for m, o in ((model, opt), (clone, opt2)):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_lion_matches_numpy_restatement():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) for _ in range(5)]
    lr, (b1, b2), wd = 0.01, (0.9, 0.99), 0.1
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = so.Lion([p], lr=lr, betas=(b1, b2), weight_decay=wd)
    w, m = w0.copy(), np.zeros_like(w0)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        c = b1 * m + (1 - b1) * g
        w = w * (1 - lr * wd) - lr * np.sign(c)
        m = b2 * m + (1 - b2) * g
        np.testing.assert_allclose(p.detach().numpy(), w, atol=1e-12, rtol=0)
    np.testing.assert_allclose(opt.state[p]["exp_avg"].numpy(), m, atol=1e-12)


# ----------------------------------------------------------------------------- SAM

A = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)


def _quad(w):
    return 0.5 * w @ A @ w          # f(w) = ½ wᵀAw, ∇f = A w


def test_sam_first_and_second_step_on_quadratic():
    w0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    w = nn.Parameter(w0.clone())
    rho, lr = 0.1, 0.05
    opt = so.SAM([w], so.SGD, rho=rho, lr=lr)
    _quad(w).backward()
    g0 = A @ w0
    opt.first_step(zero_grad=True)
    w_adv = w0 + rho * g0 / g0.norm()
    torch.testing.assert_close(w.detach(), w_adv, atol=1e-15, rtol=0)
    _quad(w).backward()
    torch.testing.assert_close(w.grad, A @ w_adv)
    opt.second_step()
    # restored to w0, then an SGD step with the gradient at the perturbed point
    torch.testing.assert_close(w.detach(), w0 - lr * (A @ w_adv), atol=1e-15, rtol=0)
    assert "sam_w_old" not in opt.state[w]


def test_sam_step_closure_matches_two_passes_and_state_dict():
    def run(use_closure):
        w = nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
        opt = so.SAM([w], so.SGD, rho=0.05, lr=0.1, momentum=0.9)

        def closure():
            opt.zero_grad()
            loss = _quad(w)
            loss.backward()
            return loss

        for _ in range(3):
            if use_closure:
                opt.step(closure)
            else:
                closure()
                opt.first_step(zero_grad=True)
                closure()
                opt.second_step(zero_grad=True)
        return w, opt

    (wa, oa), (wb, _) = run(True), run(False)
    torch.testing.assert_close(wa, wb, atol=0, rtol=0)
    sd = oa.state_dict()
    assert "momentum_buffer" in sd["state"][0]       # base optimizer state is included
    w2 = nn.Parameter(wa.detach().clone())
    o2 = so.SAM([w2], so.SGD, rho=0.05, lr=0.1, momentum=0.9)
    o2.load_state_dict(copy.deepcopy(sd))
    assert o2.base_optimizer.state is o2.state and o2.base_optimizer.param_groups is o2.param_groups
    torch.testing.assert_close(o2.state[w2]["momentum_buffer"], oa.state[wa]["momentum_buffer"])


def test_sam_sgd_decreases_loss():
    model, x, y = _problem(7)
    opt = so.SAM(model.parameters(), so.SGD, rho=0.05, lr=0.1)

    def closure():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(50):
        opt.step(closure)
    assert closure().item() < 0.8 * first


# ------------------------------------------- Exercise 3.5: Adam + L2 is not AdamW


def _one_step(cls, w0, g, **kw):
    p = nn.Parameter(w0.clone())
    opt = cls([p], **kw)
    p.grad = g.clone()
    opt.step()
    return p.detach()


def test_exercise_3_5_adam_l2_vs_adamw_closed_form():
    """Two parameters, one with a huge gradient, one with none (course exercise 3.5.2).

    At t = 1 the bias-corrected moments are m̂ = g', v̂ = g'² (eqs. 3.28–3.33), so
      Adam + L2:  θ₁ = θ₀ − η (g + λθ₀) / (|g + λθ₀| + ε)
      AdamW:      θ₁ = (1 − ηλ) θ₀ − η g / (|g| + ε)
    """
    lr, lam, eps = 0.1, 0.01, 1e-8
    w0 = torch.tensor([1.0, 1.0], dtype=torch.float64)
    g = torch.tensor([100.0, 0.0], dtype=torch.float64)   # large vs zero gradient
    adam = _one_step(so.Adam, w0, g, lr=lr, weight_decay=lam, eps=eps)
    adamw = _one_step(so.AdamW, w0, g, lr=lr, weight_decay=lam, eps=eps)
    gl = g + lam * w0
    closed_adam = w0 - lr * gl / (gl.abs() + eps)
    closed_adamw = (1 - lr * lam) * w0 - lr * g / (g.abs() + eps)
    torch.testing.assert_close(adam, closed_adam, atol=1e-15, rtol=0)
    torch.testing.assert_close(adamw, closed_adamw, atol=1e-15, rtol=0)
    torch.testing.assert_close(adam - adamw, closed_adam - closed_adamw, atol=1e-15, rtol=0)

    # The decay's own contribution (update with λ minus update with λ = 0):
    plain = _one_step(so.Adam, w0, g, lr=lr, eps=eps)
    decay_adam, decay_adamw = plain - adam, plain - adamw
    # AdamW shrinks both weights by exactly ηλθ …
    torch.testing.assert_close(decay_adamw, lr * lam * w0, atol=1e-15, rtol=0)
    # … Adam + L2 does not decay the large-gradient weight at all (λθ drowned in g)
    assert abs(decay_adam[0].item()) < 1e-12
    # … and pulls the zero-gradient weight by a full η, i.e. 1/λ = 100 times too much.
    assert decay_adam[1].item() == pytest.approx(lr, rel=1e-6)


def test_adam_l2_vs_adamw_random_one_step_closed_form():
    torch.manual_seed(0)
    lr, lam, eps, (b1, b2) = 1e-3, 0.1, 1e-8, (0.9, 0.999)
    w0, g = torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64)
    diff = (_one_step(so.Adam, w0, g, lr=lr, weight_decay=lam, betas=(b1, b2))
            - _one_step(so.AdamW, w0, g, lr=lr, weight_decay=lam, betas=(b1, b2)))
    gl = g + lam * w0
    # (3.28)-(3.30) at t=1: m̂ = (1-β₁)g'/(1-β₁) = g', v̂ = g'² → step η g'/(|g'|+ε)
    expected = -lr * gl / (gl.abs() + eps) + lr * lam * w0 + lr * g / (g.abs() + eps)
    torch.testing.assert_close(diff, expected, atol=1e-15, rtol=0)


def test_sgd_weight_decay_is_l2():
    """Exercise 3.5.1: for SGD, weight decay λ ≡ adding λθ to the gradient (∇ of λ/2‖θ‖²)."""
    w0, g = torch.tensor([1.0, -3.0], dtype=torch.float64), torch.tensor([0.5, 2.0],
                                                                          dtype=torch.float64)
    a = _one_step(so.SGD, w0, g, lr=0.1, weight_decay=0.2)
    b = _one_step(so.SGD, w0, g + 0.2 * w0, lr=0.1)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_invalid_hyperparameters():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError):
        so.SGD(p, lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        so.Adam(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError):
        so.SAM(p, so.SGD, rho=-1.0, lr=0.1)
    with pytest.raises(ValueError):
        so.SAM(p, so.SGD, lr=0.1).step()
