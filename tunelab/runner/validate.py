"""Check a recipe without doing any work: every name, parameter and file it refers to."""

from __future__ import annotations

from pathlib import Path

from tunelab.config import ConfigError, RunConfig, load_recipe
from tunelab.data.sources import check_source
from tunelab.data.transforms.base import build_transforms
from tunelab.diagnostics.base import build_diagnostic
from tunelab.envs.base import get_env
from tunelab.eval.tasks.base import get_task
from tunelab.methods import build_method
from tunelab.models.load import ALIASES
from tunelab.regularizers import build_regularizers
from tunelab.runner.generated import check_generated
from tunelab.runner.recipe_model import RECIPE_PREFIX, recipe_path
from tunelab.train.objectives import build_objective
from tunelab.train.speed import decide_passes
from tunelab.train.trackers import problems as tracker_problems


def _model_problem(name: str, recipe_dir: str | None = None) -> str | None:
    if name.startswith(RECIPE_PREFIX):  # the model another recipe trains (runner.recipe_model.recipe_model)
        try:
            recipe_path(name, recipe_dir)
        except ConfigError as e:
            return f"model.name: {e}"
        return None
    if name in ALIASES or Path(name).expanduser().is_dir():
        return None
    if "/" in name and not name.startswith((".", "/")):
        return None  # a hub id: resolved at run time
    return f"model.name: {name!r} is not an alias ({', '.join(ALIASES)}), a local folder (a checkpoint or a finished run), or a hub id"


def _best_problems(cfg: RunConfig) -> list[str]:
    """``train.select_best`` / ``train.early_stopping_patience`` need held-out evaluations and a metric."""
    t, problems = cfg.train, []
    if t.early_stopping_patience < 0:
        problems.append(f"train.early_stopping_patience: must be >= 0, got {t.early_stopping_patience}")
    for key, on in (("train.select_best", t.select_best), ("train.early_stopping_patience", t.early_stopping_patience)):
        if on and not (t.eval_every > 0 and cfg.data.heldout > 0):
            problems.append(f"{key}: needs held-out evaluations: train.eval_every > 0 (got {t.eval_every}) "
                            f"and data.heldout > 0 (got {cfg.data.heldout})")
    metrics = ["heldout_loss"] + [f"heldout_loss/{s.name}" for s in cfg.data.sources]
    if t.best_metric not in metrics:
        problems.append(f"train.best_metric: {t.best_metric!r} is not a held-out metric; valid: {', '.join(metrics)}")
    return problems


def validate(cfg: RunConfig | str | Path, overrides: list[str] | None = None, *,
             raise_errors: bool = False, where: str | Path | None = None) -> list[str]:
    """All problems found in a recipe (empty if it is good); nothing is loaded or run.

    Args:
        cfg: A RunConfig, or a recipe path (loaded with ``overrides``).
        overrides: ``a.b=c`` overrides for a recipe path.
        raise_errors: Raise one ConfigError listing every problem instead of returning them.
        where: The recipe file, named in that error (a path ``cfg`` names itself).
    """
    recipe_file = where if where is not None or isinstance(cfg, RunConfig) else cfg
    if not isinstance(cfg, RunConfig):
        cfg = load_recipe(cfg, overrides)
    problems: list[str] = []
    if (p := _model_problem(cfg.model.name, cfg.recipe_dir)) is not None:
        problems.append(p)
    checks = [("method", lambda: build_method(cfg.method)),
              ("objective", lambda: build_objective(cfg.objective)),
              ("regularizers", lambda: build_regularizers(cfg.regularizers)),
              ("data.transforms", lambda: build_transforms(cfg.data.transforms))]
    checks += [(f"eval.tasks: {t}", lambda t=t: get_task(t, **cfg.eval.task_options.get(t, {})))
               for t in cfg.eval.tasks]
    checks += [(f"diagnostics[{i}]", lambda d=d: build_diagnostic(d)) for i, d in enumerate(cfg.diagnostics)]
    problems += [f"eval.task_options: {t!r} is not in eval.tasks ({', '.join(cfg.eval.tasks) or 'none'})"
                 for t in cfg.eval.task_options if t not in cfg.eval.tasks]
    problems += [f"eval.task_limits: {t!r} is not in eval.tasks ({', '.join(cfg.eval.tasks) or 'none'})"
                 for t in cfg.eval.task_limits if t not in cfg.eval.tasks]
    problems += [f"eval.task_limits.{t}: must be a whole number of items >= 1, got {n!r}"
                 for t, n in cfg.eval.task_limits.items() if not isinstance(n, int) or isinstance(n, bool) or n < 1]
    for where, check in checks:
        try:
            check()
        except (ConfigError, KeyError, ValueError, TypeError) as e:
            msg = str(e).strip("'\"")
            problems.append(msg if msg.startswith(where.split(":")[0]) else f"{where}: {msg}")
    if sum(t.get("name") == "promptintern" for t in cfg.data.transforms if isinstance(t, dict)) > 1:
        problems.append("data.transforms: at most one promptintern transform (it schedules the whole prompt)")
    online = _online_problems(cfg)
    if online is not None:
        problems += online
    elif not cfg.data.sources:
        problems.append("data.sources: at least one source is needed")
    names = [s.name for s in cfg.data.sources]
    if len(set(names)) != len(names):
        problems.append(f"data.sources: source names must be unique, got {names}")
    for i, src in enumerate(cfg.data.sources):
        problems += [f"data.sources[{i}] ({src.name}): {p}" for p in check_source(src, cfg.recipe_dir)]
        if src.generate is not None:
            problems += [f"data.sources[{i}] ({src.name}): {p}" for p in check_generated(src, cfg.recipe_dir)]
    t = cfg.train  # ranges of single keys are checked when the recipe loads (config.bound)
    if cfg.data.sources and all(s.weight == 0 for s in cfg.data.sources) and cfg.data.strategy != "concat":
        problems.append("data.sources: every weight is 0 (all zero); at least one source needs a weight > 0")
    if cfg.eval.backend != "hf":
        problems.append(f"eval.backend: a run evaluates its in-memory model with 'hf', got {cfg.eval.backend!r} "
                        "(a finished run on another backend: `tunelab eval RUN --backend vllm`)")
    if t.profile_steps and t.profile_after + t.profile_steps > t.max_steps:
        problems.append(f"train.profile_steps: steps {t.profile_after + 1}-{t.profile_after + t.profile_steps} "
                        f"(after train.profile_after = {t.profile_after}) go past train.max_steps = {t.max_steps}")
    problems += _best_problems(cfg) + tracker_problems(t.report_to) + _pass_problems(cfg)
    if raise_errors and problems:
        raise ConfigError(f"{recipe_file or 'recipe'}: invalid recipe:\n  - " + "\n  - ".join(problems))
    return problems


def _pass_problems(cfg: RunConfig) -> list[str]:
    """``train.tokens_per_pass`` with an objective whose loss couples a micro-batch's examples."""
    try:
        objective = build_objective(cfg.objective)
    except (ConfigError, KeyError, ValueError, TypeError):
        return []  # reported by the objective check
    try:
        decide_passes(cfg.train.tokens_per_pass, objective.kind, objective.per_example, repr(cfg.objective.get("name")))
    except ConfigError as e:
        return [str(e)]
    return []


def _online_problems(cfg: RunConfig) -> list[str] | None:
    """An online objective's (grpo, rloo) problems: its environment, its group size against the step's
    rows, and no data sources (it samples its own); None when the objective is not online."""
    try:
        objective = build_objective(cfg.objective)
    except (ConfigError, KeyError, ValueError, TypeError):
        return None  # reported by the objective check
    if objective.kind != "online":
        return None
    p, problems = objective.params, []
    try:
        get_env(p.env, **p.env_options)
    except (ConfigError, KeyError, ValueError, TypeError) as e:
        problems.append(f"objective.env: {str(e).strip(chr(39))}")
    rows = cfg.train.batch_size * cfg.train.grad_accum
    if rows % p.group_size:
        problems.append(f"objective.group_size: {p.group_size} must divide train.batch_size x train.grad_accum "
                        f"({rows}): each step samples whole groups of episodes")
    if cfg.data.sources:
        problems.append(f"data.sources: objective {objective.name!r} samples its own episodes from objective.env "
                        f"({p.env}); remove the data sources")
    return problems
