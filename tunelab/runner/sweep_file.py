"""A sweep file, parsed and validated: a base recipe x factors x seeds, each run's config resolved.

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

The fields are parsed by :mod:`tunelab.runner.sweep_fields`; the runs are run by
:mod:`tunelab.runner.sweep` (:func:`~tunelab.runner.sweep.run_sweep`).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunelab.config import ConfigError, RunConfig, apply_override, from_dict, read_yaml_mapping
from tunelab.runner.records import load_records, sibling_folders
from tunelab.runner.run import config_digest
from tunelab.runner.sweep_fields import (
    levels_label,
    parse_arm_label,
    parse_assume,
    parse_differences,
    parse_hypotheses,
    parse_interaction,
    parse_judged,
    parse_levels,
    parse_pilot_range,
    parse_pool_range,
)
from tunelab.runner.validate import validate

SWEEP_KEYS = ("name", "recipe", "overrides", "factors", "seeds", "seed_key", "baseline", "out", "records", "question",
              "hypotheses", "pilot_arms", "pilot_range", "pool_range", "assume", "differences",
              "interaction", "judged")


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
        return levels_label(self.levels)


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
    interaction: dict[str, Any] | None = None
    """A claimed interaction of a 2 x 2 design (``{claim, task, direction, effect, source}``; see
    :func:`tunelab.runner.sweep_fields.parse_interaction`): planned and tested as a difference in differences."""
    judged: dict[str, Any] | None = None
    """Arms compared by an LLM judge on an open-ended task (``{task, judge, verdict, subset, claims}``; see
    :func:`tunelab.runner.sweep_fields.parse_judged`), after the runs: ``tunelab sweep judge``."""

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
        (:func:`tunelab.runner.records.load_records`); runs identical to a sibling study's (the same
        config digest, in ``<study folder>/../*/records``) share its records."""
        siblings = sibling_folders(self.study_folder, self.records.name)
        found, stale = load_records(self.records, self.name, self.digests(), siblings)
        arms = {p.name: p.arm for p in self.runs}
        for name, record in found.items():
            if "shared_from" in record:  # the other study's arm labels are not this one's
                record["arm"] = dict(arms[name].levels)
        return found, stale


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


def arm_slug(label: str) -> str:
    """An arm's label safe as a file name (``,`` -> ``__``, other unsafe characters ``_``), at most 80 characters."""
    return "".join(c if c.isalnum() or c in "=.-_" else "_" for c in label.replace(",", "__"))[:80]


def _run_name(arm: Arm, seed: int, digest: str) -> str:
    """``<arm>-seed<k>-<hash of the resolved config>``, safe as a folder name."""
    return f"{arm_slug(arm.label)}-seed{seed}-{digest}"


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
            levels = attempt(lambda fname=fname, f=f: parse_levels(str(path), str(fname), f), None)
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
                  differences=attempt(lambda: parse_differences(path, spec.get("differences")), []),
                  hypotheses=parse_hypotheses(path, spec.get("hypotheses"), factors, baseline, errors),
                  records=Path(records or spec.get("records") or studies_dir() / name / "records").resolve(),
                  pilot_arms=[label for i, given in enumerate(spec.get("pilot_arms") or []) if (label := attempt(
                      lambda i=i, g=given: parse_arm_label(f"{path}: pilot_arms[{i}]", g, factors, baseline), None))],
                  pilot_range=attempt(lambda: parse_pilot_range(path, spec.get("pilot_range", [0.2, 0.8])),
                                      {"default": (0.2, 0.8)}),
                  pool_range=attempt(lambda: parse_pool_range(path, spec.get("pool_range") or {}), {}),
                  assume=attempt(lambda: parse_assume(path, spec.get("assume") or {}), {}),
                  interaction=attempt(lambda: parse_interaction(path, spec.get("interaction"), factors), None),
                  judged=parse_judged(path, spec.get("judged"), factors, baseline, errors))
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
    if sweep.judged and sweep.runs:
        missing = sorted({p.arm.label for p in sweep.runs if sweep.judged["task"] not in p.cfg.eval.tasks})
        if missing:
            errors.append(f"{path}: judged: task {sweep.judged['task']!r} is not evaluated by arm(s) "
                          f"{', '.join(missing)} (add it to eval.tasks)")
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
