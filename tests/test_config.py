import pytest

from profond.config import RunConfig, parse_override, recipe_names, resolve, set_key
from profond.errors import ConfigError, RegistryError


def test_overrides_are_typed_and_nested():
    cfg = resolve(overrides=["optim.lr=3e-4", "optim.betas=[0.5,0.999]", "train.early_stop.patience=3",
                             "data.augment=flip", "model.widths=[512,256]", "train.epochs=2.0"])
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == [0.5, 0.999]
    assert cfg.train.early_stop.patience == 3
    assert cfg.data.augment == ["flip"]
    assert cfg.model.args == {"widths": [512, 256]}
    assert cfg.train.epochs == 2 and isinstance(cfg.train.epochs, int)


@pytest.mark.parametrize("item, words", [
    ("optim.lrr=1", ["optim.lrr", "optim.lr"]),
    ("optim.lr=abc", ["optim.lr", "number"]),
    ("train.epochs=1.5", ["train.epochs", "integer"]),
    ("train.compile=yes please", ["train.compile", "true or false"]),
    ("bogus.x=1", ["bogus", "Valid keys"]),
    ("optim.name=lbfgs", ["optim.name", "adamw"]),
    ("train.precision=fp8", ["fp32", "bf16"]),
    ("data.batch_size=0", ["data.batch_size", ">= 1"]),
    ("nokey", ["section.key=value"]),
])
def test_bad_overrides_name_the_problem(item, words):
    with pytest.raises(ConfigError) as e:
        resolve(overrides=[item])
    for w in words:
        assert w in str(e.value)


def test_yaml_roundtrip(tmp_path):
    cfg = resolve(overrides=["model.name=vgg", "model.stages=[[8],[16]]", "method.label_smoothing=0.1",
                             "sched.name=onecycle"])
    cfg.save(tmp_path / "c.yaml")
    back = RunConfig.load(tmp_path / "c.yaml")
    assert back == cfg
    assert "stages" in (tmp_path / "c.yaml").read_text()  # open sections are written flat


def test_precedence_recipe_file_flags_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim: {lr: 0.5}\ntrain: {epochs: 7}\n")
    cfg = resolve(recipe="course-mlp", config_file=str(f), flags={"train.epochs": 3}, overrides=["optim.lr=0.25"])
    assert cfg.recipe == "course-mlp" and cfg.data.batch_size == 64  # from the recipe
    assert cfg.train.epochs == 3 and cfg.optim.lr == 0.25


def test_unknown_recipe_lists_valid():
    with pytest.raises(RegistryError) as e:
        resolve(recipe="nope")
    assert "course-mlp" in str(e.value) and "profond list recipes" in str(e.value)
    assert "course-mlp" in recipe_names()


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve(config_file=str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve(config_file=str(tmp_path / "bad.yaml"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve(config_file=str(tmp_path / "list.yaml"))


def test_parse_override_yaml_values():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a.b=x=y") == ("a.b", "x=y")
    cfg = RunConfig()
    set_key(cfg, "train.clip_grad_norm", 1)
    assert cfg.train.clip_grad_norm == 1.0 and isinstance(cfg.train.clip_grad_norm, float)
    set_key(cfg, "train.clip_grad_norm", None)
    assert cfg.train.clip_grad_norm is None


@pytest.mark.parametrize("name", recipe_names())
def test_every_recipe_resolves_and_builds(name):
    from profond.config import recipe_help
    from profond.registry import MODELS

    cfg = resolve(recipe=name)
    assert recipe_help(name), f"recipe {name} needs a '# description' first line"
    from profond.registry import builder_params

    # image models take the image shape, text models a vocabulary size: pass what the builder takes
    sizes = {"in_shape": (1, 28, 28), "num_classes": 10, "vocab_size": 100}
    params = builder_params(MODELS.get(cfg.model.name))
    model = MODELS.build(cfg.model.name, **{k: v for k, v in sizes.items() if k in params}, **cfg.model.args)
    assert sum(p.numel() for p in model.parameters()) > 0
