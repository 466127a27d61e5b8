"""Factorial sweeps: a base recipe x factors x seeds, run once each, aggregated with statistics.

A sweep file (YAML)::

    recipe: ../tiny.yaml                 # the base recipe (relative to this file)
    overrides: [train.max_steps=20]      # optional, applied to every run
    factors:                             # the grid: every combination of levels is an arm
      rank: {method.r: [4, 16]}          # one key, one level per value
      vld:                               # named levels; a level may set several keys together
        off: {regularizers: []}
        on: {regularizers: [{name: very_large_dropout, p: 0.9}]}
      lr_warmup: {train.lr: [1.0e-3, 3.0e-4], train.warmup_ratio: [0.0, 0.1]}   # paired: vary together
    seeds: 3                             # replicates: train.seed = 0, 1, 2 (or a list of seeds)
    baseline: {rank: 4, vld: off}        # the arm the others are tested against (default: first levels)
    out: runs/sweeps                     # the sweep folder is <out>/<name>

Every run's config is resolved and validated before any run starts (an unknown key, an empty
factor or a factor naming no recipe key fails, naming it). Runs are named from their resolved
config (``<arm>-seed<k>-<hash>``): a finished run is never redone; with ``resume`` an interrupted
one continues from its last checkpoint. A failed run is recorded and the sweep goes on. Runs share
the built data and the base model's evaluations (:mod:`tunelab.runner.cache`).

Backends: ``local`` runs one ``tunelab run`` process per run, ``jobs`` at a time, each with
``cores / jobs`` threads (on 2 cores: one at a time, all threads); ``inline`` runs them one after
another in this process; ``ray`` sends them to a Ray cluster (``address``; ``pip install
'tunelab[ray]'``). Aggregation is :func:`tunelab.runner.aggregate.aggregate`; its result is
``<sweep>/sweep.json``.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from tunelab.config import ConfigError, RunConfig, apply_override, dump_yaml, from_dict
from tunelab.io import FolderLock, write_json
from tunelab.runner.aggregate import aggregate, format_table
from tunelab.runner.report import sweep_report
from tunelab.runner.run import config_digest, run
from tunelab.runner.validate import validate

SWEEP_KEYS = ("name", "recipe", "overrides", "factors", "seeds", "seed_key", "baseline", "out", "question",
              "hypotheses")
HYPOTHESIS_KEYS = ("claim", "task", "arm", "versus", "direction", "effect", "source")
BACKENDS = ("local", "inline", "ray")


@dataclass
class Arm:
    """One combination of factor levels."""

    levels: dict[str, str]
    """factor -> level label."""
    settings: dict[str, Any]
    """recipe key -> value, all factors together."""

    @property
    def label(self) -> str:
        """``factor=level`` pairs, e.g. ``rank=4,vld=off``."""
        return ",".join(f"{f}={lv}" for f, lv in self.levels.items())


@dataclass
class PlannedRun:
    """One run of the sweep: an arm and a seed, with its resolved config."""

    arm: Arm
    seed: int
    cfg: RunConfig
    name: str


@dataclass
class Sweep:
    """A parsed, validated sweep file."""

    name: str
    path: Path
    out: Path
    factors: dict[str, dict[str, dict[str, Any]]]
    """factor -> level label -> recipe key -> value."""
    seeds: list[int]
    baseline: dict[str, str]
    runs: list[PlannedRun] = field(default_factory=list)
    question: str = ""
    """What the study asks (``tunelab sweep report`` prints it)."""
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    """Findings under test: ``{claim, task, arm, versus, direction, effect, source}`` (see
    :func:`tunelab.runner.findings.hypotheses`)."""

    @property
    def folder(self) -> Path:
        """``<out>/<name>``: runs, caches and ``sweep.json``."""
        return self.out / self.name


def _label(value: Any) -> str:
    """A level label for a value (compact YAML for lists and mappings)."""
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return str(value)


def _levels(where: str, name: str, spec: Any) -> dict[str, dict[str, Any]]:
    """A factor's levels (label -> {key: value}) from its three accepted forms."""
    if isinstance(spec, list):  # a list of {key: value} levels
        if not spec or not all(isinstance(lv, dict) and lv for lv in spec):
            raise ConfigError(f"{where}: factor {name!r} must list at least one level, each a mapping of keys")
        return {",".join(_label(v) for v in lv.values()): dict(lv) for lv in spec}
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(f"{where}: factor {name!r} is empty; give {{key: [values]}} or named levels")
    if all(isinstance(v, list) for v in spec.values()):  # {key: [values], ...}: paired keys
        lengths = {len(v) for v in spec.values()}
        if lengths == {0}:
            raise ConfigError(f"{where}: factor {name!r} is empty (no values)")
        if len(lengths) != 1:
            raise ConfigError(f"{where}: factor {name!r}: paired keys need as many values each, got "
                              + ", ".join(f"{k}: {len(v)}" for k, v in spec.items()))
        n = lengths.pop()
        return {",".join(_label(spec[k][i]) for k in spec): {k: spec[k][i] for k in spec} for i in range(n)}
    if all(isinstance(v, dict) for v in spec.values()):  # {label: {key: value}}
        return {str(label): dict(lv) for label, lv in spec.items()}
    raise ConfigError(f"{where}: factor {name!r}: give {{key: [values]}} (paired keys vary together) "
                      "or named levels {label: {key: value}}")


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted recipe key to a Python value (as an override would)."""
    apply_override(tree, f"{key}={json.dumps(value)}")


def _run_name(arm: Arm, seed: int, cfg: RunConfig) -> str:
    """``<arm>-seed<k>-<hash of the resolved config>``, safe as a folder name."""
    digest = config_digest(cfg, skip=("out", "name"))
    slug = "".join(c if c.isalnum() or c in "=.-_" else "_" for c in arm.label.replace(",", "__"))
    return f"{slug[:80]}-seed{seed}-{digest}"


def load_sweep(path: str | Path, out: str | None = None) -> Sweep:
    """Parse a sweep file and resolve and validate every run's config (before any work).

    Raises:
        ConfigError: naming the sweep file and the key, factor or run that is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: a sweep file must be a mapping of keys")
    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(SWEEP_KEYS)}")
    if "recipe" not in spec:
        raise ConfigError(f"{path}: 'recipe' (the base recipe file) is required")
    recipe = (path.parent / spec["recipe"]).resolve()
    if not recipe.is_file():
        raise ConfigError(f"{path}: recipe: {recipe} not found")
    factors_spec = spec.get("factors") or {}
    if not isinstance(factors_spec, dict) or not factors_spec:
        raise ConfigError(f"{path}: 'factors' must name at least one factor")
    factors = {str(name): _levels(str(path), str(name), f) for name, f in factors_spec.items()}
    seeds = spec.get("seeds", 1)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: 'seeds' must be a positive count or a list of integer seeds")
    baseline = {f: str((spec.get("baseline") or {}).get(f, next(iter(levels))))
                for f, levels in factors.items()}
    for f in (spec.get("baseline") or {}):
        if f not in factors:
            raise ConfigError(f"{path}: baseline: {f!r} is not a factor ({', '.join(factors)})")
        if baseline[f] not in factors[f]:
            raise ConfigError(f"{path}: baseline: {f}={baseline[f]!r} is not a level ({', '.join(factors[f])})")
    sweep = Sweep(str(spec.get("name") or path.stem), path, Path(out or spec.get("out") or "runs/sweeps").resolve(),
                  factors, seeds, baseline, question=str(spec.get("question") or "").strip(),
                  hypotheses=_hypotheses(path, spec.get("hypotheses"), factors, baseline))
    base_tree = yaml.safe_load(recipe.read_text()) or {}
    for ov in spec.get("overrides") or []:
        apply_override(base_tree, ov)
    seed_key = spec.get("seed_key", "train.seed")
    for combo in itertools.product(*[list(levels.items()) for levels in factors.values()]):
        arm = Arm({f: label for f, (label, _) in zip(factors, combo)},
                  {k: v for _, lv in combo for k, v in lv.items()})
        for seed in seeds:
            sweep.runs.append(_plan(sweep, arm, seed, base_tree, recipe, seed_key))
    return sweep


def _hypotheses(path: Path, spec: Any, factors: dict[str, dict[str, Any]], baseline: dict[str, str]
                ) -> list[dict[str, Any]]:
    """The validated ``hypotheses`` list: each names a task, an arm (``factor=level,...`` or a mapping
    ``{factor: level}``, for labels with commas; missing
    factors take the baseline's level), what it is compared with (default: the baseline arm), the
    predicted direction (``better``, ``worse`` or ``equal``) and optionally the claimed effect size."""
    out = []
    for i, h in enumerate(spec or []):
        where = f"{path}: hypotheses[{i}]"
        if not isinstance(h, dict):
            raise ConfigError(f"{where}: must be a mapping with keys {', '.join(HYPOTHESIS_KEYS)}")
        unknown = sorted(set(h) - set(HYPOTHESIS_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(HYPOTHESIS_KEYS)}")
        for key in ("claim", "task", "arm"):
            if not h.get(key):
                raise ConfigError(f"{where}: {key!r} is required")
        if h.get("direction", "better") not in ("better", "worse", "equal"):
            raise ConfigError(f"{where}: direction: {h['direction']!r} is not better, worse or equal")
        arms = {}
        for key in ("arm", "versus"):
            levels, given = dict(baseline), h.get(key) or {}
            if isinstance(given, dict):
                pairs = [(str(f), str(lv)) for f, lv in given.items()]
            else:
                pairs = [(f.strip(), lv.strip()) for f, _, lv in (p.partition("=") for p in str(given).split(","))
                         if f.strip()]
            for f, lv in pairs:
                part = f"{f}={lv}"
                if f not in factors or lv not in factors[f]:
                    raise ConfigError(f"{where}: {key}: {part!r} is not factor=level "
                                      f"(factors: {', '.join(f'{k}: {list(v)}' for k, v in factors.items())})")
                levels[f] = lv
            arms[key] = ",".join(f"{f}={lv}" for f, lv in levels.items())
        effect = h.get("effect")
        if effect is not None and (not isinstance(effect, (int, float)) or isinstance(effect, bool) or effect <= 0):
            raise ConfigError(f"{where}: effect: must be a positive number (the claimed difference on the task's "
                              f"metric), got {effect!r}")
        if h.get("direction") == "equal" and effect is None:
            raise ConfigError(f"{where}: direction: equal needs 'effect', the equivalence margin (a positive number "
                              "on the task's metric: the largest difference that still counts as equal)")
        out.append({"claim": str(h["claim"]), "task": str(h["task"]), "arm": arms["arm"], "versus": arms["versus"],
                    "direction": h.get("direction", "better"), "effect": effect, "source": str(h.get("source", ""))})
    return out


def _plan(sweep: Sweep, arm: Arm, seed: int, base_tree: dict, recipe: Path, seed_key: str) -> PlannedRun:
    """Resolve and validate one run's config."""
    tree = copy.deepcopy(base_tree)
    for key, value in {**arm.settings, seed_key: seed}.items():
        try:
            _set(tree, key, value)
        except (ConfigError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise ConfigError(f"{sweep.path}: arm {arm.label}: key {key!r}: {e}") from None
    try:
        cfg = from_dict(RunConfig, tree)
    except ConfigError as e:
        raise ConfigError(f"{sweep.path}: arm {arm.label}: {e}") from None
    cfg.recipe_dir = str(recipe.parent)
    problems = validate(cfg)
    if problems:
        raise ConfigError(f"{sweep.path}: arm {arm.label}, seed {seed}: " + "; ".join(problems))
    cfg.out = str(sweep.folder / "runs")
    name = _run_name(arm, seed, cfg)
    cfg.name = name
    return PlannedRun(arm, seed, cfg, name)


# ----------------------------------------------------------------------------- execution


def _run_inline(planned: PlannedRun, folder: Path, resume: bool) -> None:
    """One run in this process."""
    run(planned.cfg, resume=resume, quiet=True, data_cache=folder / "cache" / "data",
        base_eval_cache=folder / "cache" / "base_eval")


def _run_process(planned: PlannedRun, folder: Path, resume: bool, threads: int) -> None:
    """One run as a ``tunelab run`` process (its output in ``<sweep>/logs/<run>.txt``)."""
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


def _finished(planned: PlannedRun) -> bool:
    """Whether the run's results exist."""
    return (Path(planned.cfg.out) / planned.name / "results.json").is_file()


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
              resume: bool = False, out: str | None = None, quiet: bool = False) -> dict[str, Any]:
    """Run every planned run of a sweep file not finished yet, then aggregate; returns ``sweep.json``.

    Args:
        path: The sweep file.
        jobs: Runs at a time (``local`` backend).
        backend: ``local`` | ``inline`` | ``ray``.
        address: The Ray cluster (``ray://host:10001``; None starts or joins a local one).
        resume: Interrupted runs continue from their last checkpoint (else they start over).
        out: Overrides the sweep file's ``out``.
        quiet: No table on stdout.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown sweep backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    sweep = load_sweep(path, out)
    sweep.folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(sweep.folder):  # one driver per sweep folder
        return _sweep(sweep, jobs=jobs, backend=backend, address=address, resume=resume, quiet=quiet)


def _sweep(sweep: Sweep, *, jobs: int, backend: str, address: str | None, resume: bool, quiet: bool
           ) -> dict[str, Any]:
    """The body of :func:`run_sweep`, holding the sweep folder's lock."""
    folder = sweep.folder
    status: dict[str, dict[str, Any]] = {}
    todo = []
    for p in sweep.runs:
        if _finished(p):
            status[p.name] = {"status": "skipped (finished)"}
        else:
            todo.append(p)
    print(f"[tunelab] sweep {sweep.name}: {len(sweep.runs)} runs ({len(sweep.runs) // len(sweep.seeds)} arms x "
          f"{len(sweep.seeds)} seeds), {len(sweep.runs) - len(todo)} finished, {len(todo)} to run; {folder}",
          file=sys.stderr)
    t0 = time.perf_counter()
    stop = _stop_on_sigterm()
    try:
        if backend == "ray":
            for name, err in _ray_runner(address)(todo, folder, resume).items():
                status[name] = {"status": "failed", "error": err} if err else {"status": "done"}
        else:
            _execute(todo, folder, resume, jobs if backend == "local" else 0, status)
    finally:
        stop()
        result = aggregate(sweep, status)
        result["seconds"] = round(time.perf_counter() - t0, 1)
        write_json(folder / "sweep.json", result)
        sweep_report(result)
    if not quiet:
        print(format_table(result))
    return result


def _execute(todo: list[PlannedRun], folder: Path, resume: bool, jobs: int,
             status: dict[str, dict[str, Any]]) -> None:
    """Run ``todo`` inline (``jobs`` 0) or as ``jobs`` processes at a time, recording each outcome."""
    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))

    def one(p: PlannedRun) -> None:
        if jobs:
            _run_process(p, folder, resume, threads)
        else:
            _run_inline(p, folder, resume)

    def record(p: PlannedRun, error: BaseException | None) -> None:
        if error is None:
            status[p.name] = {"status": "done"}
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
