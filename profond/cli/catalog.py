"""What can be named and run: ``profond list``, ``profond experiment`` and ``profond course``
(the course map: what profond implements, chapter by chapter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import ProfondError
from .common import app, examples, out, show, user_errors

LIST_KINDS = ("models", "datasets", "recipes", "experiments", "methods")


@app.command("list", epilog=examples("profond list", "profond list models"))
@user_errors
def list_(what: str = typer.Argument(None, help="models, datasets, recipes, experiments or methods (default: all).")) -> None:
    """List what can be named: models, datasets, recipes, experiments, methods."""
    from .. import config as C
    from ..registry import DATASETS, EXPERIMENTS, METHODS, MODELS, unknown_name_message

    if what is not None and what not in LIST_KINDS:
        raise ProfondError(unknown_name_message("list", what, list(LIST_KINDS), "kinds"))
    regs = {"models": MODELS, "datasets": DATASETS, "experiments": EXPERIMENTS, "methods": METHODS}
    for kind in [what] if what else LIST_KINDS:
        t = Table(title=kind, title_justify="left")
        t.add_column("name", style="bold")
        t.add_column("description")
        if kind == "recipes":
            for n in C.recipe_names():
                t.add_row(n, escape(C.recipe_help(n)))
        else:
            for e in regs[kind].entries():
                t.add_row(e.name, escape(e.help))
        out.print(t)


@app.command(epilog=examples("profond experiment separable-conv --quick",
                             "profond experiment separable-conv --out results/sep"))
@user_errors
def experiment(
    name: str = typer.Argument(..., help="Experiment name (see `profond list experiments`)."),
    quick: bool = typer.Option(False, "--quick", help="The small, CI-sized version (seconds)."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Output folder (default runs/experiments/NAME)."),
) -> None:
    """Run a course experiment: writes its table (CSV, Markdown) and figures (PNG) and prints the table."""
    from ..experiments import run_experiment, to_markdown

    folder, result = run_experiment(name, quick=quick, out=out_dir)
    show(to_markdown(result.table))
    if result.notes:
        show(result.notes)
    for f in result.figures:
        show(f"figure: {f}")
    show(f"table: {folder / 'table.csv'}, {folder / 'table.md'}")


@app.command(epilog=examples("profond course", "profond course 8", "profond course --json",
                             "profond course 5 --status planned"))
@user_errors
def course(
    chapter: str = typer.Argument(None, help="One chapter (1-12); default: all."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as one JSON list of objects (chapter, "
                                 "ref, title, status, module, command, ...)."),
    status: str = typer.Option(None, "--status", help="Only the rows of this status: done, partial or planned."),
) -> None:
    """The course map: every section, equation, table and exercise of the course that profond
    implements or plans, with the module that implements it, the command that runs it and its
    status (done, partial, planned)."""
    from .. import course as K

    rows = K.rows(chapter, status=status)
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    colour = {"done": "green", "partial": "yellow", "planned": "dim"}
    for ch in sorted({r["chapter"] for r in rows}):
        t = Table(title=f"chapter {ch}: {escape(K.CHAPTER_TITLES[ch])}", title_justify="left")
        for col in K.COLUMNS:
            t.add_column(col, overflow="fold")
        for r in (r for r in rows if r["chapter"] == ch):
            cells = [escape(c) for c in K.cells(r)]
            cells[K.COLUMNS.index("status")] = f"[{colour[r['status']]}]{cells[K.COLUMNS.index('status')]}[/]"
            t.add_row(*cells)
        out.print(t)
    total = K.total_coverage(rows)
    show(", ".join(f"{total[s]} {s}" for s in K.STATUSES) + f" ({total['total']} rows)")
