"""The package's shape: layers import downward only, no import cycle, a CLI that asks methods
for capabilities (never names a family), and a new family that gets the CLI's commands
without an edit under profond/cli/."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

import profond
from profond.registry import METHODS, MODELS

PKG = Path(profond.__file__).parent

#: lowest first. A module may import its own package and the layers below; packages of one
#: layer are siblings that never import each other (``methods`` and ``train`` meet in
#: ``contract``).
LAYERS: list[set[str]] = [
    {"profond", "profond.errors"},
    {"profond.base", "profond.course"},
    {"profond.registry"},
    {"profond.config"},
    {"profond.nn", "profond.scratch", "profond.data", "profond.viz"},
    {"profond.models"},
    {"profond.metrics", "profond.explain", "profond.privacy"},
    {"profond.contract"},
    {"profond.methods", "profond.train"},
    {"profond.experiments"},
    {"profond.cli"},
    {"profond.__main__"},
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> list[str]:
    return sorted(module_name(p) for p in PKG.rglob("*.py"))


def unit(mod: str) -> str:
    """The layer unit a module belongs to: its top-level package or module (``profond.train``,
    ``profond.config``), or ``profond`` for the package's own ``__init__``."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1] != "__version__" else "profond"


def layer_of(u: str) -> int:
    for i, units in enumerate(LAYERS):
        if u in units:
            return i
    raise AssertionError(f"{u} is in no layer of LAYERS: add it where it belongs")


def imports(path: Path) -> list[tuple[int, str, bool]]:
    """``(line, imported module, at module level)`` for every profond import of a file,
    including the ones inside functions."""
    mod = module_name(path)
    pkg = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, n, id(node) in top) for n in names if n.split(".")[0] == "profond"]
    return found


def test_every_package_unit_has_a_layer():
    for mod in modules():
        layer_of(unit(mod))


def test_layers_import_downward_only():
    bad = []
    for path in PKG.rglob("*.py"):
        mod = module_name(path)
        mine = unit(mod)
        for line, target, _ in imports(path):
            theirs = unit(target)
            if theirs == mine:
                continue
            if layer_of(theirs) >= layer_of(mine):
                bad.append(f"{mod}:{line} imports {target} (layer {layer_of(theirs)} >= {layer_of(mine)})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_no_module_level_import_cycle():
    """The static graph of module-level imports has no cycle (function-level imports are
    resolved at call time and cannot deadlock an import)."""
    graph: dict[str, set[str]] = {}
    mods = set(modules())
    for path in PKG.rglob("*.py"):
        deps = set()
        for _, target, at_top in imports(path):
            if at_top:
                while target not in mods and "." in target:  # `from .x import name`
                    target = target.rsplit(".", 1)[0]
                deps.add(target)
        graph[module_name(path)] = deps - {module_name(path)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d.startswith(m + ".") or (m == "profond"):
                continue  # a package importing its own submodules is not a cycle
            if state.get(d) == 1 and not m.startswith(d + "."):
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """Import each module as the first profond module of the interpreter: a cycle that only
    bites for one entry point fails here."""
    script = (
        "import importlib, sys, traceback\n"
        "import torch  # loaded once, it is not ours\n"
        f"mods = {[m for m in modules() if m != 'profond.__main__']!r}\n"
        "bad = []\n"
        "for m in mods:\n"
        "    for k in [k for k in sys.modules if k == 'profond' or k.startswith('profond.')]:\n"
        "        del sys.modules[k]\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception:\n"
        "        bad.append(m + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       cwd=PKG.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_cli_names_no_family_in_a_condition():
    """No family name (a registered model or method) is compared or tested under profond/cli/,
    and the CLI imports nothing of profond.methods but the capability interfaces."""
    families = set(METHODS.names()) | set(MODELS.names())
    bad = []
    for path in (PKG / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            tests = []
            if isinstance(node, (ast.If, ast.IfExp, ast.While, ast.Assert)):
                tests = [node.test]
            elif isinstance(node, ast.comprehension):
                tests = node.ifs
            elif isinstance(node, ast.Compare):
                tests = [node]
            for t in tests:
                for c in ast.walk(t):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in families:
                        bad.append(f"{path.name}:{c.lineno} tests for {c.value!r}")
        for _, target, _ in imports(path):
            if target.startswith("profond.methods") and target not in (
                    "profond.methods.capabilities", "profond.methods"):
                bad.append(f"{path.name} imports {target}")
    assert not bad, "\n".join(bad)


# -- a new family, registered here only, gets sample / latent / eval --------------------------
from profond.methods.capabilities import (  # noqa: E402
    Artifacts,
    ExploresLatent,
    LatentRequest,
    Reconstructs,
    SamplesImages,
)
from profond.methods.generative import GenerativeMethod  # noqa: E402


class ToyDecoder(nn.Module):
    """z (4) -> a 1x28x28 image in [0, 1]."""

    def __init__(self, in_shape=(1, 28, 28), num_classes=10):
        super().__init__()
        self.shape = tuple(in_shape)
        self.net = nn.Linear(4, in_shape[0] * in_shape[1] * in_shape[2])

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.net(z)).view(len(z), *self.shape)


@dataclass
class ToyOptions:
    latent: int = 4


class ToyMethod(GenerativeMethod, SamplesImages, Reconstructs, ExploresLatent):
    """Fits a decoder of Gaussian codes to the data by regression on random codes: a toy, but a
    complete generative family as far as the commands are concerned."""

    Options = ToyOptions
    latent_dim = 4

    def __init__(self, cfg, env, *, with_data=True):
        super().__init__(cfg, env, with_data=with_data)
        self.nets = {"model": self.build_model()}

    def train_step(self, batch, ctx):
        x, _ = batch
        z = torch.randn(len(x), 4, device=x.device)
        loss = ((self.nets["model"](z) - x) ** 2).mean()
        ctx.optimize(loss)
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, batches, ctx, detailed=False):
        total, n = 0.0, 0
        for x, _ in batches.batches(0):
            z = torch.zeros(len(x), 4, device=x.device)
            total += float(((self.nets["model"](z) - x) ** 2).mean(dim=(1, 2, 3)).sum())
            n += len(x)
        out = {"loss": total / max(n, 1)}
        if detailed:
            out["toy_detail"] = [1, 2, 3]
        return out

    @torch.no_grad()
    def sample(self, n, *, seed=0, labels=None):
        z = torch.randn(n, 4, generator=self.generator(seed), device=self.env.device)
        return self.unwrapped()(z).cpu()

    @torch.no_grad()
    def reconstruct(self, x):
        return self.sample(len(x))

    def latent_figures(self, req: LatentRequest) -> Artifacts:
        from profond.viz.images import save_grid

        z = torch.linspace(-req.range, req.range, req.steps)[:, None].repeat(1, 4)
        with torch.no_grad():
            path = save_grid(self.unwrapped()(z.to(self.env.device)).cpu(), req.folder / "toy_walk.png",
                             nrow=req.steps)
        return Artifacts(files=[path], lines=[f"toy walk of {req.steps} steps"])


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    from profond.config import resolve
    from profond.train import train

    MODELS.register("toy-decoder", tags=("method:toy",), help="test only")(ToyDecoder)
    METHODS.register("toy", help="test only")(ToyMethod)
    try:
        out = tmp_path_factory.mktemp("toy")
        cfg = resolve(overrides=["model.name=toy-decoder", "data.name=synthetic", "data.val_size=200",
                                 "train.epochs=1", "train.max_steps=3", "train.quiet=true", f"out={out}",
                                 "name=toy"])
        yield train(cfg)
    finally:
        MODELS._entries.pop("toy-decoder", None)
        METHODS._entries.pop("toy", None)


def test_a_family_registered_outside_the_cli_gets_sample_latent_and_eval(toy_run, tmp_path):
    from profond.cli import app

    run = str(toy_run.run_dir)
    r = CliRunner().invoke(app, ["sample", run, "--n", "9", "--recon", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "reconstructions.png").is_file()
    r = CliRunner().invoke(app, ["latent", run, "--steps", "5", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "toy walk of 5 steps" in r.output and (tmp_path / "toy_walk.png").is_file()
    r = CliRunner().invoke(app, ["eval", run, "--n", "60", "--batch-size", "30", "--json", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    import json

    ev = json.loads(r.stdout.strip().splitlines()[-1])
    assert ev["method"] == "toy" and ev["toy_detail"] == [1, 2, 3] and ev["n_fake"] == 60 and ev["fid"] > 0
    # what it does not declare, the commands refuse with the fix
    r = CliRunner().invoke(app, ["latent", run, "--codes"])
    assert r.exit_code == 2 and "no discrete codes" in r.output
    r = CliRunner().invoke(app, ["generate", run])
    assert r.exit_code == 2 and "generates text" in r.output and "Traceback" not in r.output
