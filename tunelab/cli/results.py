"""``tunelab report``, ``regimes`` and ``compare``: what finished runs and sweeps show, written again or
compared."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunelab.cli.common import Commands
from tunelab.cli.output import format_compare
from tunelab.config import is_run
from tunelab.eval.regimes import format_regimes, format_sweep_regimes, sweep_regime_table
from tunelab.io import DataError
from tunelab.report.run_report import run_report, sweep_report
from tunelab.runner.compare import compare_runs
from tunelab.runner.run import load_results


def cmd_report(a: argparse.Namespace) -> int:
    """Write (again) the self-contained report.html of a run folder or a sweep folder; prints its path."""

    folder = Path(a.folder)
    if (folder / "sweep.json").is_file():
        path = sweep_report(json.loads((folder / "sweep.json").read_text()))
    elif is_run(folder, need="config"):
        path = run_report(folder)
    else:
        raise DataError(f"{folder}: not a run folder (no config.yaml) or a sweep folder (no sweep.json)")
    print(path)
    return 0


def cmd_regimes(a: argparse.Namespace) -> int:
    """The prompt-regime table of a run or a sweep folder: accuracy with CIs, paired tests, input tokens
    and seconds per item in the full / compressed / query-only regimes (PromptIntern)."""

    folder = Path(a.folder)
    if (folder / "sweep.json").is_file():
        table = sweep_regime_table(folder)
        (folder / "regimes.json").write_text(json.dumps(table, indent=2, default=str))
        text = format_sweep_regimes(table) + f"\n[tunelab] written: {folder / 'regimes.json'}"
    elif is_run(folder, need="results"):
        table = load_results(folder)["run"].get("regimes", {})
        text = "\n".join(format_regimes(t, f"{'untrained' if w == 'base' else 'fine-tuned'} model:")
                         for w, t in table.items()) or "no prompt-regime tasks in this run"
    else:
        raise DataError(f"{folder}: not a run folder (no results.json) or a sweep folder (no sweep.json)")
    print(json.dumps(table, indent=2, default=str) if a.json else text)
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    """Paired statistics between two runs (joins per-item results by id)."""

    out = compare_runs(a.run_a, a.run_b)
    print(json.dumps(out, indent=2) if a.json else format_compare(out))
    return 0


COMMANDS: Commands = {
    "report": (cmd_report, lambda p: p.add_argument("folder", help="a run folder or a sweep folder")),
    "regimes": (cmd_regimes, lambda p: (p.add_argument("folder", help="a run folder or a sweep folder"),
                                        p.add_argument("--json", action="store_true"))),
    "compare": (cmd_compare, lambda p: (
        p.add_argument("run_a"), p.add_argument("run_b"), p.add_argument("--json", action="store_true"))),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
