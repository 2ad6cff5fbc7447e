"""Models of chapters 1 and 4 and the layers they are made of (profond.nn, profond.models)."""

from __future__ import annotations

import inspect
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

from profond.errors import ConfigError
from profond.models.cnn import BasicBlock
from profond.nn import (
    ACTIVATIONS,
    SeparableConv2d,
    activation,
    conv_bn_act,
    count_parameters,
    init_weights,
    norm_layer,
    parameter_table,
    separable_ratio,
)
from profond.registry import MODELS

OUR_MODELS = ["mlp", "lenet5", "vgg", "course-cnn", "fmnist-cnn", "resnet", "resnet8", "resnet20"]
SHAPES = [(1, 28, 28), (3, 32, 32)]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ----------------------------------------------------------------------------------------
# registry contract


@pytest.mark.parametrize("name", OUR_MODELS)
def test_builder_signature_is_fully_typed_and_defaulted(name):
    fn = MODELS.get(name)
    params = inspect.signature(fn).parameters
    assert list(params)[:2] == ["in_shape", "num_classes"]
    for p in params.values():
        assert p.kind is p.POSITIONAL_OR_KEYWORD, f"{name}: no *args/**kwargs catch-all"
        assert p.default is not p.empty, f"{name}.{p.name} needs a default"
        assert p.annotation is not p.empty, f"{name}.{p.name} needs a type annotation"
    assert params["in_shape"].default == (1, 28, 28)
    assert params["num_classes"].default == 10


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", OUR_MODELS)
def test_every_model_builds_outputs_logits_and_backprops(name, shape):
    model = MODELS.build(name, in_shape=list(shape), num_classes=7)  # YAML gives lists
    x = torch.randn(3, *shape)
    y = model(x)
    assert y.shape == (3, 7) and y.dtype == torch.float32
    y.logsumexp(1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert any(p.grad.abs().sum() > 0 for p in model.parameters())


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError) as e:
        MODELS.build("mlp", foo=1)
    msg = str(e.value)
    assert "foo" in msg and "widths" in msg and "activation" in msg and "init" in msg


@pytest.mark.parametrize("name", ["mlp", "lenet5", "vgg"])
def test_unknown_activation_is_a_config_error(name):
    with pytest.raises(ConfigError) as e:
        MODELS.build(name, activation="swish")
    assert "activation" in str(e.value)
    for valid in ACTIVATIONS:
        assert valid in str(e.value)


@pytest.mark.parametrize(
    "name, kwargs, word",
    [
        ("mlp", {"widths": [256, -3]}, "widths"),
        ("mlp", {"widths": 256}, "widths"),
        ("mlp", {"dropout": 1.5}, "dropout"),
        ("mlp", {"init": "orthogonal"}, "xavier_uniform"),
        ("mlp", {"in_shape": [28, 28]}, "in_shape"),
        ("mlp", {"num_classes": 0}, "num_classes"),
        ("lenet5", {"pool": "median"}, "pool"),
        ("lenet5", {"in_shape": [1, 8, 8]}, "in_shape"),
        ("vgg", {"stages": [[32], []]}, "stages"),
        ("vgg", {"in_shape": [1, 4, 4]}, "in_shape"),
        ("vgg", {"head": -1}, "head"),
        ("course-cnn", {"in_shape": [3, 7, 7]}, "in_shape"),
        ("fmnist-cnn", {"width": 0}, "width"),
        ("fmnist-cnn", {"separable": "yes"}, "separable"),
        ("resnet", {"depth": 18}, "6n+2"),
        ("resnet", {"depth": 2}, "6n+2"),
    ],
)
def test_bad_values_are_config_errors(name, kwargs, word):
    with pytest.raises(ConfigError) as e:
        MODELS.build(name, **kwargs)
    assert word in str(e.value)


# ----------------------------------------------------------------------------------------
# MLP (course §1.2, §1.5, §1.6)


def test_course_mlp_has_235146_parameters():
    model = MODELS.build("mlp")
    # §1.2.2: sum over layers of n_l (n_{l-1} + 1) for (784, 256, 128, 10)
    sizes = [784, 256, 128, 10]
    by_formula = sum(n_out * (n_in + 1) for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))
    assert count_parameters(model) == by_formula == 235_146
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(784, 256), (256, 128), (128, 10)]


def test_mlp_batchnorm_dropout_order():
    model = MODELS.build("mlp", widths=[32], batchnorm=True, dropout=0.2, activation="gelu")
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.GELU, nn.Dropout]
    assert model.features[3].p == 0.2


def test_parameter_table_and_trainable_count():
    model = MODELS.build("mlp", widths=[16])
    table = parameter_table(model)
    assert [row[0] for row in table] == [
        "features.0.weight",
        "features.0.bias",
        "head.weight",
        "head.bias",
    ]
    assert table[0][1] == (16, 784) and table[0][2] == 16 * 784
    assert sum(row[2] for row in table) == count_parameters(model)
    model.head.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 16 * 784 + 16


# ----------------------------------------------------------------------------------------
# layers


def test_activation_factory_names():
    expected = {
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "leaky_relu": nn.LeakyReLU,
        "prelu": nn.PReLU,
        "elu": nn.ELU,
        "gelu": nn.GELU,
    }
    assert set(ACTIVATIONS) == set(expected)
    for name, cls in expected.items():
        assert type(activation(name)) is cls
    assert activation("prelu") is not activation("prelu")  # fresh modules (own parameters)
    assert type(activation("Leaky-ReLU")) is nn.LeakyReLU
    with pytest.raises(ConfigError, match="sigmoid"):
        activation("softmax")


def test_norm_factory():
    assert isinstance(norm_layer("batch", 8), nn.BatchNorm2d)
    assert isinstance(norm_layer("batch", 8, dims=1), nn.BatchNorm1d)
    assert isinstance(norm_layer("layer", 8, dims=1), nn.LayerNorm)
    gn = norm_layer("group", 12)
    assert isinstance(gn, nn.GroupNorm) and 12 % gn.num_groups == 0
    assert isinstance(norm_layer("none", 8), nn.Identity)
    with pytest.raises(ConfigError, match="batch"):
        norm_layer("weird", 8)


def test_conv_bn_act_drops_bias_before_norm():
    block = conv_bn_act(3, 8, 3)
    assert block[0].bias is None and isinstance(block[1], nn.BatchNorm2d)
    assert conv_bn_act(3, 8, 3, norm="none")[0].bias is not None
    assert conv_bn_act(3, 8, 3)(torch.randn(2, 3, 9, 9)).shape == (2, 8, 9, 9)


@pytest.mark.parametrize("cin, cout, k", [(32, 256, 3), (16, 64, 5), (3, 7, 7), (64, 64, 1)])
def test_separable_conv_ratio_is_equation_4_10(cin, cout, k):
    """§4.9: (C_in k² + C_in C_out) / (C_in C_out k²) = 1/C_out + 1/k², counting weights."""
    sep = SeparableConv2d(cin, cout, k)
    std = nn.Conv2d(cin, cout, k, padding=k // 2)
    assert sep.depthwise.groups == cin

    def weights(m):
        return sum(p.numel() for n, p in m.named_parameters() if not n.endswith("bias"))

    ratio = Fraction(weights(sep), weights(std))
    assert ratio == Fraction(1, cout) + Fraction(1, k * k)
    assert float(ratio) == pytest.approx(separable_ratio(cout, k))
    x = torch.randn(2, cin, 11, 11)
    assert sep(x).shape == std(x).shape


def test_separable_course_example_reduction_8_to_9x():
    assert 8 < 1 / separable_ratio(256, 3) < 9


@pytest.mark.parametrize("name", ["vgg", "course-cnn", "fmnist-cnn", "resnet8"])
def test_separable_option_shrinks_models(name):
    std = MODELS.build(name)
    sep = MODELS.build(name, separable=True)
    assert any(isinstance(m, SeparableConv2d) for m in sep.modules())
    assert not any(isinstance(m, SeparableConv2d) for m in std.modules())
    assert count_parameters(sep) < 0.6 * count_parameters(std)
    # the first convolution sees the raw image and stays standard
    first = next(m for m in sep.modules() if isinstance(m, (nn.Conv2d, SeparableConv2d)))
    assert isinstance(first, nn.Conv2d) and first.groups == 1


def _std(t):
    return t.detach().float().std().item()


def test_he_init_std():
    layer = init_weights(nn.Linear(2000, 1000), "he", "relu")
    assert _std(layer.weight) == pytest.approx(math.sqrt(2 / 2000), rel=0.05)
    assert layer.bias.abs().max() == 0
    conv = init_weights(nn.Conv2d(64, 256, 3), "he", "relu")
    assert _std(conv.weight) == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    prelu = init_weights(nn.Linear(2000, 1000), "he", "prelu")  # slope 0.25
    assert _std(prelu.weight) == pytest.approx(math.sqrt(2 / (1.0625 * 2000)), rel=0.05)


def test_xavier_inits():
    fan_in, fan_out = 1500, 1000
    bound = math.sqrt(6 / (fan_in + fan_out))
    u = init_weights(nn.Linear(fan_in, fan_out), "xavier_uniform", "tanh").weight
    assert u.abs().max().item() <= bound
    assert u.abs().max().item() > 0.99 * bound
    assert _std(u) == pytest.approx(bound / math.sqrt(3), rel=0.05)
    n = init_weights(nn.Linear(fan_in, fan_out), "xavier_normal", "tanh").weight
    assert _std(n) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.05)


def test_mlp_init_option_reaches_all_layers():
    model = MODELS.build("mlp", widths=[512, 512], init="he")
    first, second = model.features[0], model.features[2]
    assert _std(first.weight) == pytest.approx(math.sqrt(2 / 784), rel=0.05)
    assert _std(second.weight) == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert all(m.bias.abs().max() == 0 for m in model.modules() if isinstance(m, nn.Linear))
    default = MODELS.build("mlp", widths=[512, 512])
    assert default.features[0].bias.abs().max() > 0  # PyTorch's init left alone


# ----------------------------------------------------------------------------------------
# chapter 4 CNNs


def test_lenet5_classic_sizes():
    model = MODELS.build("lenet5")
    assert count_parameters(model) == 61_706  # LeCun et al. 1998 with full C3 connectivity
    assert model.features[0].padding == (2, 2)
    assert MODELS.build("lenet5", in_shape=(1, 32, 32)).features[0].padding == (0, 0)
    assert model.features(torch.randn(1, 1, 28, 28)).shape == (1, 16, 5, 5)
    assert isinstance(model.features[1], nn.Tanh) and isinstance(model.features[2], nn.AvgPool2d)
    m = MODELS.build("lenet5", activation="relu", pool="max")
    assert isinstance(m.features[1], nn.ReLU) and isinstance(m.features[2], nn.MaxPool2d)


def test_course_cnn_matches_the_course_code():
    model = MODELS.build("course-cnn", in_shape=(3, 32, 32))
    # PyTorch's count of the §4.6 code (the printed "952,202" in the course is wrong)
    assert count_parameters(model) == 1_181_386
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 128), (128, 10)]


def test_vgg_options():
    gap = MODELS.build("vgg", stages=[[8], [16, 16]], global_pool=True, head=0, dropout=0.3)
    assert isinstance(gap.head[0], nn.AdaptiveAvgPool2d)
    assert gap.head[-1].in_features == 16
    flat = MODELS.build("vgg", stages=[[8], [16, 16]], head=32, batchnorm=False)
    assert flat.head[1].in_features == 16 * 7 * 7
    assert not any(isinstance(m, nn.BatchNorm2d) for m in flat.modules())
    assert sum(isinstance(m, nn.Conv2d) for m in flat.modules()) == 3


def test_resnet20_has_the_papers_027M_parameters():
    model = MODELS.build("resnet", in_shape=(3, 32, 32), depth=20)
    n = count_parameters(model)
    # 269,722 with He et al.'s parameter-free option-A shortcuts; the two projection
    # shortcuts (option B) add 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
    assert n == 272_474
    assert abs(n - 270_000) / 270_000 < 0.02
    assert count_parameters(MODELS.build("resnet20", in_shape=(3, 32, 32))) == n
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == 20  # 19 convs 3×3 + the final Linear


@pytest.mark.parametrize("depth", [8, 14, 32])
def test_resnet_depths(depth):
    model = MODELS.build("resnet", depth=depth, width=4)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 3 * (depth - 2) // 6


def test_projection_shortcut_exactly_when_shape_changes():
    model = MODELS.build("resnet", depth=14, in_shape=(3, 32, 32))
    seen = []

    def hook(block, inputs, output):
        seen.append((block, inputs[0].shape != output.shape))

    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    handles = [b.register_forward_hook(hook) for b in blocks]
    model(torch.randn(2, 3, 32, 32))
    for h in handles:
        h.remove()
    assert len(seen) == len(blocks) == 6
    for block, changed in seen:
        assert block.projects == changed
        assert isinstance(block.shortcut, nn.Identity) == (not changed)
    assert sum(block.projects for block in blocks) == 2  # entering layer2 and layer3


def test_resnet_init():
    model = MODELS.build("resnet", depth=20, width=32)
    conv = model.layer3[1].conv1  # 128 -> 128, fan_in = 128 * 9
    assert _std(conv.weight) == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.05)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert (m.weight == 1).all() and (m.bias == 0).all()


def test_fmnist_cnn_channels_last_bf16():
    model = MODELS.build("fmnist-cnn").to(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 28, 28).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (4, 10)
    y.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------------------
# a tiny learning check: the MLP learns sklearn's 8×8 digits


def test_mlp_learns_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    model = MODELS.build("mlp", in_shape=(1, 8, 8), widths=[64], init="he")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: one thread is faster, and robust to a busy CPU
    try:
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[train]), y[train]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.9
