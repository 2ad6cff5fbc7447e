"""The generative evaluation kit (profond.metrics.generative / .features).

Metric code is cross-checked against torchmetrics (FID, KID, IS) and closed forms on
random features; the shipped Fashion-MNIST feature net is checked by sanity orderings that
a broken net or a broken metric would fail. To stay within ~40 s on 2 CPU cores the data
tests use 2,000 test and 2,000 train images (degradations: 1,000), not the customary
10,000: the orderings tested are far apart at that size (numbers in the docstrings).
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from torch import nn

from profond.errors import CheckpointError, ConfigError, ProfondError
from profond.metrics import features as FN
from profond.metrics.generative import (
    class_histogram,
    evaluate_samples,
    extract,
    fid,
    frechet_distance,
    inception_score,
    kid,
    load_feature_net,
    precision_recall,
)

from .conftest import needs_fmnist

N_REF = 2000  # real test / train images for the data tests
N_DEG = 1000  # degraded images per level


# ----------------------------------------------------------------------------------------
# metrics on hand-made features


class _Identity(nn.Module):
    """A 'feature extractor' for torchmetrics that returns its input (the features)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def _two_sets(d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(400, d, generator=g, dtype=torch.float64)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    b = torch.randn(300, d, generator=g, dtype=torch.float64) @ (torch.eye(d, dtype=torch.float64) + mix) + 0.3
    return a, b


TORCHMETRICS_WARNINGS = pytest.mark.filterwarnings("ignore::UserWarning:torchmetrics")


@TORCHMETRICS_WARNINGS
def test_fid_matches_torchmetrics_and_closed_form():
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _two_sets()
    m = FrechetInceptionDistance(feature=_Identity(a.shape[1]))
    m.update(a, real=True)
    m.update(b, real=False)
    ours = fid(a, b)
    assert ours == pytest.approx(float(m.compute()), rel=1e-5)
    assert fid(b, a) == pytest.approx(ours, rel=1e-9)  # symmetric
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)
    assert fid(a.numpy(), b.numpy()) == pytest.approx(ours, rel=1e-12)  # arrays work too
    # diagonal Gaussians: |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    s1, s2 = torch.tensor([1.0, 4.0, 0.0]), torch.tensor([4.0, 1.0, 9.0])  # one singular
    expected = 5.0 + (1 + 1 + 9)
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected, rel=1e-12)
    # rotation-invariant: the same Gaussians in a rotated basis
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    rot = frechet_distance(q @ mu1.double(), q @ torch.diag(s1).double() @ q.T,
                           q @ mu2.double(), q @ torch.diag(s2).double() @ q.T)
    assert rot == pytest.approx(expected, rel=1e-6)  # sqrt of round-off around the zero eigenvalue


@TORCHMETRICS_WARNINGS
def test_kid_matches_torchmetrics_and_is_unbiased():
    from torchmetrics.image.kid import KernelInceptionDistance

    a, b = _two_sets()
    a = a[:300]
    # subset_size = N: every subset is the whole set, so the value is exact, std 0
    m = KernelInceptionDistance(feature=_Identity(a.shape[1]), subsets=2, subset_size=300)
    m.update(a, real=True)
    m.update(b, real=False)
    ref_mean, _ = m.compute()
    mean, std = kid(a, b, subsets=2, subset_size=300)
    assert mean == pytest.approx(float(ref_mean), rel=1e-5)
    assert std == pytest.approx(0.0, abs=1e-12)
    # subset_size is clipped to min(N); seeded subsets are deterministic and order-free
    assert kid(a, b, subsets=2, subset_size=10_000)[0] == pytest.approx(mean, rel=1e-12)
    sub = kid(a, b, subsets=20, subset_size=100, seed=3)
    assert sub == kid(a, b, subsets=20, subset_size=100, seed=3)
    assert sub[0] == pytest.approx(mean, rel=0.25) and sub[1] > 0
    # same distribution: the unbiased estimate is ~0 (can be negative), far below a vs b
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(300, 16, generator=g), torch.randn(300, 16, generator=g)
    same = kid(x, y, subsets=10, subset_size=300)[0]
    assert abs(same) < 0.05 * mean


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchmetrics' buffer note, std of 1 split
def test_inception_score_closed_forms_and_torchmetrics():
    from torchmetrics.image.inception import InceptionScore

    eye = torch.eye(10, dtype=torch.float64)
    confident_uniform = eye.repeat(50, 1)  # 500 one-hot rows, 50 per class
    assert inception_score(confident_uniform, splits=5) == pytest.approx((10.0, 0.0), abs=1e-9)
    one_class = eye[[3]].repeat(200, 1)
    assert inception_score(one_class, splits=4)[0] == pytest.approx(1.0, abs=1e-12)
    uncertain = torch.full((100, 10), 0.1, dtype=torch.float64)
    assert inception_score(uncertain, splits=1)[0] == pytest.approx(1.0, abs=1e-12)
    # half the images are class 0, half class 1, all confident: exp(log 2) = 2
    two = torch.cat([eye[[0]].repeat(50, 1), eye[[1]].repeat(50, 1)])
    assert inception_score(two, splits=1)[0] == pytest.approx(2.0, abs=1e-12)

    logits = torch.randn(300, 10, generator=torch.Generator().manual_seed(0)) * 3
    m = InceptionScore(feature=_Identity(10), splits=1)
    m.update(logits)
    ref_mean, _ = m.compute()
    assert inception_score(logits.double().softmax(1), splits=1)[0] == pytest.approx(float(ref_mean), rel=1e-5)
    with pytest.raises(ProfondError, match="softmax"):
        inception_score(logits)  # logits, not probabilities
    with pytest.raises(ConfigError, match="splits"):
        inception_score(logits.softmax(1), splits=301)


def test_precision_recall_on_synthetic_manifolds():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(500, 8, generator=g, dtype=torch.float64)
    same = torch.randn(500, 8, generator=g, dtype=torch.float64)
    p, r = precision_recall(real, same, k=3)
    assert p > 0.6 and r > 0.6
    far = same + 20.0
    assert precision_recall(real, far) == (0.0, 0.0)
    # mode collapse: 500 samples jittered around 5 real points: high precision, low recall
    modes = real[:5].repeat(100, 1) + 0.01 * torch.randn(500, 8, generator=g, dtype=torch.float64)
    p, r = precision_recall(real, modes, k=3)
    assert p > 0.9 and r < 0.05
    # a single point repeated: distance to its own k-NN is 0
    assert precision_recall(real, real[:1].repeat(10, 1), k=3)[1] == pytest.approx(0.0, abs=0.01)
    with pytest.raises(ProfondError, match="more than 3"):
        precision_recall(real, same[:3])


def test_class_histogram_flags_collapse():
    names = [f"c{i}" for i in range(10)]
    eye = torch.eye(10, dtype=torch.float64)
    balanced = class_histogram(eye.repeat(30, 1), names)
    assert balanced["counts"] == {n: 30 for n in names}
    assert balanced["normalised_entropy"] == pytest.approx(1.0)
    assert balanced["entropy"] == pytest.approx(math.log(10))
    assert not balanced["collapsed"] and balanced["missing"] == []
    single = class_histogram(eye[[7]].repeat(100, 1), names)
    assert single["collapsed"] and single["max_class"] == "c7" and single["entropy"] == 0.0
    assert single["missing"] == [n for n in names if n != "c7"]
    # 7 of 10 classes, evenly: missing classes listed, not a collapse
    seven = class_histogram(eye[:7].repeat(20, 1), names)
    assert seven["missing"] == ["c7", "c8", "c9"] and not seven["collapsed"]
    # 60% in one class: collapse by the max-fraction rule
    skew = class_histogram(torch.cat([eye[[0]].repeat(60, 1), eye[1:5].repeat(10, 1)]))
    assert skew["collapsed"] and skew["classes"][0] == "0"
    json.dumps(single)  # JSON-able
    with pytest.raises(ProfondError, match="names"):
        class_histogram(eye, names[:3])


def test_metric_input_errors():
    a, b = _two_sets()
    with pytest.raises(ProfondError, match="different dimensions"):
        fid(a, b[:, :5])
    with pytest.raises(ProfondError, match="shape"):
        fid(a[0], b)
    with pytest.raises(ProfondError, match="NaN"):
        kid(a, torch.full_like(b, float("nan")))
    with pytest.raises(ProfondError, match="at least 2"):
        fid(a[:1], b)


# ----------------------------------------------------------------------------------------
# the shipped feature net


@pytest.fixture(scope="module")
def net():
    return load_feature_net("fmnist")


def test_shipped_weights_record():
    weights, record = FN.asset_paths("fmnist")
    info = json.loads(record.read_text())
    data = weights.read_bytes()
    assert len(data) == info["bytes"] < 2_000_000
    assert info["sha256"] == FN.sha256_file(weights)
    assert info["command"] == "python scripts/train_feature_net.py"
    assert info["test_accuracy"] >= 0.93
    assert info["data"]["dataset"] == "fashion-mnist" and info["data"]["train_examples"] == 60_000
    assert info["feature_dim"] == 128 and info["num_classes"] == 10


def test_feature_net_interface(net):
    x = torch.rand(6, 1, 28, 28)
    f, logits = net(x)
    assert f.shape == (6, 128) and logits.shape == (6, 10)
    assert not net.training
    net.train()  # a metric network never leaves eval mode
    assert not net.training and not net.model.training
    # other sizes are resized bilinearly; uint8 and (N, H, W) are accepted
    f32, _ = net(torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear"))
    assert f32.shape == (6, 128)
    assert torch.allclose(net((x * 255).round().to(torch.uint8))[0], net((x * 255).round() / 255)[0], atol=1e-5)
    assert torch.equal(net(x[:, 0])[0], f)
    feats, probs = extract(net, x, batch_size=4, progress=True)
    assert feats.dtype == torch.float64 and probs.dtype == torch.float64
    assert torch.allclose(feats, f.double(), atol=1e-5)
    assert torch.allclose(probs.sum(1), torch.ones(6, dtype=torch.float64))
    with pytest.raises(ProfondError, match="3 channels.*grayscale"):
        net(torch.rand(2, 3, 28, 28))
    with pytest.raises(ProfondError, match=r"\[0, 1\]"):
        extract(net, x * 2 - 1)
    with pytest.raises(ConfigError, match="unknown feature net 'fmnsit'.*fmnist"):
        load_feature_net("fmnsit")
    assert next(load_feature_net(device="auto").parameters()).device.type in ("cpu", "cuda")


def test_hash_mismatch_is_a_checkpoint_error(tmp_path, monkeypatch):
    weights, record = FN.asset_paths("fmnist")
    shutil.copy(weights, tmp_path / weights.name)
    shutil.copy(record, tmp_path / record.name)
    monkeypatch.setattr(FN, "ASSET_DIR", tmp_path)
    load_feature_net("fmnist")  # the copies load
    data = bytearray((tmp_path / weights.name).read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last weight
    (tmp_path / weights.name).write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        load_feature_net("fmnist")
    msg = str(e.value)
    assert "fmnist_features.safetensors" in msg and "checksum" in msg
    assert "python scripts/train_feature_net.py" in msg
    (tmp_path / weights.name).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_feature_net("fmnist")


def test_inception_features_missing_is_a_clear_error():
    pytest.importorskip("torchmetrics")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torch-fidelity is installed here; the error path is not reachable")
    with pytest.raises(ProfondError, match="torch-fidelity.*--features fmnist"):
        load_feature_net("inception")
    x = torch.rand(4, 1, 28, 28)
    with pytest.raises(ProfondError, match="torch-fidelity"):
        evaluate_samples(x, x, features="inception")


def test_inception_preprocessing_with_a_stub_network():
    """Grayscale [0, 1] images reach InceptionV3 as uint8 RGB 299x299 (torch-fidelity's input)."""
    seen = {}

    class Stub(nn.Module):
        def _torch_fidelity_forward(self, x):
            seen["x"] = x
            return torch.ones(len(x), 2048), torch.zeros(len(x), 1008)

    net = FN.InceptionFeatureNet.__new__(FN.InceptionFeatureNet)
    nn.Module.__init__(net)
    net.net = Stub()
    f, logits = net(torch.full((2, 1, 28, 28), 0.5))
    x = seen["x"]
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 299, 299) and int(x.float().mean().round()) == 128
    assert f.shape == (2, 2048) and logits.shape == (2, 1008)


# ----------------------------------------------------------------------------------------
# sanity orderings on Fashion-MNIST


@pytest.fixture(scope="module")
def fm(net):
    """Extracted features of 2,000 test and 2,000 train images, and the images."""
    from profond.data import load_dataset

    data = load_dataset("fashion-mnist")
    test_x = data.test_x[:N_REF].float() / 255.0
    train_x = data.train_x[:N_REF].float() / 255.0
    f_test, p_test = extract(net, test_x)
    f_train, p_train = extract(net, train_x)
    return {"test_x": test_x, "test_y": data.test_y[:N_REF], "f_test": f_test, "p_test": p_test,
            "f_train": f_train, "p_train": p_train, "classes": list(data.classes)}


@pytest.fixture(scope="module")
def degraded(net, fm):
    """Features of the last 1,000 of the 2,000 test images, degraded: Gaussian noise
    sigma 0.1 / 0.3 (clipped to [0, 1]), pure uniform noise, Gaussian blur sigma 0.5 / 1 / 2."""
    import kornia

    x = fm["test_x"][N_REF - N_DEG:]
    g = torch.Generator().manual_seed(0)
    images = {f"noise{s}": (x + s * torch.randn(x.shape, generator=g)).clamp(0, 1) for s in (0.1, 0.3)}
    images["pure"] = torch.rand(x.shape, generator=g)
    for s in (0.5, 1.0, 2.0):
        images[f"blur{s}"] = kornia.filters.gaussian_blur2d(x, (13, 13), (s, s))
    return {k: extract(net, v)[0] for k, v in images.items()}


@needs_fmnist
def test_real_data_accuracy_and_inception_score(net, fm):
    acc = float((fm["p_test"].argmax(1) == fm["test_y"]).double().mean())
    assert acc > 0.93  # measured 0.9475 on the first 2,000 (0.9410 on all 10,000)
    # bound = 10 classes; measured 8.66 +- 0.07 on these 2,000 images (10k: 8.75 +- 0.06)
    is_mean, is_std = inception_score(fm["p_test"], splits=10)
    assert 7.5 < is_mean <= 10.0 and is_std < 0.5
    one = fm["test_x"][:1].repeat(500, 1, 1, 1)
    assert inception_score(extract(net, one)[1], splits=10)[0] == pytest.approx(1.0, abs=1e-6)


@needs_fmnist
def test_fid_orders_noise_and_blur(fm, degraded):
    """FID(train 2k, test 2k) is small and far below every degradation; more noise / blur,
    higher FID (1,000 degraded test images against the 2,000 clean ones).

    Measured: base 0.78; noise sigma 0.1 / 0.3 / pure: 39.0 / 87.2 / 116.0; blur sigma
    0.5 / 1 / 2: 3.69 / 42.7 / 93.7 (10k vs 10k: base 0.16, noise 38.3 / 87.2 / 116.9,
    blur 3.56 / 43.0 / 94.1).
    """
    base = fid(fm["f_train"], fm["f_test"])
    f = {k: fid(fm["f_test"], v) for k, v in degraded.items()}
    assert base < 0.25 * f["noise0.1"] < f["noise0.1"] < f["noise0.3"] < f["pure"]
    assert base < 0.5 * f["blur0.5"] < f["blur0.5"] < f["blur1.0"] < f["blur2.0"]


@needs_fmnist
def test_fid_kid_are_order_free_and_kid_orders(fm, degraded):
    perm = torch.randperm(N_REF, generator=torch.Generator().manual_seed(1))
    a, b = fm["f_train"], fm["f_test"]
    # equal up to float64 round-off (summation order)
    assert fid(a[perm], b) == pytest.approx(fid(a, b), rel=1e-6)
    assert fid(a, b[perm]) == pytest.approx(fid(a, b), rel=1e-6)
    # KID's seeded subsets: with full-size subsets the value is order-free; with random
    # subsets only its distribution is (the permuted mean lies within the subset spread)
    full = kid(a, b, subsets=1, subset_size=N_REF)[0]
    assert kid(a[perm], b[perm], subsets=1, subset_size=N_REF)[0] == pytest.approx(full, rel=1e-6)
    same, spread = kid(a, b, subsets=10, subset_size=1000)
    assert abs(kid(a[perm], b, subsets=10, subset_size=1000)[0] - same) < 3 * spread
    # measured: train vs test 0.0009 +- 0.0039, test vs noise sigma 0.3: 2.26 +- 0.02
    assert same < 0.1 * kid(b, degraded["noise0.3"], subsets=10, subset_size=1000)[0]


@needs_fmnist
def test_histogram_and_precision_recall_on_real_data(net, fm, degraded):
    hist = class_histogram(fm["p_test"], fm["classes"])
    assert not hist["collapsed"] and hist["missing"] == [] and hist["normalised_entropy"] > 0.95
    trousers = fm["test_x"][fm["test_y"] == 1]
    single = class_histogram(extract(net, trousers)[1], fm["classes"])
    assert single["collapsed"] and single["max_class"] == "Trouser" and single["max_fraction"] > 0.9
    p, r = precision_recall(fm["f_train"], fm["f_test"])
    assert p > 0.75 and r > 0.75  # measured 0.85 / 0.86 (10k: 0.84 / 0.84)
    # pure noise: recall 0; precision 0.245, not 0: noise lands in a tight cluster inside the
    # k-NN balls of a few textured real images (0.98 against 10k real; see precision_recall)
    p, r = precision_recall(fm["f_test"], degraded["pure"])
    assert r < 0.01 and p < 0.3
    # heavy blur (sigma 2) loses both: measured 0.23 / 0.0
    p, r = precision_recall(fm["f_test"], degraded["blur2.0"])
    assert r < 0.01 and p < 0.3


@needs_fmnist
def test_evaluate_samples_end_to_end(fm):
    real, fake = fm["test_x"][:300], fm["test_x"][300:600]
    report = evaluate_samples(fake, real, kid_subsets=5)
    assert set(report) >= {"fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall",
                           "class_histogram", "n_fake", "n_real", "features"}
    assert report["n_fake"] == report["n_real"] == 300 and report["features"] == "fmnist"
    assert report["class_histogram"]["classes"] == fm["classes"]
    assert 0 <= report["precision"] <= 1 and report["is_mean"] > 5
    json.dumps(report)
    collapsed = evaluate_samples(fm["test_x"][:1].repeat(300, 1, 1, 1), real, kid_subsets=5)
    assert collapsed["fid"] > 10 * report["fid"] and collapsed["recall"] < 0.05
    assert collapsed["class_histogram"]["collapsed"] and collapsed["is_mean"] == pytest.approx(1.0, abs=1e-6)
