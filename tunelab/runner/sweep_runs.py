"""Running a sweep's planned runs and recording them: in this process (``inline``), as ``tunelab run``
processes (``local``, ``jobs`` at a time, each with ``cores / jobs`` threads) or as Ray tasks (``ray``).

A failed run is recorded and the others go on; a run with a checkpoint on this machine continues from
it; every finished run writes its study record (:mod:`tunelab.runner.records`), and ``study.json``
names the sweep file the records belong to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tunelab.config import ConfigError, dump_yaml, is_run
from tunelab.diagnostics import DIAGNOSTICS, run_diagnostics
from tunelab.io import write_json
from tunelab.runner.records import build_record, write_record
from tunelab.runner.run import run
from tunelab.runner.sweep_file import PlannedRun, Sweep


def resumable(planned: PlannedRun, resume: bool) -> bool:
    """Continue the run from a checkpoint: asked for, and this machine has one (else start over)."""
    checkpoints = Path(planned.cfg.out) / planned.name / "checkpoints"
    return resume and checkpoints.is_dir() and any(checkpoints.glob("step-*"))


def _run_inline(planned: PlannedRun, folder: Path, resume: bool) -> None:
    """One run in this process."""
    resume = resumable(planned, resume)
    run(planned.cfg, force=not resume, resume=resume, quiet=True, data_cache=folder / "cache" / "data",
        base_eval_cache=folder / "cache" / "base_eval")


def _run_process(planned: PlannedRun, folder: Path, resume: bool, threads: int) -> None:
    """One run as a ``tunelab run`` process (its output in ``<sweep>/logs/<run>.txt``)."""
    resume = resumable(planned, resume)
    recipe = folder / "recipes" / f"{planned.name}.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)
    planned.cfg.train.threads = planned.cfg.train.threads or threads
    recipe.write_text(dump_yaml(planned.cfg))
    log_path = folder / "logs" / f"{planned.name}.txt"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "tunelab.cli", "run", str(recipe), "--data-cache", str(folder / "cache" / "data"),
           "--base-eval-cache", str(folder / "cache" / "base_eval")] + (["--resume"] if resume else ["--force"])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with log_path.open("a") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        tail = log_path.read_text().strip().splitlines()[-3:]
        raise RuntimeError(f"tunelab run exited {code}: " + " | ".join(tail))


def _ray_runner(address: str | None) -> Callable[[list[PlannedRun], Path, bool], dict[str, str | None]]:
    """A function that runs planned runs as Ray tasks and returns {name: error or None}."""
    try:  # ray is an optional extra (a heavy dependency): imported only for this backend
        import ray
    except ImportError as e:
        raise ConfigError("the ray backend needs ray: pip install 'tunelab[ray]'") from e

    def remote_run(planned: PlannedRun, folder: Path, resume: bool) -> str | None:
        try:
            _run_inline(planned, folder, resume)
            return None
        except Exception as e:  # noqa: BLE001 - recorded per run
            return f"{type(e).__name__}: {e}"

    def run_all(todo: list[PlannedRun], folder: Path, resume: bool) -> dict[str, str | None]:
        started = not ray.is_initialized()
        if started:
            env = {k: v for k, v in os.environ.items() if k.startswith(("TUNELAB_", "HF_"))}
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False,
                     runtime_env={"env_vars": env, "working_dir": None} if env else None)
        task = ray.remote(num_cpus=1)(remote_run)
        refs = {task.remote(p, folder, resume): p.name for p in todo}
        out: dict[str, str | None] = {}
        with tqdm(total=len(refs), desc="sweep (ray)", unit="run") as bar:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                out[refs[done[0]]] = ray.get(done[0])
                bar.update(1)
        return out

    return run_all


def run_all(sweep: Sweep, todo: list[PlannedRun], backend: str, address: str | None, resume: bool, jobs: int,
             status: dict[str, dict[str, Any]]) -> None:
    """Run ``todo`` on the backend; each finished run writes its study record."""
    def done(p: PlannedRun) -> None:
        record_run(sweep, p)

    if backend == "ray":
        for name, err in _ray_runner(address)(todo, sweep.folder, resume).items():
            status[name] = {"status": "failed", "error": err} if err else {"status": "done"}
            if not err:
                done(next(p for p in todo if p.name == name))
    else:
        execute(todo, sweep.folder, resume, jobs if backend == "local" else 0, status, done)


def execute(todo: list[PlannedRun], folder: Path, resume: bool, jobs: int,
             status: dict[str, dict[str, Any]], done: Callable[[PlannedRun], None] = lambda p: None) -> None:
    """Run ``todo`` inline (``jobs`` 0) or as ``jobs`` processes at a time, recording each outcome
    (``done`` is called on each run that finished)."""
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))

    def one(p: PlannedRun) -> None:
        if jobs:
            _run_process(p, folder, resume, threads)
        else:
            _run_inline(p, folder, resume)

    def record(p: PlannedRun, error: BaseException | None) -> None:
        if error is None:
            status[p.name] = {"status": "done"}
            done(p)
        else:
            status[p.name] = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            print(f"[tunelab] run {p.name} failed: {error}", file=sys.stderr)
            if not jobs:
                traceback.print_exception(error, file=sys.stderr)

    with tqdm(total=len(todo), desc="sweep", unit="run") as bar:
        if jobs <= 1:
            for p in todo:
                try:
                    one(p)
                    record(p, None)
                except Exception as e:  # noqa: BLE001 - a failed run is recorded, the sweep goes on
                    record(p, e)
                bar.update(1)
            return
        with ThreadPoolExecutor(jobs) as pool:
            futures = {pool.submit(one, p): p for p in todo}
            for fut in as_completed(futures):
                record(futures[fut], fut.exception())
                bar.update(1)


def finished(planned: PlannedRun) -> bool:
    """Whether the run's results exist in its run folder (this machine)."""
    return is_run(Path(planned.cfg.out) / planned.name, need="results")


def record_run(sweep: Sweep, planned: PlannedRun) -> dict[str, Any]:
    """Write the study record of a finished run (:mod:`tunelab.runner.records`); returns the record."""
    record = build_record(sweep.name, Path(planned.cfg.out) / planned.name, arm=planned.arm.levels,
                          seed=planned.seed, config=planned.cfg, config_digest=planned.digest)
    write_record(sweep.records, record)
    return record


def write_study(sweep: Sweep) -> None:
    """``<study>/study.json``: the sweep file the records belong to (relative to the study folder), so
    ``tunelab findings studies/`` finds every study's design."""
    path = sweep.study_folder / "study.json"
    rel = Path(os.path.relpath(sweep.path.resolve(), sweep.study_folder)).as_posix()
    if not path.is_file() or json.loads(path.read_text()).get("sweep_file") != rel:
        write_json(path, {"study": sweep.name, "sweep_file": rel})


def sync_records(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """Record every finished run folder of the sweep that has no record yet; returns the study's
    records (stale ones left out, and said)."""
    write_study(sweep)
    found, stale = sweep.recorded()
    for p in sweep.runs:
        if p.name not in found and finished(p):
            found[p.name] = record_run(sweep, p)
    for line in stale:
        print(f"[tunelab] {line}", file=sys.stderr)
    return found


def diagnose_study(sweep: Sweep, names: list[str], say: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Diagnostics added after a study's runs (``tunelab sweep diagnose FILE --only weight_change``): each
    recorded run of this study whose record lacks one of ``names`` (or holds it as an error) and whose
    finished run folder (``final/`` weights) is on this machine gets them (``<run>/diagnostics/<name>.json``),
    and its record gains the results: only ``diagnostics`` changes (and ``diagnosed_after``, each added
    diagnostic's seconds, kept apart from the run's own ``seconds`` so time estimates stay the training
    run's); nothing else is rebuilt. Resumable: a run whose record has every one is skipped.

    Returns ``{"diagnosed", "complete", "no_folder", "shared": [run names], "failed": {run: errors}}``:
    ``no_folder`` runs were trained on another machine and cannot be diagnosed here; ``shared`` ones are
    another study's records (diagnose that study); a failed diagnostic leaves the record as it was.
    """
    unknown = [n for n in names if n not in DIAGNOSTICS.names()]
    if unknown or not names:
        raise ConfigError(f"tunelab sweep diagnose: unknown diagnostic(s) {', '.join(unknown) or '(none named)'}; "
                          f"valid: {', '.join(DIAGNOSTICS.names())}")
    found, _ = sweep.recorded()
    out: dict[str, Any] = {"diagnosed": [], "complete": [], "no_folder": [], "shared": [], "failed": {}}
    for p in sweep.runs:
        record = found.get(p.name)
        if record is None:
            continue
        if "shared_from" in record:
            out["shared"].append(p.name)
            continue
        have = record.get("diagnostics", {})
        missing = [n for n in names if not isinstance(have.get(n), dict) or "error" in have[n]]
        if not missing:
            out["complete"].append(p.name)
            continue
        run_dir = Path(p.cfg.out) / p.name
        if not is_run(run_dir, need="final"):
            out["no_folder"].append(p.name)
            continue
        say(f"[tunelab] {p.name}: {', '.join(missing)}")
        results = run_diagnostics(run_dir, [{"name": n} for n in missing], say=say)
        done = {n: r for n, r in results.items() if "error" not in r}
        if failed := {n: r["error"] for n, r in results.items() if "error" in r}:
            out["failed"][p.name] = failed
        if done:
            record["diagnostics"] = {**have, **done}
            record["diagnosed_after"] = {**record.get("diagnosed_after", {}),
                                         **{n: r.get("seconds", 0.0) for n, r in done.items()}}
            write_record(sweep.records, record)
            out["diagnosed"].append(p.name)
    return out
