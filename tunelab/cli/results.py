"""``tunelab report``, ``regimes`` and ``compare``: what finished runs and sweeps show, written again or
compared."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tunelab.cli.common import Commands
from tunelab.cli.output import format_compare
from tunelab.config import ConfigError, is_run
from tunelab.eval.regimes import format_regimes, format_sweep_regimes, sweep_regime_table
from tunelab.io import DataError
from tunelab.report.run_report import run_report, sweep_report
from tunelab.runner.compare import compare_runs
from tunelab.runner.judged import format_judged, judge_runs
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


def _with_people(result: dict, runs: list[str], root: str) -> None:
    """Add to each judged pair the judge calibrated on people's blind ratings of it (``tunelab ui``'s
    database under ``root``; PPI on the second run's win rate); a pair nobody rated is left as is."""
    from tunelab.ui import Catalog, calibrate

    catalog = Catalog(root)
    rel = {}
    for r in runs:
        if catalog.root not in Path(r).resolve().parents:
            raise ConfigError(f"--ratings {root}: run {r} is not under it (people rate the runs of the ui's folder)")
        rel[Path(r).name] = str(Path(r).resolve().relative_to(catalog.root))
    for pair in result["pairs"]:
        a, b = rel[pair["a"]], rel[pair["b"]]
        if not catalog.ratings(a, b, result["task"]):
            continue
        judge = {v["id"]: v["winner"] for v in pair["verdicts"] if v["winner"] != "error"}
        pair["human"] = calibrate(catalog, a, b, result["task"], judge, result["judge"])
        pair["self_preference"] = pair["human"].pop("self_preference")


def cmd_judge(a: argparse.Namespace) -> int:
    """An LLM judge compares finished runs' answers pair by pair: raw and length-controlled win rates,
    the judge's position, length and self-preference biases, Bradley-Terry scores for three runs or
    more, and with --ratings the judge calibrated on people's blind ratings (PPI)."""
    from tunelab.generate.build import build_generator
    from tunelab.io import write_json

    judge = build_generator(a.judge, progress=False, batch_size=a.batch_size)
    result = judge_runs(a.runs, a.task, judge, a.judge, limit=a.limit, gold=a.gold, seed=a.seed, verdict=a.verdict,
                        say=lambda m: print(m, file=sys.stderr, flush=True))
    if a.ratings:
        _with_people(result, a.runs, a.ratings)
    if a.out:
        write_json(Path(a.out), result)
    print(json.dumps(result, indent=2, default=str) if a.json else format_judged(result))
    return 0


def _judge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="two or more run folders with an evaluation of --task")
    p.add_argument("--task", required=True, help="the evaluation task whose answers are judged")
    p.add_argument("--judge", required=True, help="the judge: a model alias, folder, run, hub id or "
                                                   "http://host:port/v1#model")
    p.add_argument("--limit", type=int, default=None, help="at most this many common items per pair")
    p.add_argument("--batch-size", type=int, default=16, help="judge prompts generated at once")
    p.add_argument("--verdict", choices=["text", "logprob"], default="text",
                   help="text: the judge writes a justification and a verdict; logprob: a local judge's most likely "
                        "verdict, asked for it alone (a small model that never writes the format still gives one)")
    p.add_argument("--ratings", default=None, help="a tunelab ui folder whose ratings.sqlite holds people's "
                                                   "blind ratings of these runs (PPI)")
    p.add_argument("--gold", type=int, default=0, help="calibrate the judge on the task's verifier: this many "
                                                        "items drawn at random get their gold winner (PPI)")
    p.add_argument("--seed", type=int, default=0, help="the draw of the --gold items")
    p.add_argument("--out", default=None, help="write the whole result (every verdict) as JSON here")
    p.add_argument("--json", action="store_true")


COMMANDS: Commands = {
    "report": (cmd_report, lambda p: p.add_argument("folder", help="a run folder or a sweep folder")),
    "regimes": (cmd_regimes, lambda p: (p.add_argument("folder", help="a run folder or a sweep folder"),
                                        p.add_argument("--json", action="store_true"))),
    "judge": (cmd_judge, _judge_args),
    "compare": (cmd_compare, lambda p: (
        p.add_argument("run_a"), p.add_argument("run_b"), p.add_argument("--json", action="store_true"))),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
