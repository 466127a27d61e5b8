"""``tunelab quickstart``, ``run``, ``validate``, ``diagnose`` and ``export``: one recipe's run, from
checking it to exporting its weights."""

from __future__ import annotations

import argparse
import sys

from tunelab.cli.common import Commands, add_overrides
from tunelab.cli.output import format_diagnose, format_quickstart
from tunelab.config import builtin_recipes, load_recipe
from tunelab.diagnostics import run_diagnostics
from tunelab.report.run_report import run_report
from tunelab.runner.run import load_results, run
from tunelab.runner.sweep_file import check_sweep, is_sweep_file, load_sweep
from tunelab.runner.validate import validate
from tunelab.train.artifacts import export


def cmd_quickstart(a: argparse.Namespace) -> int:
    """Fine-tune smollm2-135m-instruct with LoRA on built-in arithmetic problems; evaluate before/after."""

    recipe = builtin_recipes()["quickstart"]  # the packaged recipe, whatever the current folder holds
    run_dir = run(recipe, a.overrides, out=a.out, force=a.force, resume=a.resume)
    print(format_quickstart(load_results(run_dir), run_dir))
    report = run_dir / "report.html" if (run_dir / "report.html").is_file() else run_report(run_dir)
    print(f"[tunelab] report: {report}")
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """Run a recipe: data -> train -> eval -> results (skipped if results exist; --force redoes)."""

    run_dir = run(a.recipe, a.overrides, out=a.out, resume=a.resume, force=a.force,
                  data_cache=a.data_cache, base_eval_cache=a.base_eval_cache)
    print(f"[tunelab] run folder: {run_dir}")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    """Check a recipe or a sweep file (keys, types, names, files, hypotheses; every problem at once)
    without doing any work."""

    if is_sweep_file(a.recipe):
        problems = check_sweep(a.recipe)
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        if not problems:
            print(f"{a.recipe}: ok (sweep: {len(load_sweep(a.recipe).runs)} runs)")
        return 1 if problems else 0
    problems = validate(load_recipe(a.recipe, a.overrides))
    for p in problems:
        print(f"error: {a.recipe}: {p}", file=sys.stderr)
    if not problems:
        print(f"{a.recipe}: ok")
    return 1 if problems else 0


def cmd_diagnose(a: argparse.Namespace) -> int:
    """Run diagnostics on a finished run (CKA drift, weight change, linearity, forgetting ...) and update its report."""

    specs = [{"name": n} for n in a.only.split(",")] if a.only else None
    results = run_diagnostics(a.run, specs)
    print(format_diagnose(results))
    print(f"[tunelab] report: {run_report(a.run)}", file=sys.stderr)
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    """Write a run's weights as standard artefacts (peft adapter / HF checkpoint; --merge: merged HF model)."""

    try:
        print(f"[tunelab] exported to {export(a.run, a.out, a.merge)}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


COMMANDS: Commands = {
    "quickstart": (cmd_quickstart, lambda p: (
        p.add_argument("--out", default="runs", help="folder for the run folder (default: runs)"),
        p.add_argument("--force", action="store_true", help="redo even if results exist"),
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint"),
        add_overrides(p))),
    "run": (cmd_run, lambda p: (
        p.add_argument("recipe", help="recipe YAML"), add_overrides(p),
        p.add_argument("--out", help="folder for the run folder (default: recipe's `out`, else runs)"),
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint exactly"),
        p.add_argument("--force", action="store_true", help="redo even if results exist"),
        p.add_argument("--data-cache", help="folder of built data shared between runs (a sweep's)"),
        p.add_argument("--base-eval-cache", help="folder of base-model evaluations shared between runs"))),
    "validate": (cmd_validate, lambda p: (p.add_argument("recipe"), add_overrides(p))),
    "diagnose": (cmd_diagnose, lambda p: (
        p.add_argument("run", help="a finished run folder"),
        p.add_argument("--only", help="comma-separated diagnostics (default: the recipe's, else all)"))),
    "export": (cmd_export, lambda p: (
        p.add_argument("run"), p.add_argument("--out"),
        p.add_argument("--merge", action="store_true", help="fold adapters into the base weights"))),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
