"""NTK and curvature tools (course §11.5, exercise 11.3; §11.8.1, exercise 11.6): the empirical
NTK equals an explicit loop over per-example gradients and is a symmetric PSD Gram matrix; the
arc-cosine formula equals a Monte-Carlo average over random units and the empirical kernel of
a wide exercise-11.3 net; HVP, power iteration and Hutchinson's trace agree with the exact
Hessian of a small network's loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from profond.metrics.curvature import hutchinson_trace, hvp, top_hessian_eigenvalue
from profond.metrics.ntk import arccos_k0, arccos_k1, arccos_ntk, empirical_ntk, exercise_net
from profond.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def tiny_mlp(num_classes: int = 1, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS.build("mlp", in_shape=[1, 1, 3], num_classes=num_classes, widths=[7, 5],
                        activation="tanh").to(F64)


def loop_ntk(model: torch.nn.Module, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Θ_ij = Σ_p ∂f(x_i)/∂θ_p ∂f(x_j)/∂θ_p from one torch.autograd.grad per example and output."""
    ps = [p for p in model.parameters() if p.requires_grad]

    def grads(x):
        rows = []
        for xi in x:
            out = model(xi[None]).reshape(-1)
            rows.append(torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, ps, retain_graph=True)])
                                     for o in out]))
        return torch.stack(rows)  # (N, K, P)

    return torch.einsum("ikp,jlp->ijkl", grads(x1), grads(x2))


def test_empirical_ntk_equals_the_gradient_loop():
    model = tiny_mlp()
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(6, 3, generator=g, dtype=F64), torch.randn(4, 3, generator=g, dtype=F64)
    theta = empirical_ntk(model, x1, x2)
    assert theta.shape == (6, 4)
    ref = loop_ntk(model, x1, x2)[:, :, 0, 0]
    assert torch.allclose(theta, ref, rtol=0, atol=1e-10), (theta - ref).abs().max()
    assert theta.abs().max() > 1e-2  # not trivially zero


def test_multi_output_ntk_is_the_full_block_kernel():
    model = tiny_mlp(num_classes=3)
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    theta = empirical_ntk(model, x)
    assert theta.shape == (5, 5, 3, 3)
    assert torch.allclose(theta, loop_ntk(model, x, x), rtol=0, atol=1e-10)


def test_empirical_ntk_is_symmetric_psd_and_skips_frozen_parameters():
    model = tiny_mlp()
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(3), dtype=F64)
    theta = empirical_ntk(model, x)
    assert torch.allclose(theta, theta.T, rtol=0, atol=1e-12)
    assert torch.linalg.eigvalsh(theta).min() > -1e-10
    # freezing the head removes its contribution: Θ_head(x, x') = h(x)ᵀh(x') + 1 (weights + bias)
    model.head.requires_grad_(False)
    h = model.features(x)
    assert torch.allclose(theta - empirical_ntk(model, x), h @ h.T + 1, atol=1e-10)


def test_arccos_kernels_closed_forms():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]], dtype=F64)
    # angle 0: k0 = 1/2, k1 = ‖x‖²/2; angle π/2: k0 = 1/4, k1 = ‖x‖‖x'‖/(2π); angle π: both 0
    assert arccos_k0(x, x)[0, 0] == pytest.approx(0.5)
    assert arccos_k1(x, x)[1, 1] == pytest.approx(2.0)
    assert arccos_k0(x, x)[0, 1] == pytest.approx(0.25)
    assert arccos_k1(x, x)[0, 1] == pytest.approx(2 / (2 * math.pi))
    assert arccos_k0(x, x)[0, 2] == pytest.approx(0.0, abs=1e-12)
    assert arccos_k1(x, x)[0, 2] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="wrt"):
        arccos_ntk(x, wrt="b")


@pytest.mark.parametrize("wrt", ["w", "a", "both"])
def test_arccos_ntk_equals_a_monte_carlo_average(wrt):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 3, generator=g, dtype=F64)
    x = x / x.norm(dim=1, keepdim=True)  # unit inputs (the setting of the exercise: Θ vs the angle)
    x[3] *= 0.5  # and one shorter one: the kernels are not functions of the angle alone
    m = 1_000_000
    w = torch.randn(m, 3, generator=g, dtype=F64)
    a = torch.randn(m, generator=g, dtype=F64)
    pre = x @ w.T  # (4, m)
    # per-unit products of exercise 11.3: ∂f/∂a_j ∝ σ(w_jᵀx), ∂f/∂w_j ∝ a_j σ'(w_jᵀx) x
    k_a = torch.relu(pre) @ torch.relu(pre).T / m
    k_w = ((pre > 0).to(F64) * a**2) @ (pre > 0).to(F64).T / m * (x @ x.T)
    mc = {"a": k_a, "w": k_w, "both": k_a + k_w}[wrt]
    err = (arccos_ntk(x, x, wrt=wrt) - mc).abs().max()
    assert err < 1e-2, err


@pytest.mark.parametrize("train_a,wrt", [(False, "w"), (True, "both")])
def test_wide_exercise_net_matches_the_analytic_kernel(train_a, wrt):
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(5), dtype=F64)
    net = exercise_net(3, 2**14, train_a=train_a, seed=6)
    emp, ana = empirical_ntk(net, x), arccos_ntk(x, wrt=wrt)
    rel = torch.linalg.norm(emp - ana) / torch.linalg.norm(ana)
    assert rel < 0.03, rel
    # and a narrow net is much further off (the limit is not reached at n = 16)
    narrow = exercise_net(3, 16, train_a=train_a, seed=6)
    assert torch.linalg.norm(empirical_ntk(narrow, x) - ana) / torch.linalg.norm(ana) > 2 * rel


# ----------------------------------------------------------------------------------------
# curvature


@pytest.fixture(scope="module")
def problem():
    """A 3 → 8 → 1 tanh network's MSE on 20 points (41 parameters), float64, with its exact Hessian."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(F64)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(20, 3, generator=g, dtype=F64)
    y = torch.randn(20, 1, generator=g, dtype=F64)
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach().clone() for p in model.parameters()]

    def loss_fn(ps):
        return ((functional_call(model, dict(zip(names, ps, strict=True)), (x,)) - y) ** 2).mean()

    return loss_fn, params, exact_hessian(loss_fn, params)


def exact_hessian(loss_fn, params):
    """The Hessian of ``loss_fn`` at ``params`` by autograd, over the flattened parameters."""
    shapes = [p.shape for p in params]

    def flat_loss(theta):
        ps, i = [], 0
        for s in shapes:
            k = math.prod(s)
            ps.append(theta[i:i + k].reshape(s))
            i += k
        return loss_fn(ps)

    return torch.autograd.functional.hessian(flat_loss, torch.cat([p.reshape(-1) for p in params]))


def _flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def test_hvp_equals_the_hessian_times_v(problem):
    loss_fn, params, hess = problem
    g = torch.Generator().manual_seed(8)
    v = [torch.randn(p.shape, generator=g, dtype=F64) for p in params]
    hv = hvp(loss_fn, params, v)
    assert [t.shape for t in hv] == [p.shape for p in params]
    assert torch.allclose(_flat(hv), hess @ _flat(v), rtol=0, atol=1e-12)


def test_power_iteration_finds_the_top_eigenvalue(problem):
    loss_fn, params, hess = problem
    evals, evecs = torch.linalg.eigh(hess)
    order = evals.abs().argsort(descending=True)
    top, second = evals[order[0]], evals[order[1]]
    assert abs(second) / abs(top) < 0.8  # a gap: (λ₂/λ₁)^{2k} converges fast
    lam, v = top_hessian_eigenvalue(loss_fn, params, iters=300, seed=0)
    assert abs(lam - top) / abs(top) < 1e-6, (lam, top)
    cos = abs(_flat(v) @ evecs[:, order[0]])
    assert cos > 1 - 1e-6
    # a different start gives the same answer; too few iterations does not reach 1e-6
    assert top_hessian_eigenvalue(loss_fn, params, iters=300, seed=1)[0] == pytest.approx(float(top), rel=1e-6)
    assert abs(top_hessian_eigenvalue(loss_fn, params, iters=1, seed=0)[0] - top) / abs(top) > 1e-6


def test_hutchinson_trace_within_three_standard_errors(problem):
    loss_fn, params, hess = problem
    exact = float(torch.trace(hess))
    est, se = hutchinson_trace(loss_fn, params, n_samples=400, seed=0)
    assert se > 0
    assert abs(est - exact) < 3 * se, (est, exact, se)
    # the standard error matches the theory: var(zᵀHz) = 2 Σ_{i≠j} H_ij²
    off = hess - torch.diag(torch.diag(hess))
    se_theory = math.sqrt(2 * float((off**2).sum()) / 400)
    assert se == pytest.approx(se_theory, rel=0.25)


def test_module_loss_fn_is_the_loss_at_the_state_with_buffers_fixed():
    """module_loss_fn evaluates the net at the given state dict (not at its live weights), in
    eval mode (BatchNorm's running statistics, not the batch's), and its Hessian is the one
    computed by autograd on the same function."""
    import torch.nn.functional as F

    from profond.metrics.curvature import module_loss_fn

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3)).to(F64)
    net.train()
    x = torch.randn(16, 4, dtype=F64)
    y = torch.randint(0, 3, (16,))
    net(x)  # move the running statistics off their initial values
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    with torch.no_grad():  # the live weights change; the function must not see it
        for p in net.parameters():
            p.add_(1.0)
    loss_fn, params = module_loss_fn(net, state, x, y)
    assert not net.training
    ref = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3)).to(F64)
    ref.load_state_dict(state)
    ref.eval()
    assert float(loss_fn(params).detach()) == pytest.approx(float(F.cross_entropy(ref(x), y)), rel=1e-12)
    lam, _ = top_hessian_eigenvalue(loss_fn, params, iters=500, seed=0)
    evals = torch.linalg.eigvalsh(exact_hessian(loss_fn, params))
    assert lam == pytest.approx(float(evals[evals.abs().argmax()]), rel=1e-4)


# ----------------------------------------------------------------------------------------
# the linearised model's predictions (course §11.5.2, eqs. 11.10-11.12)


def _linear_problem(seed: int = 0):
    """f(x) = θ·x (no bias) on N = 4 inputs in R^6: Θ(x, x′) = x·x′ and the model is its own
    linearisation, so GD on it is exactly the linearised dynamics."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(6, 1, bias=False).to(F64)
    return model, torch.randn(4, 6, dtype=F64), torch.randn(4, dtype=F64), torch.randn(5, 6, dtype=F64)


def test_kernel_regression_of_a_linear_model_is_the_nearest_interpolator():
    """For f = θ·x, f0 + Θ(x, X) Θ0⁻¹ (y − f0(X)) is x·(θ0 + X⁺(y − Xθ0)): the interpolator
    closest to θ0 (what GD from θ0 converges to)."""
    from profond.metrics.ntk import ntk_predictor

    model, X, y, xt = _linear_problem()
    theta0 = model.weight.detach().reshape(-1)
    expected = xt @ (theta0 + torch.linalg.pinv(X) @ (y - X @ theta0))
    assert torch.allclose(ntk_predictor(model, X, y, xt), expected, atol=1e-10)
    assert torch.allclose(ntk_predictor(model, X, y, X), y, atol=1e-10)  # it interpolates


def test_finite_step_predictor_equals_gradient_descent_on_a_linear_model():
    """steps=T: T GD steps on Σ (f − y)²/(2N) with step lr, done by hand on θ, give the same
    test predictions; steps=0 gives f0."""
    from profond.metrics.ntk import ntk_predictor

    model, X, y, xt = _linear_problem(1)
    lr, T = 0.3, 25
    theta = model.weight.detach().reshape(-1).clone()
    with torch.no_grad():
        assert torch.allclose(ntk_predictor(model, X, y, xt, steps=0, lr=lr), model(xt).reshape(-1))
    for _ in range(T):
        theta -= lr * X.T @ (X @ theta - y) / len(y)
    assert torch.allclose(ntk_predictor(model, X, y, xt, steps=T, lr=lr), xt @ theta, atol=1e-10)


def test_linearised_predictions_of_a_wide_net_interpolate_and_match_the_model_wrapper():
    from profond.metrics.ntk import linearised_predictions, ntk_predictor

    net = exercise_net(2, 512, train_a=True, seed=3)
    phi = torch.linspace(0, math.pi, 6, dtype=F64)
    x = torch.stack([phi.cos(), phi.sin()], 1)
    y = torch.sin(2 * phi)
    assert torch.allclose(ntk_predictor(net, x, y, x), y, atol=1e-8)
    xt = torch.stack([(phi + 0.2).cos(), (phi + 0.2).sin()], 1)
    with torch.no_grad():
        f0, f0t = net(x), net(xt)
    k, kt = empirical_ntk(net, x), empirical_ntk(net, xt, x)
    for steps in (None, 40):
        assert torch.allclose(linearised_predictions(k, kt, f0, f0t, y, steps=steps),
                              ntk_predictor(net, x, y, xt, steps=steps), atol=1e-10)
    # many steps approach the t → ∞ limit
    assert torch.allclose(linearised_predictions(k, kt, f0, f0t, y, steps=20000),
                          linearised_predictions(k, kt, f0, f0t, y), atol=1e-6)
