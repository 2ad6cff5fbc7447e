"""Transfer learning tools (course §4.7): freeze, parameter groups, safetensors loading."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from profond.errors import ConfigError
from profond.models.transfer import freeze, load_weights, no_decay_names, param_groups, unfreeze
from profond.registry import MODELS


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_resnet():
    return MODELS.build("resnet8", width=4)


def names_by_group(model, groups):
    ids = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: [ids[id(p)] for p in g["params"]] for g in groups}


def assert_partition(model, groups, expected_names):
    flat = [id(p) for g in groups for p in g["params"]]
    assert len(flat) == len(set(flat)), "a parameter appears in two groups"
    assert set(flat) == {id(p) for n, p in model.named_parameters() if n in expected_names}


# ----------------------------------------------------------------------------------------
# freeze / unfreeze


def test_freeze_excludes_params_and_stops_grads():
    model = small_resnet()
    frozen = freeze(model, ["stem", "layer1", "layer2"])
    assert frozen and all(n.split(".")[0] in {"stem", "layer1", "layer2"} for n in frozen)
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.split(".")[0] in {"layer3", "head"}), name

    groups = param_groups(model, base_lr=1e-3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert_partition(model, groups, trainable)

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(groups, lr=0.1)
    model(torch.randn(4, 1, 28, 28)).sum().backward()
    opt.step()
    for name, p in model.named_parameters():
        if name in frozen:
            assert p.grad is None and torch.equal(p, before[name]), name
    assert not torch.equal(model.head[-1].weight, before["head.2.weight"])

    freeze(model, ["layer3", "head"])
    with pytest.raises(ConfigError, match="frozen"):
        param_groups(model, base_lr=1e-3)
    unfreeze(model, ["layer2"])
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert not any(p.requires_grad for p in model.layer1.parameters())


def test_unknown_prefix_lists_top_level_modules():
    model = small_resnet()
    with pytest.raises(ConfigError) as e:
        freeze(model, ["backbone"])
    for top in ["stem", "layer1", "layer2", "layer3", "head"]:
        assert top in str(e.value)
    with pytest.raises(ConfigError, match="layer3"):
        param_groups(model, 1e-3, lr_groups={"fc": 1e-2})


def test_prefix_respects_dotted_boundaries():
    model = nn.Module()
    model.layer1 = nn.Linear(2, 2)
    model.layer10 = nn.Linear(2, 2)
    freeze(model, ["layer1"])
    assert not model.layer1.weight.requires_grad
    assert model.layer10.weight.requires_grad
    freeze(model, ["layer10.weight"])  # deeper names work too
    assert not model.layer10.weight.requires_grad and model.layer10.bias.requires_grad


# ----------------------------------------------------------------------------------------
# parameter groups


def test_lr_groups_give_the_right_learning_rates():
    model = MODELS.build("resnet", depth=14, width=4)  # two blocks per stage
    lr_groups = {"layer3": 1e-4, "layer3.0": 1e-5, "head": 1e-2}
    groups = param_groups(model, base_lr=1e-3, lr_groups=lr_groups, weight_decay=0.05)
    assert_partition(model, groups, {n for n, _ in model.named_parameters()})
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"base", "layer3", "layer3.0", "head"}
    names = names_by_group(model, groups)
    for gname, pnames in names.items():
        for n in pnames:
            if n.startswith("layer3.0."):
                expected = 1e-5  # the longest prefix wins
            elif n.startswith("layer3."):
                expected = 1e-4
            elif n.startswith("head."):
                expected = 1e-2
            else:
                expected = 1e-3
            assert by_name[gname]["lr"] == expected, n
    assert all(g["weight_decay"] == 0.05 for g in groups)
    opt = torch.optim.AdamW(groups)  # valid optimizer groups
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]


def test_decay_exclusion_puts_norms_and_biases_in_no_decay_groups():
    # convs without bias followed by BN, then biased Linears
    model = MODELS.build("vgg", stages=[[4], [8]], head=16)
    model.extra_ln = nn.LayerNorm(3)  # any norm type counts
    groups = param_groups(
        model, base_lr=1e-3, lr_groups={"head": 1e-2}, weight_decay=0.1, decay_norm_and_bias=False
    )
    assert_partition(model, groups, {n for n, _ in model.named_parameters()})
    names = names_by_group(model, groups)
    assert set(names) == {"base", "base/no_decay", "head", "head/no_decay"}
    wd = {g["name"]: g["weight_decay"] for g in groups}
    assert wd == {"base": 0.1, "base/no_decay": 0.0, "head": 0.1, "head/no_decay": 0.0}
    assert {g["name"]: g["lr"] for g in groups}["head/no_decay"] == 1e-2

    norm_params = {
        f"{mn}.{pn}"
        for mn, m in model.named_modules()
        if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm))
        for pn, _ in m.named_parameters(recurse=False)
    }
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert norm_params and biases
    no_decay = set(names["base/no_decay"]) | set(names["head/no_decay"])
    assert norm_params | biases == no_decay == no_decay_names(model)
    decay = set(names["base"]) | set(names["head"])
    assert all(n.endswith("weight") and n not in norm_params for n in decay)

    # decay_norm_and_bias=True (default): one group per lr, everything decayed
    plain = param_groups(model, base_lr=1e-3, weight_decay=0.1)
    assert len(plain) == 1 and plain[0]["weight_decay"] == 0.1 and plain[0]["name"] == "base"


# ----------------------------------------------------------------------------------------
# load_weights


def test_load_weights_round_trip(tmp_path):
    src = small_resnet()
    src.train()
    src(torch.randn(8, 1, 28, 28))  # move the BN running stats away from their init
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))

    dst = small_resnet()
    report = load_weights(dst, str(path))
    assert set(report.loaded) == set(src.state_dict())
    assert report.skipped == [] and report.unexpected == []
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    src.eval()
    dst.eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(src(x), dst(x))


def test_refuses_pickles_and_other_files(tmp_path):
    model = MODELS.build("mlp", widths=[8])
    pickle = tmp_path / "w.safetensors"  # the extension does not make it safe
    torch.save(model.state_dict(), pickle)
    with pytest.raises(ConfigError, match="safetensors"):
        load_weights(model, str(pickle))
    legacy = tmp_path / "w.pt"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(ConfigError, match="safetensors"):
        load_weights(model, str(legacy))
    text = tmp_path / "w.txt"
    text.write_text("hello, I am not a tensor file at all")
    with pytest.raises(ConfigError, match="safetensors"):
        load_weights(model, str(text))
    with pytest.raises(ConfigError, match="not found"):
        load_weights(model, str(tmp_path / "missing.safetensors"))


def test_non_strict_loading_skips_exactly_the_new_head(tmp_path):
    src = MODELS.build("mlp", widths=[32, 16], num_classes=10)
    path = tmp_path / "w.safetensors"
    save_file(src.state_dict(), str(path))
    dst = MODELS.build("mlp", widths=[32, 16], num_classes=5)
    head_before = dst.head.weight.detach().clone()

    with pytest.raises(ConfigError, match="head.weight"):
        load_weights(dst, str(path), strict=True)
    assert torch.equal(dst.head.weight, head_before)
    assert not torch.equal(dst.features[0].weight, src.features[0].weight)  # nothing loaded

    report = load_weights(dst, str(path), strict=False)
    assert sorted(report.skipped) == ["head.bias", "head.weight"]
    assert report.mismatched[0][1:] in {((10, 16), (5, 16)), ((10,), (5,))}
    assert set(report.loaded) == {n for n in src.state_dict() if not n.startswith("head.")}
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    assert torch.equal(dst.head.weight, head_before)


def test_non_strict_reports_missing_and_unexpected(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"features.0.weight": torch.zeros(8, 784), "other": torch.zeros(3)}, str(path))
    model = MODELS.build("mlp", widths=[8])
    report = load_weights(model, str(path), strict=False)
    assert report.loaded == ["features.0.weight"] and report.unexpected == ["other"]
    assert set(report.missing) == {"features.0.bias", "head.weight", "head.bias"}
    assert model.features[0].weight.abs().sum() == 0
    with pytest.raises(ConfigError, match="missing"):
        load_weights(model, str(path))
