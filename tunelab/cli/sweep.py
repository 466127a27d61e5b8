"""``tunelab sweep`` (and ``sweep plan``, ``sweep pilot``, ``sweep judge``, ``sweep diagnose``, ``sweep report``) and ``tunelab findings``:
studies, from their plan to their section of ``docs/findings.md``."""

from __future__ import annotations

import argparse
import json
import sys

from tunelab.cli.common import Commands
from tunelab.cli.output import format_findings_written, format_sweep_done
from tunelab.config import ConfigError
from tunelab.io import write_text
from tunelab.report import findings, findings_doc
from tunelab.runner import plan as plan_mod
from tunelab.runner.judged_study import format_judge_done, judge_study
from tunelab.runner.sweep import BACKENDS as SWEEP_BACKENDS
from tunelab.runner.sweep import run_sweep
from tunelab.runner.sweep_file import load_sweep
from tunelab.runner.sweep_runs import diagnose_study


def cmd_sweep(a: argparse.Namespace) -> int:
    """Run a factorial sweep (recipe x factors x seeds) and aggregate it: per-arm CIs, tests, interactions.

    ``tunelab sweep report <sweep folder | sweep file> [--markdown]``: the study's findings from its outputs (design,
    tables, each hypothesis's paired test, power and verdict, diagnostics); written to
    ``<sweep folder>/findings.md`` too; ``--into docs/findings.md`` also replaces the study's section there
    and copies its report page to ``docs/studies/``.
    """

    if a.file in ("report", "plan", "pilot", "judge", "diagnose"):
        if not a.folder:
            raise ConfigError(f"tunelab sweep {a.file}: name the sweep file"
                              + (" (or its study folder studies/<name>, or its sweep folder)" if a.file == "report" else ""))
        return {"report": _sweep_report, "plan": _sweep_plan, "pilot": _sweep_pilot, "judge": _sweep_judge,
                "diagnose": _sweep_diagnose}[a.file](a)
    if a.folder:
        raise ConfigError(f"tunelab sweep: unexpected argument {a.folder!r} (did you mean `tunelab sweep report`?)")
    result = run_sweep(a.file, jobs=a.jobs, backend=a.backend, address=a.address, resume=not a.restart, out=a.out,
                       quiet=a.json, records=a.records, budget=a.budget, max_runs=a.max_runs,
                       accept_floor_ceiling=a.accept_floor_ceiling)
    if a.json:
        print(json.dumps(result, indent=2, default=str))
    print(format_sweep_done(result), file=sys.stderr)
    return 1 if any(r["status"] == "failed" for r in result["runs"].values()) else 0


def _sweep_report(a: argparse.Namespace) -> int:
    """``tunelab sweep report``: the study's findings from its records; ``<study folder>/findings.md``."""
    study = findings.report(a.folder, a.records)
    text = findings_doc.markdown(study)
    write_text(study["_sweep"].study_folder / "findings.md", text)
    if a.json:
        print(json.dumps({k: v for k, v in study.items() if not k.startswith("_")}, indent=2, default=str))
    else:
        print(text if a.markdown else findings_doc.summary(study) + "\n", end="")
    print(f"[tunelab] {study['_sweep'].study_folder / 'findings.md'}", file=sys.stderr)
    return 0


def _sweep_plan(a: argparse.Namespace) -> int:
    """``tunelab sweep plan``: runs, minutes on this host, detectable effect per claim; saved as plan.json
    until runs beyond the pilot are recorded."""
    sweep = load_sweep(a.folder, a.out, a.records)
    the_plan = plan_mod.plan(sweep)
    saved = plan_mod.save_plan(sweep, the_plan)
    if a.json:
        print(json.dumps(the_plan, indent=2, default=str))
    else:
        print(plan_mod.format_plan(the_plan))
    path = sweep.study_folder / "plan.json"
    print(f"[tunelab] plan saved to {path}" if saved else
          f"[tunelab] plan frozen (results beyond the pilot are recorded): {path}" if path.is_file() else
          "[tunelab] plan not saved: results beyond the pilot are already recorded (the study's own or shared), "
          "and a plan made after them would not be one", file=sys.stderr)
    return 0


def _sweep_pilot(a: argparse.Namespace) -> int:
    """``tunelab sweep pilot``: the baseline arm (and ``pilot_arms``) at the first seed, recorded, then the
    floor/ceiling gate (exit 3 when refused)."""
    try:
        run_sweep(a.folder, jobs=a.jobs, backend=a.backend, address=a.address, resume=not a.restart, out=a.out,
                  quiet=True, records=a.records, accept_floor_ceiling=a.accept_floor_ceiling, pilot_only=True)
    except ConfigError as e:
        if "pilot's baseline is outside" not in str(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 3
    sweep = load_sweep(a.folder, a.out, a.records)
    pilot = json.loads((sweep.study_folder / "pilot.json").read_text()) if (
        sweep.study_folder / "pilot.json").is_file() else {}
    print(json.dumps(pilot, indent=1))
    return 0


def _sweep_judge(a: argparse.Namespace) -> int:
    """``tunelab sweep judge``: the ``judged:`` claims' arms compared by the judge, seed by seed, from the
    records; written to ``<study folder>/judged/`` (resumable)."""
    sweep = load_sweep(a.folder, a.out, a.records)
    result = judge_study(sweep, judge_spec=a.judge, limit=a.limit,
                         say=lambda m: print(m, file=sys.stderr))
    if a.json:
        print(json.dumps(result, indent=2))
    print(format_judge_done(result), file=sys.stderr)
    return 0


def _sweep_diagnose(a: argparse.Namespace) -> int:
    """``tunelab sweep diagnose FILE --only NAMES``: diagnostics added to a study's finished runs whose folders
    are on this machine, their records written again (:func:`tunelab.runner.sweep_runs.diagnose_study`)."""
    if not a.only:
        raise ConfigError("tunelab sweep diagnose: name the diagnostics with --only (e.g. --only weight_change)")
    sweep = load_sweep(a.folder, a.out, a.records)
    result = diagnose_study(sweep, [n.strip() for n in a.only.split(",") if n.strip()],
                            say=lambda m: print(m, file=sys.stderr))
    if a.json:
        print(json.dumps(result, indent=2))
    print(f"[tunelab] {sweep.name}: {len(result['diagnosed'])} runs diagnosed, {len(result['complete'])} already "
          f"had them, {len(result['no_folder'])} without a run folder on this machine (trained elsewhere: not "
          f"diagnosed), {len(result['shared'])} shared from another study, {len(result['failed'])} failed"
          + "".join(f"\n  {run}: {errors}" for run, errors in result["failed"].items()), file=sys.stderr)
    return 1 if result["no_folder"] or result["failed"] else 0


def cmd_findings(a: argparse.Namespace) -> int:
    """Write docs/findings.md: every study's section (question, design, plan, pilot, arms with CIs, claims
    with verdicts, diagnostics, hosts) from its committed records under STUDIES; never edit it by hand."""

    doc, names = findings_doc.write_findings(a.studies, a.out, pages=not a.no_pages)
    print(format_findings_written(doc, names))
    return 0


COMMANDS: Commands = {
    "sweep": (cmd_sweep, lambda p: (
        p.add_argument("file", help="sweep YAML (question, hypotheses, recipe, factors, seeds, baseline); "
                                    "or `plan FILE`, `pilot FILE`, `judge FILE`, `diagnose FILE --only NAMES`, "
                                    "`report FILE|STUDY|FOLDER`"),
        p.add_argument("folder", nargs="?", help="with plan/pilot/judge/diagnose/report: the sweep file (report: or its study "
                                                 "folder studies/<name>, or its sweep folder)"),
        p.add_argument("--judge", help="with `judge`: the judge (a model, run folder or http://host:port/v1#model; "
                                       "default: the file's judged.judge)"),
        p.add_argument("--only", help="with `diagnose`: comma-separated diagnostics to add to the study's finished "
                                      "runs (`tunelab ls diagnostics`)"),
        p.add_argument("--limit", type=int, help="with `judge`: at most this many items per pair (a quick look)"),
        p.add_argument("--markdown", action="store_true", help="with `report`: print the findings.md section"),
        p.add_argument("--budget", help="wall time for this call (50m, 2h, 900s): start only the runs expected "
                                        "to finish inside it (estimated from recorded runs on this host)"),
        p.add_argument("--max-runs", type=int, help="at most this many runs in this call"),
        p.add_argument("--records", help="the study's records folder (default: the file's `records`, else "
                                         "studies/<name>/records under the current directory)"),
        p.add_argument("--accept-floor-ceiling", action="store_true",
                       help="spend the seeds although the pilot's baseline is outside pilot_range (said in the "
                            "findings)"),
        p.add_argument("--jobs", type=int, default=1, help="runs at a time (local backend)"),
        p.add_argument("--backend", default="local", choices=SWEEP_BACKENDS,
                       help="local: a process per run; inline: in this process; ray: a Ray cluster"),
        p.add_argument("--address", help="Ray cluster address (ray://host:10001); default: local"),
        p.add_argument("--resume", action="store_true", help="(the default) interrupted runs continue from "
                                                             "their checkpoint where this machine has one"),
        p.add_argument("--restart", action="store_true", help="interrupted runs start over"),
        p.add_argument("--out", help="folder for the sweep's run folders (default: the file's `out`)"),
        p.add_argument("--json", action="store_true", help="print sweep.json (plan: the plan) on stdout"))),
    "findings": (cmd_findings, lambda p: (
        p.add_argument("studies", nargs="?", default="studies", help="the studies folder (default: studies)"),
        p.add_argument("--out", default="docs/findings.md", help="the document (default: docs/findings.md)"),
        p.add_argument("--no-pages", action="store_true", help="do not write docs/studies/<study>.html"))),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
