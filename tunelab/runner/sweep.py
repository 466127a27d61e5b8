"""Factorial sweeps: a base recipe x factors x seeds, run once each, aggregated with statistics.

The sweep file and its runs' configs: :mod:`tunelab.runner.sweep_file` (its fields:
:mod:`tunelab.runner.sweep_fields`). :func:`run_sweep` runs the pilot first and gates on it
(:mod:`tunelab.runner.plan`), then the other runs seed by seed, as many as the budget allows
(:mod:`tunelab.runner.sweep_runs` runs and records them), and aggregates what the records hold.

Backends: ``local`` runs one ``tunelab run`` process per run, ``jobs`` at a time, each with
``cores / jobs`` threads (on 2 cores: one at a time, all threads); ``inline`` runs them one after
another in this process; ``ray`` sends them to a Ray cluster (``address``; ``pip install
'tunelab[ray]'``). Aggregation is :func:`tunelab.runner.aggregate.aggregate`; its result is
``<sweep>/sweep.json``.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.config import ConfigError
from tunelab.io import FolderLock, write_json
from tunelab.runner import plan as plan_mod
from tunelab.runner.aggregate import aggregate, format_table
from tunelab.runner.hooks import report_sweep
from tunelab.runner.pools import export_pools, import_pools, pin_pools
from tunelab.runner.sweep_file import PlannedRun, Sweep, load_sweep
from tunelab.runner.sweep_runs import run_all, sync_records

BACKENDS = ("local", "inline", "ray")


def parse_budget(text: str | None) -> float | None:
    """``50m``, ``2h``, ``90s`` or plain seconds -> seconds (None: no budget).

    Raises:
        ConfigError: Not a positive duration.
    """
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    t = str(text).strip().lower()
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise ConfigError(f"--budget: {text!r} is not a positive duration (e.g. 50m, 2h, 900s)")
    return value


def _stop_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM (a scheduler's or ``kill``'s) interrupt like Ctrl-C, so the run in progress
    stops, the finished ones are aggregated and ``--resume`` picks up; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_sweep(path: str | Path, *, jobs: int = 1, backend: str = "local", address: str | None = None,
              resume: bool = True, out: str | None = None, quiet: bool = False, records: str | None = None,
              budget: str | float | None = None, max_runs: int | None = None, accept_floor_ceiling: bool = False,
              pilot_only: bool = False) -> dict[str, Any]:
    """Run the planned runs of a sweep file not recorded yet, then aggregate; returns ``sweep.json``.

    The pilot comes first (:mod:`tunelab.runner.plan`): the baseline arm (and ``pilot_arms``) at the
    first seed; when the baseline's score on a claimed task is outside ``pilot_range`` no other run
    starts (ConfigError) unless ``accept_floor_ceiling``. Then the other runs, seed by seed (every
    arm of seed 0, then of seed 1 ...), as many as ``budget`` and ``max_runs`` allow. Every finished
    run writes its study record; a run with a checkpoint on this machine continues from it.

    Args:
        path: The sweep file.
        jobs: Runs at a time (``local`` backend).
        backend: ``local`` | ``inline`` | ``ray``.
        address: The Ray cluster (``ray://host:10001``; None starts or joins a local one).
        resume: A run with checkpoints in its folder continues from the last one (else starts over).
        out: Overrides the sweep file's ``out`` (run folders).
        quiet: No table on stdout.
        records: Overrides the sweep file's ``records`` folder.
        budget: Wall time for this call (``50m``, ``2h``, seconds): only runs expected to finish
            inside it start (estimated by :func:`tunelab.runner.plan.estimate_seconds`).
        max_runs: At most this many runs in this call.
        accept_floor_ceiling: Spend the seeds although the pilot's baseline is outside the range.
        pilot_only: Run the pilot and its gate only (``tunelab sweep pilot``).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown sweep backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    seconds = parse_budget(budget) if not isinstance(budget, (int, float)) else float(budget)
    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"--max-runs: must be at least 1, got {max_runs}")
    sweep = load_sweep(path, out, records)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(sweep.folder):  # one driver per sweep folder
        return _sweep(sweep, jobs=jobs, backend=backend, address=address, resume=resume, quiet=quiet,
                      budget=seconds, max_runs=max_runs, accept=accept_floor_ceiling, pilot_only=pilot_only)


def _sweep(sweep: Sweep, *, jobs: int, backend: str, address: str | None, resume: bool, quiet: bool,
           budget: float | None, max_runs: int | None, accept: bool, pilot_only: bool) -> dict[str, Any]:
    """The body of :func:`run_sweep`, holding the sweep folder's lock."""
    folder = sweep.folder
    status: dict[str, dict[str, Any]] = {}
    recorded = sync_records(sweep)
    if imported := import_pools(sweep.study_folder):  # the pools its recorded runs trained on
        print(f"[tunelab] generated pools from {sweep.study_folder / 'pools'}: {', '.join(imported)}", file=sys.stderr)
    for line in pin_pools(sweep.study_folder, [p.cfg for p in sweep.runs if p.name not in recorded]):
        print(f"[tunelab] {line}", file=sys.stderr)
    for name in recorded:
        status[name] = {"status": "skipped (recorded)"}
    pilots = [p for p in plan_mod.pilot_runs(sweep) if p.name not in recorded]
    rest = sorted((p for p in sweep.runs if p.name not in recorded and p not in pilots),
                  key=lambda p: (sweep.seeds.index(p.seed), sweep.runs.index(p)))
    print(f"[tunelab] sweep {sweep.name}: {len(sweep.runs)} runs ({len(sweep.runs) // len(sweep.seeds)} arms x "
          f"{len(sweep.seeds)} seeds), {len(recorded)} recorded, {len(pilots) + len(rest)} to run; runs in {folder}, "
          f"records in {sweep.records}", file=sys.stderr)
    t0 = time.perf_counter()
    stop = _stop_on_sigterm()
    refused: ConfigError | None = None
    try:
        if pilots:
            print(f"[tunelab] pilot: {', '.join(p.name for p in pilots)}", file=sys.stderr)
            run_all(sweep, pilots, backend, address, resume, jobs, status)
        refused = _pilot_gate(sweep, accept)
        todo = [] if (refused or pilot_only) else _chunk(sweep, rest, budget, max_runs)
        if todo:
            run_all(sweep, todo, backend, address, resume, jobs, status)
    finally:
        stop()
        export_pools(sweep.study_folder, sweep.recorded()[0].values())  # commit them beside the records
        result = aggregate(sweep, status)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        left = plan_mod.plan(sweep)
        result["left"] = {"runs": left["runs_left"], "seconds": left["seconds_left"]}
        write_json(folder / "sweep.json", result)
        report_sweep(result)  # registered by tunelab.report, above the runner
    if not quiet:
        print(format_table(result))
    minutes = left["seconds_left"] / 60
    print(f"[tunelab] left: {left['runs_left']} runs" + (f", about {minutes:.0f} min on this host ({left['host']})"
                                                          if left["runs_left"] and minutes == minutes else "")
          + (f"; continue with: tunelab sweep {sweep.path}" if left["runs_left"] else "; the study is complete"),
          file=sys.stderr)
    if refused:
        raise refused
    return result


def _pilot_gate(sweep: Sweep, accept: bool) -> ConfigError | None:
    """Gate on the pilot's records, write ``pilot.json`` and the plan; the refusal, if any."""
    records, _ = sweep.recorded()
    if not (sweep.hypotheses or sweep.judged) or not any(p.name in records for p in plan_mod.pilot_runs(sweep)):
        return None
    path = sweep.study_folder / "pilot.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    try:
        result = plan_mod.gate(sweep, records, accept or bool(previous.get("accepted")))
    except ConfigError as e:  # the pilot's baseline failed: nothing to gate on
        return e
    write_json(path, result)
    plan_mod.save_plan(sweep, plan_mod.plan(sweep))
    if result["outside"] and not result["accepted"]:
        return ConfigError(plan_mod.gate_message(sweep, result))
    return None


def _chunk(sweep: Sweep, todo: list[PlannedRun], budget: float | None, max_runs: int | None) -> list[PlannedRun]:
    """The runs of ``todo`` (in order) expected to finish inside ``budget`` seconds, at most ``max_runs``.

    Raises:
        ConfigError: The budget is smaller than the first run's estimate.
    """
    if max_runs is not None:
        todo = todo[:max_runs]
    if budget is None or not todo:
        return todo
    records, _ = sweep.recorded()
    estimates = plan_mod.estimate_seconds(sweep, records, plan_mod.this_host(sweep))
    chosen, total = [], 0.0
    for p in todo:
        est = estimates[p.name][0]
        if math.isnan(est):
            raise ConfigError(f"--budget: no estimate for run {p.name} ({estimates[p.name][1]})")
        if total + est > budget:
            break
        chosen.append(p)
        total += est
    if not chosen:
        raise ConfigError(f"--budget {budget / 60:.1f} min is below one run: {todo[0].name} is estimated at "
                          f"{estimates[todo[0].name][0] / 60:.1f} min on this host")
    print(f"[tunelab] budget {budget / 60:.1f} min: {len(chosen)} of {len(todo)} runs (about {total / 60:.1f} min)",
          file=sys.stderr)
    return chosen
