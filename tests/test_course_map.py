"""The course map (profond/course/map.yaml, issue 12 part 7): every named module imports,
every command parses and names something that exists, the statuses are the issue's, the refs
exist in the course text, and docs/course.md is up to date."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from profond import course as K
from profond.errors import ProfondError

ROOT = Path(__file__).resolve().parents[1]
COURSE_DIR = ROOT.parent / "shared" / "course"
COURSE_TEXT = COURSE_DIR / "003_5fd00316ac58b774.txt"

#: the commands a row may run, besides `train` and `experiment` (checked in more depth)
KNOWN_COMMANDS = {"sample", "latent", "generate", "gates", "translate", "eval", "attention", "explain"}

ROWS = K.load_map()
WITH_MODULE = [r for r in ROWS if r["module"]]
WITH_COMMAND = [r for r in ROWS if r["command"]]


def row_id(r: dict) -> str:
    return f"ch{r['chapter']}:{r['ref']}:{r['title'][:30]}"


# ----------------------------------------------------------------------------- the data
def test_every_chapter_present_and_rows_valid():
    assert {r["chapter"] for r in ROWS} == set(range(1, 13)) == set(K.CHAPTER_TITLES)
    assert len(ROWS) >= 100
    for r in ROWS:
        assert r["status"] in K.STATUSES
        assert set(r) == {"chapter", "ref", "title", "status", "module", "planned_module", "command",
                          "note", "source"}
        if r["status"] == "planned":
            assert r["module"] is None and r["command"] is None and r["planned_module"]
        else:
            assert r["module"]
        if r["status"] == "partial":
            assert r["note"]


def test_refs_cite_the_course_never_a_file():
    part = re.compile(r"^(§\d+\.\d+(\.\d+)?(-\d+\.\d+(\.\d+)?)?|eqs?\. \d+\.\d+(-\d+\.\d+)?|table \d+\.\d+"
                      r"|exercise \d+\.\d+(\.\d+)?|(theorem|definition|remark|proposition) \d+\.\d+)$")
    for r in ROWS:
        ref = r["ref"]
        assert ".txt" not in ref and "/" not in ref and "\\" not in ref, ref
        if r["source"] == "course":
            assert all(part.match(p) for p in ref.split(", ")), ref
        else:
            assert re.match(r"^seed 00[0-4] \S", ref) and ref.startswith(r["source"]), ref


@pytest.mark.parametrize("row", WITH_MODULE, ids=row_id)
def test_module_imports_and_function_exists(row):
    mod, _, attr = row["module"].partition(":")
    obj = importlib.import_module(mod)
    for name in filter(None, attr.split(".")):
        assert hasattr(obj, name), f"{row['module']}: {obj!r} has no attribute {name!r}"
        obj = getattr(obj, name)


def test_planned_modules_are_dotted_paths_not_imported():
    for r in ROWS:
        if r["planned_module"]:
            assert re.match(r"^profond(\.[a-z_][a-z0-9_]*)+(:[A-Za-z_]\w*)?$", r["planned_module"])


# ----------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def cli():
    import typer

    from profond.cli import app

    return typer.main.get_command(app)


def parse(cli, command: str):
    tokens = shlex.split(command)
    assert tokens[0] == "profond" and len(tokens) >= 2, command
    name, args = tokens[1], tokens[2:]
    assert name in KNOWN_COMMANDS | {"train", "experiment"}, f"{command}: unknown command {name!r}"
    assert name in cli.commands, f"{command}: the CLI has no command {name!r}"
    ctx = cli.commands[name].make_context(name, list(args))  # parses and type-checks, runs nothing
    return name, ctx.params


def check_train(params: dict, command: str) -> None:
    from profond.config import recipe_names, resolve
    from profond.registry import METHODS, MODELS, check_kwargs

    recipe, model = params["recipe"], params["model"]
    assert recipe or model, command
    if recipe is not None:
        assert recipe in recipe_names(), f"{command}: unknown recipe {recipe!r}"
    if model is not None:
        assert model in MODELS, f"{command}: unknown model {model!r}"
    flags = {"model.name": model, "data.name": params["dataset"], "train.epochs": params["epochs"],
             "data.batch_size": params["batch_size"], "optim.lr": params["lr"]}
    cfg = resolve(recipe=recipe, flags=flags, overrides=list(params["overrides"]))
    if params["dataset"] is not None:
        from profond.registry import DATASETS

        assert params["dataset"] in DATASETS, command
    check_kwargs(MODELS.get(cfg.model.name), dict(cfg.model.args), f"model {cfg.model.name!r}")
    method = METHODS.get(cfg.method.name)
    if hasattr(method, "parse_options"):  # unknown / ill-typed method.* keys raise ConfigError
        method.parse_options(cfg)


@pytest.mark.parametrize("row", WITH_COMMAND, ids=row_id)
def test_command_parses_and_names_what_exists(row, cli):
    from profond.registry import EXPERIMENTS

    command = row["command"]
    name, params = parse(cli, command)
    if name == "experiment":
        assert params["name"] in EXPERIMENTS, f"{command}: unknown experiment"
    elif name == "train":
        check_train(params, command)


def test_every_experiment_and_recipe_is_mapped(cli):
    from profond.config import recipe_names
    from profond.registry import EXPERIMENTS

    experiments, recipes = set(), set()
    for r in WITH_COMMAND:
        name, params = parse(cli, r["command"])
        if name == "experiment":
            experiments.add(params["name"])
        elif name == "train" and params["recipe"]:
            recipes.add(params["recipe"])
    assert experiments == set(EXPERIMENTS.names())
    assert recipes == set(recipe_names())


# ----------------------------------------------------------------------------- statuses
def test_statuses_follow_the_issue():
    cov = K.coverage()
    # chapter 12 (issue 20, in part): explanations, fairness metrics and ex. 12.1, DP-SGD, costs
    done12 = {r["command"] for r in K.rows(12, status="done")}
    assert {"profond experiment fairness-impossibility", "profond experiment transformer-flops",
            "profond explain RUN_DIR --index 0 --method shap"} <= done12
    assert {r["ref"] for r in K.rows(12, status="planned")} >= {"exercise 12.5", "§12.7.2, exercise 12.4"}
    # chapter 10 (diffusion): every row done, latent diffusion included
    assert cov[10]["done"] == cov[10]["total"] == 18
    # chapter 7 (Transformers): every row done
    for r in K.rows(7):
        assert r["status"] == "done", r["ref"]
    for ch in (1, 2, 3, 4, 5, 8, 9):
        assert cov[ch]["done"] > cov[ch]["planned"], ch
    # chapter 6: everything done (exercise 6.4, the causal language model, with the Transformers)
    for r in K.rows(6):
        assert r["status"] == "done", r["ref"]
    # chapter 11 (issue 19): every experiment of the issue; the universal approximation theorem stays planned
    done11 = K.rows(11, status="done")
    assert {r["command"] for r in done11} == {
        "profond experiment double-descent", "profond experiment bias-variance", "profond experiment rademacher",
        "profond experiment implicit-bias", "profond experiment scaling-law-fit", "profond experiment ntk-width",
        "profond experiment ntk-lazy", "profond experiment loss-landscape",
        "profond experiment information-plane", "profond experiment vc-shattering",
        "profond experiment random-labels", "profond experiment depth-width", "profond experiment lottery-ticket",
        "profond experiment sam-vs-sgd", "profond train mlp --set optim.name=sgd --set optim.sam_rho=0.05"}
    assert any(r["ref"].startswith("§11.10") for r in done11)
    assert "§11.6.1, theorem 11.15" in {r["ref"] for r in K.rows(11, status="planned")}
    # bias-variance: eq. 3.1 in chapter 3 as well
    assert any("eq. 3.1" in r["ref"].split(", ") and r["status"] == "done" for r in K.rows(3))


# ----------------------------------------------------------------------------- refs in the course
def course_lines() -> list[str]:
    if not COURSE_TEXT.is_file():
        pytest.skip(f"course text not found in {COURSE_DIR}")
    return [line.strip() for line in COURSE_TEXT.read_text(encoding="utf-8").splitlines()]


FRENCH = {"theorem": "Théorème", "definition": "Définition", "remark": "Remarque",
          "proposition": "Proposition"}


def test_refs_exist_in_the_course_text():
    lines = course_lines()
    text = "\n".join(lines)
    sections = {m.group(1) for line in lines if (m := re.match(r"^(\d+\.\d+(?:\.\d+)?) \S", line))}
    equations = {m.group(1) for line in lines if (m := re.search(r"\((\d+\.\d+)\)$", line))}

    def ends(num: str) -> list[str]:
        a, _, b = num.partition("-")
        return [a] + ([b] if b else [])

    missing = []
    for r in ROWS:
        if r["source"] != "course":
            seed = r["source"].split()[1]
            if not list(COURSE_DIR.glob(f"{seed}_*.txt")):
                missing.append((r["ref"], "no such course text"))
            continue
        for part in r["ref"].split(", "):
            kind, _, num = part.partition(" ")
            if part.startswith("§"):
                nums = ends(part[1:])
                ok = all(n in sections for n in nums)
            elif kind in ("eq.", "eqs."):
                first, last = ends(num)[0], ends(num)[-1]
                ch, lo, hi = first.split(".")[0], int(first.split(".")[1]), int(last.split(".")[1])
                ok = all(f"{ch}.{k}" in equations for k in range(lo, hi + 1))
            elif kind == "table":
                ok = f"Tab. {num} " in text
            elif kind == "exercise":
                ok = f"Exercice {'.'.join(num.split('.')[:2])} (" in text
            else:
                ok = f"{FRENCH[kind]} {num} " in text or f"{FRENCH[kind]} {num}." in text
            if not ok:
                missing.append((r["ref"], part))
    assert not missing, f"refs not found in the course text: {missing}"


# ----------------------------------------------------------------------------- library API
def test_rows_chapters_coverage_json():
    assert K.rows(5) == K.rows("5") == [r for r in ROWS if r["chapter"] == 5]
    assert all(r["status"] == "planned" for r in K.rows(status="planned"))
    with pytest.raises(ProfondError, match="chapters 1-12"):
        K.rows(13)
    with pytest.raises(ProfondError, match="chapters 1-12"):
        K.rows("six")
    with pytest.raises(ProfondError, match="status"):
        K.rows(status="finished")
    chs = K.chapters()
    assert [c["chapter"] for c in chs] == list(range(1, 13))
    assert sum(len(c["rows"]) for c in chs) == len(ROWS)
    total = K.total_coverage()
    assert total["total"] == len(ROWS) == sum(total[s] for s in K.STATUSES)
    assert sum(c["total"] for c in K.coverage().values()) == len(ROWS)
    js = K.to_json(8)
    assert [c["chapter"] for c in js["chapters"]] == [8] and js["coverage"]["total"] == len(K.rows(8))
    json.dumps(K.to_json())
    planned = K.rows(status="planned")[0]
    assert K.cells(planned)[3] == f"planned: {planned['planned_module']}"
    md = K.to_markdown(K.rows(1))
    assert md.startswith("| ref | title | status | module | command |\n|---|")
    assert md.count("\n") == len(K.rows(1)) + 2
    K.load_map()[0]["title"] = "changed"
    assert K.load_map()[0]["title"] != "changed"  # callers get copies


def test_docs_course_md_is_up_to_date():
    path = ROOT / "docs" / "course.md"
    expected = K.docs_markdown()
    assert path.is_file(), "run `python scripts/course_md.py`"
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == K.GENERATED_LINE and "scripts/course_md.py" in text.splitlines()[0]
    assert text == expected, "docs/course.md is stale: run `python scripts/course_md.py`"


def test_course_package_imports_only_errors():
    code = ("import sys, profond.course as K; K.load_map(); "
            "print(sorted(m for m in sys.modules if m.startswith('profond')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert json.loads(out.replace("'", '"')) == ["profond", "profond.course", "profond.errors"]


# ----------------------------------------------------------------------------- validation
GOOD = {"ref": "§5.5.1, eqs. 5.9-5.14", "title": "LSTM", "status": "done",
        "module": "profond.nn.rnn:LSTMCell", "command": None}


def write_map(tmp_path: Path, rows: list[dict], chapter=5) -> Path:
    import yaml

    p = tmp_path / "map.yaml"
    p.write_text(yaml.safe_dump([{"chapter": chapter, "rows": rows}], allow_unicode=True), encoding="utf-8")
    return p


@pytest.mark.parametrize("change, message", [
    ({"status": "finished"}, "status 'finished'"),
    ({"ref": "003_5fd00316ac58b774.txt line 12"}, "cannot read"),
    ({"ref": "§4.2"}, "another chapter than 5"),
    ({"module": "torch.nn:LSTM"}, "is not 'profond.module"),
    ({"module": None}, "names the module"),
    ({"status": "planned"}, "planned row has module: null"),
    ({"status": "partial"}, "says what is missing"),
    ({"command": "python train.py"}, "must start with 'profond '"),
    ({"colour": "red"}, "unknown key"),
    ({"ref": "seed 009 something"}, "unknown course text"),
])
def test_bad_rows_name_the_row(tmp_path, change, message):
    row = {**GOOD, **change}
    with pytest.raises(ProfondError, match=re.escape(message)) as e:
        K.load_map(write_map(tmp_path, [row]))
    assert "chapter 5, row 1" in str(e.value)


def test_bad_chapters_and_missing_keys(tmp_path):
    with pytest.raises(ProfondError, match="chapter 13 is not an integer in 1-12"):
        K.load_map(write_map(tmp_path, [GOOD], chapter=13))
    row = dict(GOOD)
    del row["command"]
    with pytest.raises(ProfondError, match=r"chapter 5, row 1 .*missing key\(s\) command"):
        K.load_map(write_map(tmp_path, [row]))
    assert K.load_map(write_map(tmp_path, [GOOD]))[0]["source"] == "course"
