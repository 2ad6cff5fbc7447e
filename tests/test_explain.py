"""profond.explain (issue 20, course §12.5): saliency, SmoothGrad, Integrated Gradients,
Grad-CAM, occlusion and Shapley values against known answers (linear models, CAM networks,
games whose Shapley values are known, the definition by orderings) and, when captum is
installed, against Captum's implementations of the same methods."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from profond import explain as E
from profond.explain.shapley import all_coalitions, sample_coalitions, shapley_kernel
from profond.registry import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")


def _cnn(seed: int = 0) -> nn.Module:
    """A random course CNN (fmnist-cnn: conv-BN-ReLU x 4, two max-pools, linear head) with
    random batch-norm statistics, in eval mode."""
    torch.manual_seed(seed)
    m = MODELS.build("fmnist-cnn", in_shape=(1, 16, 16), num_classes=5, width=6)
    for bn in m.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def cnn():
    return _cnn()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def linear():
    """f(x) = W flatten(x) + b on 1x4x4 images, 3 classes: every attribution is known."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def _w(linear, c):
    return linear[1].weight[c].detach().view(1, 4, 4)


# -- targets -----------------------------------------------------------------------------------
def test_target_defaults_to_the_prediction_and_checks_its_size(cnn, x):
    pred = cnn(x).argmax(1)
    assert torch.equal(E.resolve_target(cnn, x, None), pred)
    assert E.resolve_target(cnn, x, 2).tolist() == [2, 2, 2]
    assert E.resolve_target(cnn, x, torch.tensor([0, 1, 4])).tolist() == [0, 1, 4]
    with pytest.raises(ValueError, match="2 classes for a batch of 3"):
        E.resolve_target(cnn, x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="5 classes"):
        E.saliency(cnn, x, 5)
    assert torch.equal(E.saliency(cnn, x), E.saliency(cnn, x, pred))


# -- saliency, SmoothGrad ----------------------------------------------------------------------
def test_saliency_of_a_linear_model_is_abs_weight(linear):
    x = torch.randn(2, 1, 4, 4)
    s = E.saliency(linear, x, torch.tensor([0, 2]))
    assert torch.allclose(s[0], _w(linear, 0).abs()) and torch.allclose(s[1], _w(linear, 2).abs())
    signed = E.saliency(linear, x, 1, absolute=False)
    assert torch.allclose(signed[1], _w(linear, 1))


def test_saliency_is_the_input_gradient_of_the_class_score(x):
    net = _cnn()
    s = E.saliency(net, x, 3)
    assert all(p.grad is None for p in net.parameters())  # no gradient left on the weights
    xg = x[1:2].clone().requires_grad_(True)
    net(xg)[0, 3].backward()
    assert torch.allclose(s[1:2], xg.grad.abs(), atol=1e-7)


def test_smoothgrad(cnn, x, linear):
    # the gradient of a linear model is constant: noise changes nothing
    xl = torch.randn(2, 1, 4, 4)
    assert torch.allclose(E.smoothgrad(linear, xl, 1, noise_level=0.5), E.saliency(linear, xl, 1), atol=1e-6)
    # no noise: the saliency itself; seeded
    assert torch.allclose(E.smoothgrad(cnn, x, 0, noise_level=0.0, n_samples=3), E.saliency(cnn, x, 0), atol=1e-6)
    a, b = (E.smoothgrad(cnn, x, 0, n_samples=8, seed=s) for s in (0, 0))
    assert torch.equal(a, b)
    c = E.smoothgrad(cnn, x, 0, n_samples=8, seed=1)
    assert not torch.allclose(a, c)
    # the mean over noisy copies, each copy's map computed one at a time
    g = torch.Generator().manual_seed(5)
    eps = torch.randn((4, *x.shape), generator=g)
    sigma = 0.2 * (x.view(3, -1).max(1).values - x.view(3, -1).min(1).values).view(3, 1, 1, 1)
    manual = torch.stack([E.saliency(cnn, x + sigma * e, 2) for e in eps]).mean(0)
    assert torch.allclose(E.smoothgrad(cnn, x, 2, n_samples=4, noise_level=0.2, seed=5), manual, atol=1e-6)
    with pytest.raises(ValueError, match="n_samples"):
        E.smoothgrad(cnn, x, 0, n_samples=0)


# -- Integrated Gradients ----------------------------------------------------------------------
def test_quadrature_rules():
    for method in E.IG_METHODS:
        a, w = E.ig_quadrature(10, method)
        assert len(a) == len(w) == 10 and abs(float(w.sum()) - 1) < 1e-12
        assert 0 <= float(a.min()) and float(a.max()) <= 1
    a, w = E.ig_quadrature(11, "trapezoid")
    assert abs(float((w * a**2).sum()) - 1 / 3) == pytest.approx(1 / (6 * 100), rel=1e-9)  # h²/6 for α²
    a, w = E.ig_quadrature(4, "gausslegendre")
    assert float((w * a**7).sum()) == pytest.approx(1 / 8, rel=1e-12)  # exact up to degree 2n − 1
    with pytest.raises(ValueError, match="steps=1"):
        E.ig_quadrature(1, "trapezoid")
    with pytest.raises(ValueError, match="simpson"):
        E.ig_quadrature(8, "simpson")


def test_ig_of_a_linear_model_is_input_times_weight(linear):
    x, base = torch.randn(2, 1, 4, 4), torch.randn(1, 1, 4, 4)
    for method in E.IG_METHODS:
        ig = E.integrated_gradients(linear, x, 1, baseline=base, steps=5, method=method)
        assert torch.allclose(ig, (x - base) * _w(linear, 1), atol=1e-6), method
    ig = E.integrated_gradients(linear, x, 0, baseline=0.5, steps=3)
    assert torch.allclose(ig, (x - 0.5) * _w(linear, 0), atol=1e-6)


def _gaps(model, x, target, **kw):
    """Per image, and for the batch as a whole (Σ |error| / Σ |Δ|), the failure of
    completeness Σ_i IG_i = f_c(x) − f_c(0) of IG with options ``kw``."""
    t = E.resolve_target(model, x, target)
    ig = E.integrated_gradients(model, x, t, **kw)
    gap = E.completeness_gap(model, x, ig, t)
    with torch.no_grad():
        delta = (model(x) - model(torch.zeros_like(x))).gather(1, t.view(-1, 1)).squeeze(1).abs()
    return gap, float((gap * delta).sum() / delta.sum())


def test_ig_completeness_within_one_percent_at_the_default_steps(cnn):
    x = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    gap, whole = _gaps(cnn, x, None)  # default: 128-step trapezoid, the predicted class
    assert float(gap.median()) < 0.01 and whole < 0.01, (gap, whole)
    # the gap is the quadrature error: it falls with the number of steps (like 1/steps, the
    # integrand being piecewise constant for a ReLU / max-pool network)
    errs = [_gaps(cnn, x, 4, steps=s)[1] for s in (8, 32, 128)]
    assert errs[0] > 2 * errs[1] > 4 * errs[2], errs
    # and from another baseline
    ig = E.integrated_gradients(cnn, x[:4], 4, baseline=0.5)
    assert float(E.completeness_gap(cnn, x[:4], ig, 4, baseline=0.5).median()) < 0.01


# -- Grad-CAM ----------------------------------------------------------------------------------
class _CAMNet(nn.Module):
    """conv -> ReLU(inplace) -> global average pool -> linear: y_c = Σ_k w_ck mean(ReLU(A^k)) + b_c."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


def test_gradcam_of_a_cam_network_by_hand():
    torch.manual_seed(3)
    net = _CAMNet().eval()
    x = torch.randn(2, 1, 6, 6)
    a = net.conv(x).detach()  # A^k: the conv output, before the in-place ReLU
    z = 36
    for c in range(3):
        # ∂y_c/∂A^k_ij = w_ck 1[A^k_ij > 0] / Z, so α^c_k = w_ck · (fraction of A^k > 0) / Z
        alpha = net.fc.weight[c].detach().view(1, 4, 1, 1) * (a > 0).float().mean((2, 3), keepdim=True) / z
        want = (alpha * a).sum(1, keepdim=True)
        got = E.gradcam(net, x, c, layer="conv", relu=False)
        assert torch.allclose(got, want, atol=1e-6), c
        assert torch.allclose(E.gradcam(net, x, c, layer="conv"), want.clamp_min(0), atol=1e-6)
    # the hook left the model's output as it was
    assert torch.allclose(net(x), net.fc(torch.relu(a).mean((2, 3))), atol=1e-6)


def test_gradcam_shape_default_layer_and_bad_layers(cnn, x):
    assert E.conv_layers(cnn) == ["features.0", "features.3", "features.7", "features.10"]
    assert E.last_conv_layer(cnn) == "features.10"
    cam = E.gradcam(cnn, x)
    assert cam.shape == (3, 1, 16, 16) and (cam >= 0).all()
    assert torch.equal(cam, E.gradcam(cnn, x, layer="features.10"))
    assert E.gradcam(cnn, x, layer="features.10", upsample=False).shape == (3, 1, 8, 8)  # before the last pool
    for name, what in [("features.1", "is not a convolution layer"), ("head.2", "is not a convolution layer"),
                       ("features.99", "does not exist")]:
        with pytest.raises(ValueError, match=what) as e:
            E.gradcam(cnn, x, layer=name)
        assert "features.0, features.3, features.7, features.10" in str(e.value)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(256, 5))
    with pytest.raises(ValueError, match="no convolution layer"):
        E.gradcam(mlp, x)
    with pytest.raises(ValueError, match="none: this model has no nn.Conv2d"):
        E.gradcam(mlp, x, layer="1")


# -- occlusion ---------------------------------------------------------------------------------
def test_occlusion_of_a_linear_model(linear):
    x = torch.randn(2, 1, 4, 4)
    occ = E.occlusion(linear, x, 2, patch=1, stride=1)  # drop of f when pixel i -> 0: w_i x_i
    assert torch.allclose(occ, x * _w(linear, 2), atol=1e-6)
    # a 2x2 patch, stride 2: every pixel of a patch gets the patch's total w·x
    occ = E.occlusion(linear, x, 0, patch=2, stride=2, baseline=1.0)
    contrib = ((x - 1.0) * _w(linear, 0)).view(2, 1, 2, 2, 2, 2).sum((3, 5), keepdim=True)
    assert torch.allclose(occ, contrib.expand(2, 1, 2, 2, 2, 2).reshape(2, 1, 4, 4), atol=1e-5)
    # stride > patch: the pixels no patch covers get 0
    occ = E.occlusion(linear, x, 1, patch=1, stride=2)
    want = x * _w(linear, 1)
    assert torch.allclose(occ[..., ::2, ::2], want[..., ::2, ::2], atol=1e-6)
    assert (occ[..., 1::2, :] == 0).all() and (occ[..., :, 1::2] == 0).all()
    with pytest.raises(ValueError, match="larger than"):
        E.occlusion(linear, x, 0, patch=5)


# -- Shapley values ----------------------------------------------------------------------------
def test_grid_groups():
    g = E.grid_groups(7, 9, 2, 3)
    assert g.shape == (7, 9) and sorted(g.unique().tolist()) == list(range(6))
    assert g[0, 0] == 0 and g[0, -1] == 2 and g[-1, 0] == 3 and g[-1, -1] == 5
    counts = torch.bincount(g.flatten()).tolist()
    assert max(counts) - min(counts) <= 7  # as even as 7 rows and 9 columns allow
    with pytest.raises(ValueError, match="does not fit"):
        E.grid_groups(4, 4, 5, 1)


def _by_orderings(values: dict[int, float], d: int) -> np.ndarray:
    """The Shapley values by their other definition: the mean marginal contribution of each
    player over the d! orderings of the players."""
    phi = np.zeros(d)
    for order in itertools.permutations(range(d)):
        mask = 0
        for i in order:
            phi[i] += values[mask | (1 << i)] - values[mask]
            mask |= 1 << i
    return phi / math.factorial(d)


def _table_game(values: np.ndarray):
    def v(masks):
        idx = (masks.long() << torch.arange(masks.shape[1])).sum(1)
        return torch.from_numpy(values[idx.numpy()])

    return v


def test_exact_shapley_against_known_games():
    # majority of 3: each player 1/3; unanimity of {0, 2} among 4: 1/2, 0, 1/2, 0
    maj = lambda m: (m.sum(1) >= 2).double()  # noqa: E731
    assert np.allclose(E.shapley_exact(maj, 3).numpy(), [1 / 3] * 3)
    una = lambda m: (m[:, 0] & m[:, 2]).double()  # noqa: E731
    assert np.allclose(E.shapley_exact(una, 4).numpy(), [0.5, 0, 0.5, 0])
    # a random game of 6 players: the subset formula equals the mean over the 720 orderings
    rng = np.random.default_rng(0)
    values = rng.normal(size=2 ** 6)
    phi = E.shapley_exact(_table_game(values), 6).numpy()
    assert np.allclose(phi, _by_orderings(dict(enumerate(values)), 6), atol=1e-12)
    assert phi.sum() == pytest.approx(values[-1] - values[0])  # efficiency
    with pytest.raises(ValueError, match="1 to 12"):
        E.shapley_exact(maj, 13)
    assert all_coalitions(3).tolist()[5] == [True, False, True]


def test_exact_shapley_of_images(cnn, x, linear):
    # a linear model: the value of a group is Σ_{i in group} w_i (x_i − baseline)
    xl = torch.randn(1, 1, 4, 4)
    g = E.grid_groups(4, 4, 2, 2)
    phi = E.shapley_image(linear, xl, g, 1, baseline=0.25)[0]
    contrib = ((xl - 0.25) * _w(linear, 1))[0, 0]
    assert torch.allclose(phi.float(), torch.stack([contrib[g == k].sum() for k in range(4)]), atol=1e-5)
    # a CNN: efficiency, Σ φ = f(x) − f(baseline), exactly
    g = E.grid_groups(16, 16, 3, 4)  # 12 groups, 4096 coalitions
    phi = E.shapley_image(cnn, x[:1], g, 2)[0]
    with torch.no_grad():
        delta = float(cnn(x[:1])[0, 2] - cnn(torch.zeros_like(x[:1]))[0, 2])
    assert float(phi.sum()) == pytest.approx(delta, rel=1e-4, abs=1e-6)
    m = E.group_map(phi, g)
    assert m.shape == (16, 16) and float(m[0, 0]) == pytest.approx(float(phi[0]))


def test_kernel_shap_sampling_follows_the_shapley_kernel():
    d = 7
    z = sample_coalitions(d, 40000, seed=0)
    assert z.shape == (40000, d)
    sizes = z[:20000].sum(1).numpy()
    assert torch.equal(z[20000:], ~z[:20000])  # paired with the complements
    k = np.arange(1, d)
    p = np.array([math.comb(d, s) * shapley_kernel(d, s) for s in k])
    assert np.allclose(p, (d - 1) / (k * (d - k)))
    freq = np.bincount(sizes, minlength=d + 1)[1:d] / len(sizes)
    assert np.allclose(freq, p / p.sum(), atol=0.01)
    assert torch.equal(sample_coalitions(d, 10, seed=3), sample_coalitions(d, 10, seed=3))


def test_kernel_shap_converges_to_the_exact_values():
    rng = np.random.default_rng(1)
    d = 8
    values = rng.normal(size=2 ** d)
    game = _table_game(values)
    exact = E.shapley_exact(game, d).numpy()
    err = {n: np.abs(E.kernel_shap(game, d, n, seed=0).numpy() - exact).max() for n in (64, 1024, 32768)}
    assert err[64] > err[1024] > err[32768], err
    assert err[32768] < 0.05 * np.abs(exact).max(), (err, exact)
    est = E.kernel_shap(game, d, 64, seed=0).numpy()
    assert est.sum() == pytest.approx(values[-1] - values[0])  # efficiency holds at any sample size
    # an additive game is fitted exactly from a few coalitions
    w = rng.normal(size=d)
    additive = lambda m: 0.3 + m.double() @ torch.from_numpy(w)  # noqa: E731
    assert np.allclose(E.kernel_shap(additive, d, 16).numpy(), w, atol=1e-10)


def test_kernel_shap_of_an_image_approaches_exact_shapley(cnn, x):
    g = E.grid_groups(16, 16, 3, 3)
    exact = E.shapley_image(cnn, x[1:2], g, 0)[0]
    e_small = (E.shapley_image(cnn, x[1:2], g, 0, n_samples=32)[0] - exact).abs().max()
    e_big = (E.shapley_image(cnn, x[1:2], g, 0, n_samples=8192)[0] - exact).abs().max()
    assert e_big < e_small and e_big < 0.05 * exact.abs().max(), (e_small, e_big, exact)


# -- oracles: captum ---------------------------------------------------------------------------
def test_integrated_gradients_equals_captum(cnn, x):
    attr = pytest.importorskip("captum.attr")
    t = E.resolve_target(cnn, x, None)
    for method in ("left", "right", "middle", "gausslegendre"):
        ours = E.integrated_gradients(cnn, x, t, steps=20, method=method)
        name = method if method == "gausslegendre" else f"riemann_{method}"
        theirs = attr.IntegratedGradients(cnn).attribute(x, target=t, n_steps=20, method=name)
        assert torch.allclose(ours, theirs, atol=1e-7, rtol=1e-4), method
    # captum's "riemann_trapezoid" weights are (1/n)·[1/2, 1, ..., 1, 1/2], summing to (n − 1)/n;
    # the trapezoid rule on n points of spacing 1/(n − 1) is the same sum times n/(n − 1)
    ours = E.integrated_gradients(cnn, x, t, steps=20)
    theirs = attr.IntegratedGradients(cnn).attribute(x, target=t, n_steps=20, method="riemann_trapezoid")
    assert torch.allclose(ours, theirs * 20 / 19, atol=1e-7, rtol=1e-4)


def test_gradcam_equals_captum(cnn, x):
    attr = pytest.importorskip("captum.attr")
    t = torch.tensor([0, 3, 4])
    modules = dict(cnn.named_modules())
    for name in E.conv_layers(cnn):
        theirs = attr.LayerGradCam(cnn, modules[name]).attribute(x, target=t, relu_attributions=True)
        theirs = attr.LayerAttribution.interpolate(theirs, (16, 16), interpolate_mode="bilinear")
        assert torch.allclose(E.gradcam(cnn, x, t, layer=name), theirs, atol=1e-7, rtol=1e-4), name


def test_saliency_and_occlusion_equal_captum(cnn, x):
    attr = pytest.importorskip("captum.attr")
    t = torch.tensor([1, 1, 2])
    assert torch.allclose(E.saliency(cnn, x, t), attr.Saliency(cnn).attribute(x.clone().requires_grad_(), target=t))
    theirs = attr.Occlusion(cnn).attribute(x, target=t, sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2),
                                           baselines=0.0)
    assert torch.allclose(E.occlusion(cnn, x, t, patch=3, stride=2), theirs, atol=1e-6)


# -- token attributions of a text classifier ---------------------------------------------------
class _BagOfEmbeddings(nn.Module):
    """f(tokens) = W mean_t(e_t) + b: ∂f_c/∂e_t = W_c / T for every token."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(12, 5)
        self.fc = nn.Linear(5, 3)

    def forward(self, tokens, lengths=None):
        return self.fc(self.embedding(tokens).mean(1))


def test_token_attributions_of_a_bag_of_embeddings():
    from profond.explain.text import embedding_scores, token_integrated_gradients, token_saliency

    torch.manual_seed(4)
    net = _BagOfEmbeddings().eval()
    tokens = torch.tensor([3, 1, 4, 1, 5])
    w = net.fc.weight[2].detach()
    assert torch.allclose(token_saliency(net, tokens, 2), torch.full((5,), float(w.norm() / 5)), atol=1e-6)
    e = net.embedding(tokens).detach()
    assert torch.allclose(token_integrated_gradients(net, tokens, 2, steps=4), e @ w / 5, atol=1e-6)
    assert torch.allclose(embedding_scores(net, tokens, zero=True), net.fc.bias.detach(), atol=1e-6)


def test_token_ig_is_complete_on_the_course_rnn_and_attention_classifiers():
    from profond.explain.text import embedding_layer, embedding_scores, token_integrated_gradients

    torch.manual_seed(5)
    tokens = torch.randint(1, 30, (9,))
    for name, kw in [("rnn-classifier", dict(embed_dim=8, hidden_size=8)),
                     ("attn-classifier", dict(d_model=8, num_heads=2, num_layers=1, max_len=16))]:
        net = MODELS.build(name, vocab_size=30, num_classes=4, **kw).eval()
        assert embedding_layer(net) == "embedding"
        ig = token_integrated_gradients(net, tokens, 1)
        delta = float(embedding_scores(net, tokens)[1] - embedding_scores(net, tokens, zero=True)[1])
        assert float(ig.sum()) == pytest.approx(delta, rel=0.01, abs=1e-4), name
    with pytest.raises(ValueError, match="no nn.Embedding"):
        embedding_layer(nn.Linear(3, 3))
