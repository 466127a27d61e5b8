"""Data sources tunelab makes: ``generate: {kind: ..., **options}`` on a recipe's source.

A recipe may name data that a command of tunelab writes instead of a file a manual step must create
first::

    - {name: calculator, format: trajectory, generate: {kind: drill, env: calculator, tasks: 320, seed: 0}}
    - {name: pool, format: trajectory, generate: {kind: sample, env: calculator, model: smollm2-135m-instruct,
                                                  attempts: 4, temperature: 0.8, limit: 200, seed: 0}}
    - {name: evolved, format: messages, generate: {kind: evolve, seeds: "task:instruct", limit: 500,
                                                   evolver: programmatic, rounds: 2}}

Kinds:

* ``drill``: the calculator drill's paired pool (:func:`tunelab.envs.drill.paired_set`, what
  ``python -m tunelab.envs.drill OUT TASKS`` writes): on each of ``tasks`` one-step problems a careful
  agent's success and a forgetful agent's failure. No model; seconds.
* ``sample``: what ``tunelab sample ENV --model M ...`` writes (:func:`tunelab.envs.sample.sample`):
  ``attempts`` verified trajectories per task of the environment ``env`` (``env_options`` as
  ``--env-option``), sampled from ``model`` (an alias, a local folder, a finished run, a server URL or
  ``recipe:<recipe>``, the model a recipe trains: :mod:`tunelab.runner.recipe_model`).
* ``evolve``: what ``tunelab evolve`` writes (:func:`tunelab.evolve.evol_instruct.evolve`): the keys of
  the ``evolve:`` recipe section (:class:`tunelab.evolve.config.EvolveConfig`) but ``out``.

``tunelab validate`` checks the kind and its options without doing any work (:func:`check_generated`;
errors name the source and the ``generate.<key>``). The file is built when a run (or ``tunelab data
inspect``) first needs it (:func:`resolve_generated`), into
``<TUNELAB_CACHE or ~/.cache/tunelab>/generated/<kind>-<key>.jsonl``, where the key is a digest of
everything that determines it (:func:`generated_key`): the kind and every option (defaults filled in),
the source text of the code that makes the rows, the weights of a local model or run folder it samples
from, and the content of the files it reads. A later run with the same key reuses the file (the log and
``results.json`` ``reused.generated`` say so). The build is locked (a parallel run waits for it, then
reuses it), continues after a kill where sampling and evolving can (``<kind>-<key>.partial/``), and
ends with a rename, so a half-written pool is never read. ``<kind>-<key>.json`` beside the pool records
the options, the key's inputs and the build's summary.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tunelab.config import (
    ConfigError,
    RunConfig,
    SourceConfig,
    bound,
    from_dict,
    is_run,
    to_dict,
)
from tunelab.data.sources import resolve_data_path
from tunelab.envs.base import ENVS, get_env
from tunelab.envs.drill import paired_set
from tunelab.envs.gold import gold_traces
from tunelab.envs.sample import check_sample_args, sample
from tunelab.evolve.config import PROGRAMMATIC, EvolveConfig
from tunelab.evolve.evol_instruct import evolve, selected
from tunelab.evolve.operators import OPERATORS, parse_operators
from tunelab.evolve.program import PROGRAM_OPERATORS
from tunelab.generate.build import build_generator, is_url
from tunelab.io import DataError, digest, read_jsonl, write_json, write_jsonl
from tunelab.models.load import ALIASES
from tunelab.runner.cache import model_fingerprint
from tunelab.runner.recipe_model import (
    RECIPE_PREFIX,
    folder,
    locked,
    package_files,
    recipe_model,
    recipe_model_key,
    recipe_path,
    recipe_text_key,
    source_digest,
)


@dataclass
class DrillSpec:
    """``kind: drill``: the calculator drill's paired pool (one success and one failure per task)."""

    kind: Literal["drill"] = "drill"
    env: Literal["calculator"] = "calculator"
    """The drill's environment: the calculator's one-step ``pairs`` problems (the only drill so far)."""
    tasks: int = field(default=320, metadata=bound(ge=1))
    """Problems; each gives a careful agent's success and a forgetful agent's failure."""
    seed: int = 0
    """Seed of the problems."""


@dataclass
class SampleSpec:
    """``kind: sample``: ``tunelab sample ENV --model MODEL ...`` (the defaults are the command's)."""

    kind: Literal["sample"] = "sample"
    env: str = ""
    """The environment (``tunelab ls envs``); required."""
    model: str = ""
    """Who acts: a model alias, hub id, local folder, finished run folder, ``http(s)://host:port/v1#name``,
    or ``recipe:<recipe>`` (a recipe file, relative to the recipe's folder, or a built-in name): the model
    that recipe trains, run once into the cache and reused while the recipe and tunelab's code are the same;
    required."""
    env_options: dict[str, Any] = field(default_factory=dict)
    """The environment's options (``--env-option KEY=VALUE``), e.g. ``{source: pairs, oneshot: false}``."""
    attempts: int = field(default=4, metadata=bound(ge=1))
    """Attempts per task."""
    limit: int | None = field(default=20, metadata=bound(ge=1))
    """Tasks (None: the environment's default)."""
    temperature: float = field(default=0.8, metadata=bound(ge=0))
    """Sampling temperature."""
    max_steps: int = field(default=6, metadata=bound(ge=1))
    """Actions per attempt."""
    max_new_tokens: int = field(default=128, metadata=bound(ge=1))
    """Tokens per turn."""
    seed: int = 0
    """Seed of the tasks and the sampling."""
    backend: Literal["auto", "hf", "openai", "vllm"] = "auto"
    """Generator backend (``auto``: ``openai`` for a URL, else ``hf``)."""
    batch_size: int = field(default=16, metadata=bound(ge=1))
    """Rows decoded together (local) or requests in flight (server)."""
    max_live: int = field(default=256, metadata=bound(ge=1))
    """Attempts advanced together."""


@dataclass
class GoldSpec:
    """``kind: gold``: one gold demonstration per calculator task, played from its reference solution
    (:func:`tunelab.envs.gold.gold_traces`): the ReAct format a model learns before sampling its own."""

    kind: Literal["gold"] = "gold"
    env: Literal["calculator"] = "calculator"
    """The environment whose format the demonstrations show (the calculator, whose tasks carry solutions)."""
    env_options: dict[str, Any] = field(default_factory=dict)
    """The environment's options, e.g. ``{source: arith, oneshot: true}``."""
    limit: int = field(default=400, metadata=bound(ge=1))
    """Tasks (one demonstration each)."""
    seed: int = 0
    """Seed of the tasks."""


SPECS: dict[str, type] = {"drill": DrillSpec, "sample": SampleSpec, "evolve": EvolveConfig, "gold": GoldSpec}
"""The kinds of generated source and the dataclass of each one's options."""
EVOLVE_NOT_OPTIONS = ("out", "recipe_dir", "progress")
"""EvolveConfig keys a generated source does not take (the file, its folder and the progress bars are tunelab's)."""
EVOLVE_NOT_KEYED = ("prices",)
"""EvolveConfig keys that do not change the rows (only the report's costs), left out of the key."""
EVOLVE_SELECTION = ("keep_rounds", "include_seeds", "roots_kept_in")
"""EvolveConfig keys that choose which generations of an evolution a source trains on, not how it evolves: left
out of the key, so that sources differing only in them (a rounds curve; the seeds against their evolutions)
share one build, which keeps every generation; each source reads its selection (:func:`select_generations`)."""
CODE: dict[str, tuple[str, ...]] = {
    "drill": ("tunelab.envs", "tunelab.data.tasks"),
    "gold": ("tunelab.envs", "tunelab.data.tasks"),
    "sample": ("tunelab.envs", "tunelab.data.tasks"),
    "evolve": ("tunelab.evolve", "tunelab.data.tasks", "tunelab.data.instruction_rows"),
}
"""The packages whose source text is part of each kind's key (a change there makes a new pool)."""


@dataclass
class Generated:
    """A parsed ``generate:`` spec: the kind and its options (the kind's dataclass)."""

    kind: str
    options: Any


@dataclass
class Built:
    """A generated source's file, after :func:`build`."""

    path: Path
    key: str
    reused: bool
    """The file existed: nothing was generated."""

    @property
    def origin(self) -> str:
        """How the data report names the source's origin (the same on every machine)."""
        return f"generated:{self.path.stem}"


# ----------------------------------------------------------------------------- parsing and checks


def parse_generated(spec: Any) -> Generated:
    """The kind and its typed options.

    Raises:
        ConfigError: An unknown kind, key, type or range; the message names ``generate.<key>``.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"generate: expected a mapping {{kind: ..., ...}}, got {spec!r}")
    kind = spec.get("kind")
    if kind not in SPECS:
        raise ConfigError(f"generate.kind: got {kind!r}; valid choices: {', '.join(SPECS)}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    if kind == "evolve":
        refused = [k for k in EVOLVE_NOT_OPTIONS if k in options]
        if refused:
            raise ConfigError(f"generate.{refused[0]}: not an option of a generated source (tunelab keeps the "
                              f"file in its cache); valid keys: kind, "
                              f"{', '.join(f.name for f in dataclasses.fields(EvolveConfig) if f.name not in EVOLVE_NOT_OPTIONS)}")
        cfg = from_dict(EvolveConfig, options, "generate")
        cfg.answerer = cfg.answerer or cfg.evolver
        cfg.judge = cfg.judge or cfg.evolver
        missing = [k for k in ("seeds", "evolver") if not getattr(cfg, k)]
        if missing:
            raise ConfigError(f"generate.{missing[0]}: required for kind evolve")
        return Generated(kind, replace(cfg, progress=False))
    parsed = from_dict(SPECS[kind], spec, "generate")
    if kind == "sample":
        missing = [k for k in ("env", "model") if not getattr(parsed, k)]
        if missing:
            raise ConfigError(f"generate.{missing[0]}: required for kind sample")
    return Generated(kind, parsed)


def _model_problem(key: str, spec: str, recipe_dir: str | None = None) -> str | None:
    """Why ``spec`` names no model (None: it does); hub ids and URLs are checked when used."""
    if spec.startswith(RECIPE_PREFIX):
        try:
            recipe_path(spec, recipe_dir)
        except ConfigError as e:
            return f"generate.{key}: {e}"
        return None
    if spec in ALIASES or Path(spec).expanduser().is_dir() or is_url(spec):
        return None
    if "/" in spec and not spec.startswith((".", "/", "~")):
        return None  # a hub id
    return (f"generate.{key}: {spec!r} is not an alias ({', '.join(ALIASES)}), a local folder, a finished run "
            "folder, a hub id or a server URL")


def _sample_problems(opts: SampleSpec, recipe_dir: str | None = None) -> list[str]:
    problems = []
    if opts.env not in ENVS:
        return [f"generate.env: unknown environment {opts.env!r}; valid: {', '.join(ENVS.names())}"]
    try:
        get_env(opts.env, **opts.env_options)
    except (ConfigError, TypeError, ValueError) as e:
        problems.append(f"generate.env_options: {str(e).strip(chr(39))}")
    for key, value in opts.env_options.items():
        if key == "path" and isinstance(value, str):  # an environment's data file (the QA environments)
            try:
                resolve_data_path(value, None)
            except DataError as e:
                problems.append(f"generate.env_options.path: {e}")
    if (p := _model_problem("model", opts.model, recipe_dir)) is not None:
        problems.append(p)
    return problems


def _evolve_problems(cfg: EvolveConfig, recipe_dir: str | None) -> list[str]:
    problems = []
    programmatic = cfg.evolver == PROGRAMMATIC
    try:
        parse_operators(cfg.operators, PROGRAM_OPERATORS if programmatic else OPERATORS)
    except ValueError as e:
        problems.append(f"generate.operators: {e}")
    for role in ("evolver", "answerer", "judge"):
        spec = getattr(cfg, role)
        if spec == PROGRAMMATIC:
            if not programmatic:
                problems.append(f"generate.{role}: 'programmatic' needs the programmatic evolver (it knows the "
                                "constraints of instruct items only)")
        elif (p := _model_problem(role, spec)) is not None:
            problems.append(p)
    if cfg.seeds.startswith("task:"):
        if cfg.seeds != "task:instruct":
            problems.append(f"generate.seeds: {cfg.seeds!r}: the only built-in seed task is task:instruct")
    else:
        if programmatic:
            problems.append(f"generate.seeds: the programmatic operators evolve instruct items, not {cfg.seeds!r} "
                            "(use seeds: task:instruct, or a model as evolver)")
        try:
            resolve_data_path(cfg.seeds, recipe_dir)
        except DataError as e:
            problems.append(f"generate.seeds: {e}")
    return problems


def check_generated(src: SourceConfig, recipe_dir: str | None) -> list[str]:
    """Problems with a source's ``generate`` spec (empty: it is good), found without building anything;
    each names the ``generate.<key>``."""
    try:
        spec = parse_generated(src.generate)
    except ConfigError as e:
        return [str(e)]
    if spec.kind == "sample":
        return _sample_problems(spec.options, recipe_dir)
    if spec.kind == "evolve":
        return _evolve_problems(spec.options, recipe_dir)
    if spec.kind == "gold":
        source = spec.options.env_options.get("source", "arith")
        if source not in ("arith", "arith_ood"):
            return [f"generate.env_options.source: gold demonstrations are played from reference equations, "
                    f"which the calculator's arith and arith_ood tasks have; got {source!r}"]
    return []


# ----------------------------------------------------------------------------- the key


def _options(spec: Generated) -> dict[str, Any]:
    """The options as they enter the key (defaults filled in; what cannot change the rows left out)."""
    tree = to_dict(spec.options)
    for k in (EVOLVE_NOT_OPTIONS + EVOLVE_NOT_KEYED + EVOLVE_SELECTION if spec.kind == "evolve" else ()):
        tree.pop(k, None)
    tree.pop("kind", None)
    return tree


def code_fingerprint(spec: Generated) -> str:
    """A digest of the source text of the code that makes the kind's rows (:data:`CODE`, plus the
    environment's own module where a plugin registers it): the same on every machine and install."""
    files = [named for package in CODE[spec.kind] for named in package_files(package)]
    if spec.kind == "sample":
        module = inspect.getsourcefile(ENVS.get(spec.options.env))
        if module:
            files.append((f"env:{Path(module).name}", Path(module)))
    return source_digest(files)


def _file_digest(path: Path) -> str:
    h = hashlib.sha1()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _weights(spec_: str) -> str | None:
    """The weights a local model or run folder holds (file names, sizes, times); None for an alias,
    a hub id, a URL or ``programmatic`` (the name itself is in the options)."""
    folder = Path(spec_).expanduser()
    if not folder.is_dir():
        return None
    return model_fingerprint(str(folder / "final" if is_run(folder) else folder))


def key_inputs(spec: Generated, recipe_dir: str | None) -> dict[str, Any]:
    """Everything the key covers: the kind, the options, the code, local weights and input files."""
    tree: dict[str, Any] = {"kind": spec.kind, "options": _options(spec), "code": code_fingerprint(spec)}
    roles = {"sample": ("model",), "evolve": ("evolver", "answerer", "judge")}.get(spec.kind, ())
    weights = {r: w for r in roles if (w := _weights(getattr(spec.options, r))) is not None}
    if spec.kind == "sample" and spec.options.model.startswith(RECIPE_PREFIX):
        tree["model_recipe"] = recipe_model_key(spec.options.model, recipe_dir)
    if weights:
        tree["weights"] = weights
    files: dict[str, str] = {}
    if spec.kind == "sample":
        for key, value in sorted(spec.options.env_options.items()):
            if key == "path" and isinstance(value, str):
                files[f"env_options.{key}"] = _file_digest(resolve_data_path(value, None))
    if spec.kind == "evolve" and not spec.options.seeds.startswith("task:"):
        files["seeds"] = _file_digest(resolve_data_path(spec.options.seeds, recipe_dir))
    if files:
        tree["files"] = files
    return tree


def pin_key(spec: Generated, recipe_dir: str | None = None, inputs: dict[str, Any] | None = None) -> str:
    """The key with tunelab's code left out: the options, input files, local weights and, for a model a
    recipe trains, what the recipe file says. Two pools with the same pin differ only by the code that
    made them; a study keeps the pool its first runs trained on across such a change
    (:func:`tunelab.runner.pools.pin_pools`), so that all its seeds train on the same rows.

    ``inputs``: :func:`key_inputs` when the caller has them already."""
    tree = dict(inputs if inputs is not None else key_inputs(spec, recipe_dir))
    tree.pop("code", None)
    if "model_recipe" in tree:
        tree["model_recipe"] = recipe_text_key(spec.options.model, recipe_dir)
    return digest(tree)


def generated_key(spec: Generated, recipe_dir: str | None = None) -> str:
    """The key of a generated pool: a digest of :func:`key_inputs`."""
    return digest(key_inputs(spec, recipe_dir))


# ----------------------------------------------------------------------------- building


def _build_drill(opts: DrillSpec, work: Path, recipe_dir: str | None, say: Callable[[str], None]) -> tuple[Path, Any]:
    out = work / "pool.jsonl"
    summaries = paired_set(out, tasks=opts.tasks, seed=opts.seed)
    return out, {p: {k: s[k] for k in ("trajectories", "success_rate")} for p, s in summaries.items()}


def _build_gold(opts: GoldSpec, work: Path, recipe_dir: str | None, say: Callable[[str], None]) -> tuple[Path, Any]:
    out = work / "pool.jsonl"
    return out, gold_traces(out, env_options=opts.env_options, limit=opts.limit, seed=opts.seed)


def _build_sample(opts: SampleSpec, work: Path, recipe_dir: str | None, say: Callable[[str], None]) -> tuple[Path, Any]:
    env = get_env(opts.env, **opts.env_options)
    settings = {"attempts": opts.attempts, "limit": opts.limit, "temperature": opts.temperature,
                "max_steps": opts.max_steps, "max_new_tokens": opts.max_new_tokens, "max_live": opts.max_live}
    check_sample_args(**settings)
    model = opts.model
    if model.startswith(RECIPE_PREFIX):
        model = str(recipe_model(model, recipe_dir, say))
    generator = build_generator(model, backend=opts.backend, batch_size=opts.batch_size, progress=False)
    out = work / "pool.jsonl"  # appended to and resumable: a killed build continues here
    return out, sample(env, opts.env, generator, out, seed=opts.seed, progress=False, **settings)


def _build_evolve(cfg: EvolveConfig, work: Path, recipe_dir: str | None, say: Callable[[str], None]) -> tuple[Path, Any]:
    out = work / "evolved.jsonl"  # the work folder beside it lets a killed build continue
    # every generation is kept (seeds included): sources select theirs when they read it (EVOLVE_SELECTION)
    report = evolve(replace(cfg, out=str(out), recipe_dir=recipe_dir, progress=False, include_seeds=True,
                            keep_rounds=None, roots_kept_in=None), say=say)
    return out, {k: report[k] for k in ("dataset_rows", "stats") if k in report}


BUILDERS: dict[str, Callable[..., tuple[Path, Any]]] = {
    "drill": _build_drill, "sample": _build_sample, "evolve": _build_evolve, "gold": _build_gold}



def build(src: SourceConfig, recipe_dir: str | None = None, say: Callable[[str], None] = print) -> Built:
    """The file of a generated source: reused when one with the same key exists, else built (locked,
    into a work folder, renamed into place at the end).

    Raises:
        ConfigError: A bad ``generate`` spec (naming the source and key).
        DataError: A missing input file.
    """
    try:
        spec = parse_generated(src.generate)
    except ConfigError as e:
        raise ConfigError(f"source {src.name!r}: {e}") from None
    inputs = key_inputs(spec, recipe_dir)
    key = digest(inputs)
    where = folder()
    out = where / f"{spec.kind}-{key}.jsonl"
    if out.is_file():
        say(f"source {src.name!r}: reusing the generated {spec.kind} pool {out}")
        return Built(out, key, True)
    where.mkdir(parents=True, exist_ok=True)
    lock = where / f"{spec.kind}-{key}.lock"
    with locked(lock):
        if out.is_file():  # another run built it while this one waited
            say(f"source {src.name!r}: reusing the generated {spec.kind} pool {out}")
            return Built(out, key, True)
        say(f"source {src.name!r}: building the generated {spec.kind} pool {out}")
        work = where / f"{spec.kind}-{key}.partial"
        work.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        made, summary = BUILDERS[spec.kind](spec.options, work, recipe_dir, say)
        rows = len(read_jsonl(made))
        write_json(out.with_suffix(".json"), {"source": src.name, "key": key, "inputs": inputs,
                                              "pin": pin_key(spec, recipe_dir, inputs), "rows": rows,
                                              "summary": summary, "seconds": round(time.perf_counter() - t0, 1),
                                              "built": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        os.replace(made, out)
        shutil.rmtree(work, ignore_errors=True)
        lock.unlink(missing_ok=True)  # a run that waited on it finds the pool; later ones never lock
        say(f"source {src.name!r}: {rows} rows generated in {time.perf_counter() - t0:.1f}s")
    return Built(out, key, False)


def select_generations(built: Built, cfg: EvolveConfig) -> Path:
    """The file of the generations an evolve source trains on (``include_seeds``, ``keep_rounds``,
    ``roots_kept_in``: :func:`tunelab.evolve.evol_instruct.selected`), cut from its build (which keeps every
    generation, each row with its ``round`` and ``root_id``): the build itself when it selects everything, else
    ``<build>.select-<digest>.jsonl`` beside it, written once (atomically)."""
    if cfg.include_seeds and cfg.keep_rounds is None and cfg.roots_kept_in is None:
        return built.path
    choice = {"include_seeds": cfg.include_seeds, "keep_rounds": cfg.keep_rounds}
    if cfg.roots_kept_in is not None:
        choice["roots_kept_in"] = cfg.roots_kept_in
    out = built.path.with_name(f"{built.path.stem}.select-{digest(choice)}.jsonl")
    if not out.is_file():
        write_jsonl(out, selected(read_jsonl(built.path), cfg.include_seeds, cfg.keep_rounds, cfg.roots_kept_in))
    return out


def resolve_generated(cfg: RunConfig, say: Callable[[str], None] = print) -> tuple[RunConfig, dict[str, Built]]:
    """``cfg`` with every generated source built (or reused) and read from its file, as if ``path``
    named it (an evolve source: its generations, :func:`select_generations`), and what was done for each
    (by source name); ``cfg`` itself is left as it was."""
    built: dict[str, Built] = {}
    sources = []
    for src in cfg.data.sources:
        if src.generate:
            built[src.name] = build(src, cfg.recipe_dir, say)
            path = built[src.name].path
            spec = parse_generated(src.generate)
            if spec.kind == "evolve":
                path = select_generations(built[src.name], spec.options)
            src = replace(src, generate=None, path=str(path))
        sources.append(src)
    if not built:
        return cfg, built
    return replace(cfg, data=replace(cfg.data, sources=sources)), built
