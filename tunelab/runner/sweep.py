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
import math
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

from tunelab.config import ConfigError, RunConfig, apply_override, dump_yaml, from_dict, read_yaml_mapping
from tunelab.io import FolderLock, write_json
from tunelab.runner import plan as plan_mod
from tunelab.runner.aggregate import aggregate, format_table
from tunelab.runner.hooks import report_sweep
from tunelab.runner.records import build_record, load_records, write_record
from tunelab.runner.run import config_digest, run
from tunelab.runner.validate import validate

SWEEP_KEYS = ("name", "recipe", "overrides", "factors", "seeds", "seed_key", "baseline", "out", "records", "question",
              "hypotheses", "pilot_arms", "pilot_range", "pool_range", "assume", "differences")
HYPOTHESIS_KEYS = ("claim", "task", "arm", "versus", "versus_task", "direction", "effect", "source")
BACKENDS = ("local", "inline", "ray")
ENSEMBLE = "ensemble"


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
    digest: str = ""
    """:func:`run_digest` of the resolved config (the end of ``name``)."""


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
    differences: list[str] = field(default_factory=list)
    """Where the design differs from the paper's (model, budget, data, metric), stated in the sweep file
    before the runs; the findings print them beside the question."""
    hypotheses: list[dict[str, Any]] = field(default_factory=list)
    """Findings under test: ``{claim, task, arm, versus, direction, effect, source}`` (see
    :func:`tunelab.report.findings.hypotheses`)."""

    records: Path = Path("studies")
    """The study's records folder (one ``<run>.json.gz`` per finished run; :mod:`tunelab.runner.records`)."""
    pilot_arms: list[str] = field(default_factory=list)
    """Arm labels the pilot runs besides the baseline (``pilot_arms:`` in the sweep file)."""
    pilot_range: dict[str, tuple[float, float]] = field(default_factory=lambda: {"default": (0.2, 0.8)})
    """The baseline's score on each claimed task must lie inside its range (``pilot_range:`` [lo, hi] for
    every task, or per task with a ``default``)."""
    pool_range: dict[str, tuple[float, float]] = field(default_factory=dict)
    """The success rate of each named generated pool (``pool_range: {source: [lo, hi]}``), read from the
    pilot baseline's record, must lie inside its range: a sampled pool of natural failures needs both
    kinds of episode."""
    assume: dict[str, float] = field(default_factory=dict)
    """The plan's stated assumptions (``assume: {item_correlation, seed_sd}``) where no records tell."""

    @property
    def folder(self) -> Path:
        """``<out>/<name>``: runs, caches and ``sweep.json``."""
        return self.out / self.name

    @property
    def study_folder(self) -> Path:
        """The folder above the records: ``study.json``, ``plan.json``, ``pilot.json``."""
        return self.records.parent

    @property
    def baseline_label(self) -> str:
        """The baseline arm's label."""
        return Arm(self.baseline, {}).label

    def digests(self) -> dict[str, str]:
        """run name -> config digest of every planned run (what a record must match)."""
        return {p.name: p.digest for p in self.runs}

    def recorded(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """The study's records matched to its planned runs, and why each stale one is not counted
        (:func:`tunelab.runner.records.load_records`)."""
        return load_records(self.records, self.name, self.digests())


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


def studies_dir() -> Path:
    """Where study records go by default: ``studies/`` under the current directory (the repository
    root for our own studies), or ``$TUNELAB_STUDIES_DIR``."""
    return Path(os.environ.get("TUNELAB_STUDIES_DIR") or "studies")


def run_digest(cfg: RunConfig) -> str:
    """The hash of a run's resolved config that names it; where the run and its recipe live are left
    out, so the same sweep file gives the same names (and matches its records) on any machine."""
    return config_digest(cfg, skip=("out", "name", "recipe_dir"))


def _run_name(arm: Arm, seed: int, digest: str) -> str:
    """``<arm>-seed<k>-<hash of the resolved config>``, safe as a folder name."""
    slug = "".join(c if c.isalnum() or c in "=.-_" else "_" for c in arm.label.replace(",", "__"))
    return f"{slug[:80]}-seed{seed}-{digest}"


def load_sweep(path: str | Path, out: str | None = None, records: str | Path | None = None) -> Sweep:
    """Parse a sweep file and resolve and validate every run's config (before any work).

    Raises:
        ConfigError: naming the sweep file and the key, factor or run that is wrong.
    """
    path = Path(path)
    spec = read_yaml_mapping(path, "sweep file")
    errors: list[str] = []  # every independent problem, reported at once

    def attempt(fn: Callable[[], Any], default: Any) -> Any:
        try:
            return fn()
        except ConfigError as e:
            errors.append(str(e))
            return default

    unknown = sorted(set(spec) - set(SWEEP_KEYS))
    if unknown:
        errors.append(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(SWEEP_KEYS)}")
    recipe = (path.parent / str(spec.get("recipe", ""))).resolve()
    if "recipe" not in spec:
        errors.append(f"{path}: 'recipe' (the base recipe file) is required")
    elif not recipe.is_file():
        errors.append(f"{path}: recipe: {recipe} not found")
    factors_spec = spec.get("factors") or {}
    factors: dict[str, dict[str, dict[str, Any]]] = {}
    if not isinstance(factors_spec, dict) or not factors_spec:
        errors.append(f"{path}: 'factors' must name at least one factor")
    else:
        for fname, f in factors_spec.items():
            levels = attempt(lambda fname=fname, f=f: _levels(str(path), str(fname), f), None)
            if levels is not None:
                factors[str(fname)] = levels
    seeds = spec.get("seeds", 1)
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds) if isinstance(seeds, list) else []
    if not seeds or not all(isinstance(s, int) for s in seeds):
        errors.append(f"{path}: 'seeds' must be a positive count or a list of integer seeds")
        seeds = [0]
    baseline = {f: str((spec.get("baseline") or {}).get(f, next(iter(levels))))
                for f, levels in factors.items()}
    for f in (spec.get("baseline") or {}):
        if f not in factors:
            errors.append(f"{path}: baseline: {f!r} is not a factor ({', '.join(factors)})")
        elif baseline[f] not in factors[f]:
            errors.append(f"{path}: baseline: {f}={baseline[f]!r} is not a level ({', '.join(factors[f])})")
            baseline[f] = next(iter(factors[f]))
    name = str(spec.get("name") or path.stem)
    sweep = Sweep(name, path, Path(out or spec.get("out") or "runs/sweeps").resolve(),
                  factors, seeds, baseline, question=str(spec.get("question") or "").strip(),
                  differences=attempt(lambda: _differences(path, spec.get("differences")), []),
                  hypotheses=_hypotheses(path, spec.get("hypotheses"), factors, baseline, errors),
                  records=Path(records or spec.get("records") or studies_dir() / name / "records").resolve(),
                  pilot_arms=[label for i, given in enumerate(spec.get("pilot_arms") or []) if (label := attempt(
                      lambda i=i, g=given: _arm_label(f"{path}: pilot_arms[{i}]", g, factors, baseline), None))],
                  pilot_range=attempt(lambda: _pilot_range(path, spec.get("pilot_range", [0.2, 0.8])),
                                      {"default": (0.2, 0.8)}),
                  pool_range=attempt(lambda: _pool_range(path, spec.get("pool_range") or {}), {}),
                  assume=attempt(lambda: _assume(path, spec.get("assume") or {}), {}))
    if recipe.is_file() and factors:
        base_tree = yaml.safe_load(recipe.read_text()) or {}
        for ov in spec.get("overrides") or []:
            attempt(lambda ov=ov: apply_override(base_tree, ov), None)
        seed_key = spec.get("seed_key", "train.seed")
        for combo in itertools.product(*[list(levels.items()) for levels in factors.values()]):
            arm = Arm({f: label for f, (label, _) in zip(factors, combo)},
                      {k: v for _, lv in combo for k, v in lv.items()})
            for seed in seeds:
                planned = attempt(lambda arm=arm, seed=seed: _plan(sweep, arm, seed, base_tree, recipe, seed_key),
                                  None)
                if planned is None:
                    break  # the arm's problem is said once, not once per seed
                sweep.runs.append(planned)
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    return sweep


def check_sweep(path: str | Path) -> list[str]:
    """Every problem of a sweep file at once (empty: it is valid); nothing runs."""
    try:
        load_sweep(path)
    except ConfigError as e:
        return str(e).splitlines()
    return []


def is_sweep_file(path: str | Path) -> bool:
    """Whether ``path`` is a YAML mapping with ``factors`` (a sweep file rather than a recipe)."""
    path = Path(path)
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return False
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(spec, dict) and "factors" in spec


def _arm_label(where: str, given: Any, factors: dict[str, dict[str, Any]], baseline: dict[str, str]) -> str:
    """An arm's label from ``factor=level,...`` or a mapping ``{factor: level}`` (for labels with
    commas); factors not named take the baseline's level. ``ensemble(<arm>)`` names the ensemble of
    that arm's seeds (mean class probabilities on multiple-choice tasks; :mod:`tunelab.report.findings`)."""
    if isinstance(given, str) and given.strip().startswith(ENSEMBLE + "(") and given.strip().endswith(")"):
        inner = given.strip()[len(ENSEMBLE) + 1 : -1]
        return f"{ENSEMBLE}({_arm_label(where, inner, factors, baseline)})"
    levels = dict(baseline)
    if isinstance(given, dict):
        pairs = [(str(f), str(lv)) for f, lv in given.items()]
    else:
        pairs = [(f.strip(), lv.strip()) for f, _, lv in (p.partition("=") for p in str(given).split(",")) if f.strip()]
    for f, lv in pairs:
        if f not in factors or lv not in factors[f]:
            raise ConfigError(f"{where}: {f}={lv!r} names no level: give factor=level "
                              f"(factors: {', '.join(f'{k}: {list(v)}' for k, v in factors.items())})")
        levels[f] = lv
    return Arm(levels, {}).label


def _differences(path: Path, spec: Any) -> list[str]:
    """``differences:``: a list of sentences (or one)."""
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
        raise ConfigError(f"{path}: differences: give a list of sentences, got {spec!r}")
    return [x.strip() for x in items]


def _pool_range(path: Path, spec: Any) -> dict[str, tuple[float, float]]:
    """``pool_range: {source: [lo, hi]}``: each with 0 <= lo < hi <= 1."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: pool_range: give {{source: [low, high]}}, got {spec!r}")
    return {str(src): _pilot_range(path, value)["default"] for src, value in spec.items()}


def _pilot_range(path: Path, spec: Any) -> dict[str, tuple[float, float]]:
    """``pilot_range: [lo, hi]`` (every gated task) or ``{task: [lo, hi], default: [lo, hi]}``, each with
    0 <= lo < hi <= 1; returned as ``{task or "default": (lo, hi)}``."""
    def one(where: str, value: Any) -> tuple[float, float]:
        ok = (isinstance(value, (list, tuple)) and len(value) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
              and 0 <= value[0] < value[1] <= 1)
        if not ok:
            raise ConfigError(f"{path}: {where}: give [low, high] with 0 <= low < high <= 1, got {value!r}")
        return float(value[0]), float(value[1])

    if isinstance(spec, dict):
        out = {str(task): one(f"pilot_range.{task}", value) for task, value in spec.items()}
        out.setdefault("default", (0.2, 0.8))
        return out
    return {"default": one("pilot_range", spec)}


ASSUME_KEYS = {"item_correlation": (0.0, 0.999), "seed_sd": (0.0, math.inf)}


def _assume(path: Path, spec: Any) -> dict[str, float]:
    """``assume: {item_correlation: 0.5, seed_sd: 0.02}``: the plan's stated assumptions."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: assume: must be a mapping with keys {', '.join(ASSUME_KEYS)}")
    out = {}
    for key, value in spec.items():
        if key not in ASSUME_KEYS:
            raise ConfigError(f"{path}: assume: unknown key {key!r}; valid: {', '.join(ASSUME_KEYS)}")
        lo, hi = ASSUME_KEYS[key]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
            raise ConfigError(f"{path}: assume.{key}: must be a number in [{lo}, {hi}], got {value!r}")
        out[key] = float(value)
    return out


def _hypotheses(path: Path, spec: Any, factors: dict[str, dict[str, Any]], baseline: dict[str, str],
                errors: list[str] | None = None) -> list[dict[str, Any]]:
    """The validated ``hypotheses`` list: each names a task, an arm (``factor=level,...`` or a mapping
    ``{factor: level}``, for labels with commas; missing
    factors take the baseline's level), what it is compared with (default: the baseline arm), the
    predicted direction (``better``, ``worse`` or ``equal``) and the claimed effect size; ``versus_task`` scores
    the comparison arm on another task over the same items (a prompt regime: PromptIntern's bare query
    against full-prompt fine-tuning read with its full prompt; default: ``task``)."""
    out = []
    def one(i: int, h: Any) -> None:
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
        arms = {key: _arm_label(f"{where}: {key}", h.get(key) or {}, factors, baseline) for key in ("arm", "versus")}
        effect = h.get("effect")
        if effect is not None and (not isinstance(effect, (int, float)) or isinstance(effect, bool) or effect <= 0):
            raise ConfigError(f"{where}: effect: must be a positive number (the claimed difference on the task's "
                              f"metric), got {effect!r}")
        if h.get("direction") == "equal" and effect is None:
            raise ConfigError(f"{where}: direction: equal needs 'effect', the equivalence margin (a positive number "
                              "on the task's metric: the largest difference that still counts as equal)")
        if effect is None:
            raise ConfigError(f"{where}: 'effect' is required: the paper's effect on the task's metric (e.g. 0.05 "
                              "for 5 points of accuracy), so the plan can say whether this design can detect it")
        if not str(h.get("source") or "").strip():
            raise ConfigError(f"{where}: 'source' is required: the paper (and table) the claimed effect comes from")
        if "versus_task" in h and not (isinstance(h["versus_task"], str) and h["versus_task"]):
            raise ConfigError(f"{where}: versus_task: the task the comparison arm is scored on, got {h['versus_task']!r}")
        out.append({"claim": str(h["claim"]), "task": str(h["task"]), "arm": arms["arm"], "versus": arms["versus"],
                    "versus_task": str(h.get("versus_task") or h["task"]),
                    "direction": h.get("direction", "better"), "effect": effect, "source": str(h.get("source", ""))})

    for i, h in enumerate(spec or []):
        try:
            one(i, h)
        except ConfigError as e:
            if errors is None:
                raise
            errors.append(str(e))

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
    digest = run_digest(cfg)
    name = _run_name(arm, seed, digest)
    cfg.name = name
    return PlannedRun(arm, seed, cfg, name, digest)


# ----------------------------------------------------------------------------- execution


def _resumable(planned: PlannedRun, resume: bool) -> bool:
    """Continue the run from a checkpoint: asked for, and this machine has one (else start over)."""
    checkpoints = Path(planned.cfg.out) / planned.name / "checkpoints"
    return resume and checkpoints.is_dir() and any(checkpoints.glob("step-*"))


def _run_inline(planned: PlannedRun, folder: Path, resume: bool) -> None:
    """One run in this process."""
    resume = _resumable(planned, resume)
    run(planned.cfg, force=not resume, resume=resume, quiet=True, data_cache=folder / "cache" / "data",
        base_eval_cache=folder / "cache" / "base_eval")


def _run_process(planned: PlannedRun, folder: Path, resume: bool, threads: int) -> None:
    """One run as a ``tunelab run`` process (its output in ``<sweep>/logs/<run>.txt``)."""
    resume = _resumable(planned, resume)
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
    """Whether the run's results exist in its run folder (this machine)."""
    return (Path(planned.cfg.out) / planned.name / "results.json").is_file()


def record_run(sweep: Sweep, planned: PlannedRun) -> dict[str, Any]:
    """Write the study record of a finished run (:mod:`tunelab.runner.records`); returns the record."""
    record = build_record(sweep.name, Path(planned.cfg.out) / planned.name, arm=planned.arm.levels,
                          seed=planned.seed, config=planned.cfg, config_digest=planned.digest)
    write_record(sweep.records, record)
    return record


def _write_study(sweep: Sweep) -> None:
    """``<study>/study.json``: the sweep file the records belong to (relative to the study folder), so
    ``tunelab findings studies/`` finds every study's design."""
    path = sweep.study_folder / "study.json"
    rel = Path(os.path.relpath(sweep.path.resolve(), sweep.study_folder)).as_posix()
    if not path.is_file() or json.loads(path.read_text()).get("sweep_file") != rel:
        write_json(path, {"study": sweep.name, "sweep_file": rel})


def sync_records(sweep: Sweep) -> dict[str, dict[str, Any]]:
    """Record every finished run folder of the sweep that has no record yet; returns the study's
    records (stale ones left out, and said)."""
    _write_study(sweep)
    found, stale = sweep.recorded()
    for p in sweep.runs:
        if p.name not in found and _finished(p):
            found[p.name] = record_run(sweep, p)
    for line in stale:
        print(f"[tunelab] {line}", file=sys.stderr)
    return found


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
            _run_all(sweep, pilots, backend, address, resume, jobs, status)
        refused = _pilot_gate(sweep, accept)
        todo = [] if (refused or pilot_only) else _chunk(sweep, rest, budget, max_runs)
        if todo:
            _run_all(sweep, todo, backend, address, resume, jobs, status)
    finally:
        stop()
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


def _run_all(sweep: Sweep, todo: list[PlannedRun], backend: str, address: str | None, resume: bool, jobs: int,
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
        _execute(todo, sweep.folder, resume, jobs if backend == "local" else 0, status, done)


def _pilot_gate(sweep: Sweep, accept: bool) -> ConfigError | None:
    """Gate on the pilot's records, write ``pilot.json`` and the plan; the refusal, if any."""
    records, _ = sweep.recorded()
    if not sweep.hypotheses or not any(p.name in records for p in plan_mod.pilot_runs(sweep)):
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


def _execute(todo: list[PlannedRun], folder: Path, resume: bool, jobs: int,
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
