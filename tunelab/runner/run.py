"""One run: recipe -> data -> (baseline eval) -> train -> save -> eval -> results.

The run folder is data, not logs: config.yaml (resolved), env.json, data/mixture.json,
metrics.jsonl, checkpoints/step-N/, final/, eval/<when>/<task>.jsonl, results.json.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunelab.config import ConfigError, RunConfig, dump_yaml, is_run, load_recipe, to_dict
from tunelab.data.pipeline import DataBundle
from tunelab.data.transforms.nat import nat_spec, signal_for
from tunelab.device import decide, default_device
from tunelab.diagnostics import run_diagnostics
from tunelab.envs.rollout import Rollouts
from tunelab.eval.harness import EvalResult, evaluate_tasks
from tunelab.eval.paired import compare_paired
from tunelab.eval.regimes import format_regimes, regime_table
from tunelab.eval.tasks.base import EvalTask, Signalled, get_task
from tunelab.generate.build import build_generator
from tunelab.io import DataError, FolderLock, digest, write_json, write_jsonl
from tunelab.methods import build_method, count_parameters
from tunelab.models.heads import HEAD_FILE, save_head
from tunelab.models.load import ModelError, base_model, cache_dir
from tunelab.models.surprisal import Scorer, model_scorer, surprisal_scorer
from tunelab.promptintern.rows import stage_rows
from tunelab.promptintern.schedule import recipe_transform
from tunelab.regularizers import build_regularizers
from tunelab.runner import cache as cache_mod
from tunelab.runner.data import prepare_data
from tunelab.runner.env import environment
from tunelab.runner.hooks import report_run
from tunelab.runner.recipe_model import RECIPE_PREFIX, recipe_model, set_recipe_runner
from tunelab.runner.validate import validate
from tunelab.train.artifacts import load_start
from tunelab.train.interference import GradInterference
from tunelab.train.loop import TrainJob, train
from tunelab.train.loss import head_chunk
from tunelab.train.objectives import build_objective, reference_logps, set_reference
from tunelab.train.profile import format_summary
from tunelab.train.speed import (
    decide_checkpointing,
    decide_compile,
    decide_heap_trim,
    decide_passes,
    return_freed_blocks,
)


def _changed(tree: Any, default: Any) -> Any:
    """The parts of ``tree`` that differ from ``default`` (nested mappings compared key by key)."""
    if isinstance(tree, dict) and isinstance(default, dict):
        return {k: _changed(v, default.get(k)) for k, v in tree.items() if v != default.get(k)}
    return tree


def config_digest(cfg: RunConfig, skip: tuple[str, ...] = ("out", "recipe_dir", "name")) -> str:
    """A short hash of what the resolved config sets away from the defaults (minus ``skip``): a
    new config key with a default leaves existing digests, and so run names, unchanged."""
    tree = _changed(to_dict(cfg), to_dict(RunConfig()))
    for k in skip:
        tree.pop(k, None)
    return digest(tree, 8)


def run_name(cfg: RunConfig, recipe: str | Path | None) -> str:
    """Deterministic: recipe stem + :func:`config_digest` (where the run is written left out)."""
    if cfg.name:
        return cfg.name
    stem = Path(recipe).stem if recipe else "run"
    return f"{stem}-{config_digest(cfg)}"


class Phases:
    """Wall seconds of a run's phases (``load``, ``data``, ``base_eval``, ``reference``, ``prepare``,
    ``train``, ``save``, ``evaluate``), each the time since the previous :meth:`lap`; kept in
    ``results.json`` (``run.phases``) and printed by ``benchmarks/study_run.py``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        """Close phase ``name`` now (its seconds add up when it is lapped twice)."""
        now = time.perf_counter()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 2)
        self._last = now


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def recipe_tasks(cfg: RunConfig, only: list[str] | None = None, signal: str = "") -> dict[str, EvalTask]:
    """The recipe's evaluation tasks (or those of ``only``), built with their ``eval.task_options``;
    with ``signal``, their prompts carry it (a NAT run is evaluated asking for success)."""
    tasks = {name: get_task(name, **cfg.eval.task_options.get(name, {}))
             for name in cfg.eval.tasks if only is None or name in only}
    return {n: Signalled(t, signal) for n, t in tasks.items()} if signal else tasks


def evaluate_model(model, tok, cfg: RunConfig, precision: str, folder: Path,
                   quiet: bool = False, only: list[str] | None = None, signal: str = "") -> dict[str, EvalResult]:
    """The recipe's evaluation of an in-memory model (the one evaluation entry, with the recipe's
    settings), on every task or on those of ``only``."""
    generator = build_generator(model, tokenizer=tok, precision=precision, batch_size=cfg.eval.batch_size,
                                progress=not quiet)
    tasks = recipe_tasks(cfg, only, signal)
    for task in tasks.values():  # prompt-regime tasks count input tokens with the run's tokenizer
        getattr(task, "bind", lambda *a, **k: None)(tok, cfg.model.name)
    return evaluate_tasks(tasks, generator, limit=cfg.eval.limit, seed=cfg.eval.seed,
                          max_new_tokens=cfg.eval.max_new_tokens, samples=cfg.eval.samples,
                          temperature=cfg.eval.temperature, out_dir=folder, log=not quiet,
                          latency_items=cfg.eval.latency_items, limits={n: cfg.eval.items_for(n) for n in tasks})


def _conditioning_check(model, tok, cfg: RunConfig, precision: str, folder: Path, quiet: bool) -> dict[str, EvalResult]:
    """``eval.signals``: a NAT run's tasks again, asking for each other class (``<task>@failure``,
    ``<task>@none``), on the same items."""
    spec = nat_spec(cfg.data.transforms)
    if not cfg.eval.signals or spec is None or spec.get("mode", "nat") != "nat":
        return {}
    generator = build_generator(model, tokenizer=tok, precision=precision, batch_size=cfg.eval.batch_size,
                                progress=not quiet)
    tasks = {}
    for which in cfg.eval.signals:
        wording = signal_for(spec, which)
        tasks |= {f"{n}@{which}": (Signalled(t, wording) if wording else t) for n, t in recipe_tasks(cfg).items()}
    return evaluate_tasks(tasks, generator, limit=cfg.eval.limit, seed=cfg.eval.seed,
                          max_new_tokens=cfg.eval.max_new_tokens, samples=cfg.eval.samples,
                          temperature=cfg.eval.temperature, out_dir=folder, log=not quiet,
                          limits={n: cfg.eval.items_for(n) for n in tasks})


def _results(cfg: RunConfig, base: dict[str, EvalResult] | None, tuned: dict[str, EvalResult], summary: dict,
             extra: dict) -> dict[str, Any]:
    """results.json: {task: {"base": score, "tuned": score, "delta": paired test, ...}, "run": {...}}."""
    results: dict[str, Any] = {}
    tasks = recipe_tasks(cfg) if tuned else {}
    for name, t in tuned.items():
        primary = tasks[name.split("@")[0]].primary  # <task>@<signal>: the conditioning check's tasks
        entry: dict[str, Any] = {"metric": primary, "tuned": t.scores[primary], "tuned_all": t.scores}
        if base and name in base:
            entry["base"] = base[name].scores[primary]
            entry["base_all"] = base[name].scores
            b = {r["id"]: r for r in base[name].rows}
            pairs = [(r["id"], b[r["id"]]["correct"], r["correct"]) for r in t.rows if r["id"] in b and "correct" in r]
            if pairs:
                entry["delta"] = compare_paired([p[1] for p in pairs], [p[2] for p in pairs],
                                                ids=[p[0] for p in pairs])
        results[name] = entry
    results["run"] = {"train": summary, **extra}
    return results


def _data(cfg: RunConfig, tok, cache: Path | None, reused: dict[str, Any], say=print) -> DataBundle:
    """The run's data, from ``cache`` (a folder shared by runs, e.g. a sweep's) when it holds it;
    ``reused["generated"]`` names the generated sources whose pool was already built."""
    key = cache_mod.data_key(cfg) if cache else None
    data = cache_mod.load_data(cache, key) if cache else None
    reused["data"] = data is not None
    if data is None:
        data = prepare_data(cfg, tok, say)
        if cache:
            cache_mod.save_data(cache, key, data)
    generated = data.report.get("generated") or {}
    if generated:
        reused["generated"] = sorted(n for n, g in generated.items() if g["reused"] or reused["data"])
    return data


def _surprisal_scorer(cfg: RunConfig, model, tok) -> Scorer | None:
    """The scorer ranking template units for the recipe's ``promptintern`` transform: the run's base model
    (``model``, at hand, before training; not kept for the process, since training changes it), or the
    transform's ``score_model`` (loaded on first use); None without the transform or without ``score:
    surprisal``."""
    t = recipe_transform(cfg)
    if t is None or t.params.score != "surprisal":
        return None
    if t.params.score_model is None:
        return surprisal_scorer(model, tok)
    name = t.params.score_model
    return lambda text: model_scorer(name)(text)


def _base_eval(model, tok, cfg: RunConfig, precision: str, folder: Path, quiet: bool, cache: Path | None,
               reused: dict[str, Any], resolved: str) -> dict[str, EvalResult]:
    """The untrained model's evaluation; tasks found in ``cache`` are reused, not recomputed."""
    fp = cache_mod.model_fingerprint(resolved) if cache else ""
    keys = {t: cache_mod.base_eval_key(cfg, t, precision, fp) for t in cfg.eval.tasks} if cache else {}
    found = {t: r for t, k in keys.items() if (r := cache_mod.load_base_eval(cache, k)) is not None}
    for task, result in found.items():
        write_jsonl(folder / f"{task}.jsonl", result.rows)  # where the run's own rows would be
    reused["base_eval"] = sorted(found)
    missing = [t for t in cfg.eval.tasks if t not in found]
    computed = evaluate_model(model, tok, cfg, precision, folder, quiet, only=missing) if missing else {}
    for task, result in computed.items():
        if cache:
            cache_mod.save_base_eval(cache, keys[task], result)
    return {t: found.get(t) or computed[t] for t in cfg.eval.tasks}


def _reference(model, pad_id: int, data: DataBundle, cfg: RunConfig, precision: str, cache: Path | None,
               resolved: str, reused: dict[str, Any], say) -> None:
    """Reference log-probabilities of the preference rows, from the untrained model (dropout off),
    reused from ``<cache or TUNELAB_CACHE>/reference`` when the data, precision and weights match."""
    folder = (cache or cache_dir()) / "reference"
    key = cache_mod.reference_key(cache_mod.data_key(cfg), cfg.objective, precision,
                                  cache_mod.model_fingerprint(resolved))
    refs = cache_mod.load_reference(folder, key)
    reused["reference"] = refs is not None
    if refs is not None and len(refs) == len(data.rows):
        set_reference(data.rows, refs)
        return
    say(f"reference log-probabilities of {len(data.rows)} examples (the base model)")
    refs = reference_logps(model, data.rows, pad_id, precision, cfg.train)
    cache_mod.save_reference(folder, key, refs)


def run(recipe: str | Path | RunConfig | None = None, overrides: list[str] | None = None, *,
        out: str | None = None, resume: bool = False, force: bool = False, quiet: bool = False,
        data_cache: str | Path | None = None, base_eval_cache: str | Path | None = None) -> Path:
    """Run a recipe end to end; returns the run folder (skipped if its results exist).

    ``data_cache`` / ``base_eval_cache``: folders shared between runs (a sweep's) where the built
    data and the base model's evaluations are reused when the configuration that made them is the
    same (:mod:`tunelab.runner.cache`); ``results.json`` says what was reused. Base evaluations
    are cached in ``<TUNELAB_CACHE>/base_eval`` by default (``TUNELAB_NO_EVAL_CACHE=1``: never).
    """
    cfg = recipe if isinstance(recipe, RunConfig) else load_recipe(recipe, overrides)
    if out:
        cfg.out = out
    validate(cfg, raise_errors=True, where=None if isinstance(recipe, RunConfig) else recipe)
    run_dir = Path(cfg.out) / run_name(cfg, None if isinstance(recipe, RunConfig) else recipe)
    if is_run(run_dir, need="results") and not (force or resume):
        print(f"[tunelab] results exist, skipping (use --force to redo): {run_dir}")
        return run_dir
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(run_dir):  # a second process on the same run is refused, naming this one
            if force and not resume:
                for entry in run_dir.iterdir():
                    if entry.name != ".lock":
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            return _execute(cfg, run_dir, resume=resume, quiet=quiet, data_cache=data_cache,
                            base_eval_cache=base_eval_cache)
    except (ConfigError, DataError, ModelError):
        if created:  # bad input found while preparing: leave no partial run folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _execute(cfg: RunConfig, run_dir: Path, *, resume: bool, quiet: bool, data_cache: str | Path | None,
             base_eval_cache: str | Path | None) -> Path:
    """The body of :func:`run`, in its locked, prepared folder."""
    t_start, phases = time.perf_counter(), Phases()
    say = (lambda msg: None) if quiet else (lambda msg: print(f"[tunelab] {msg}"))
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = default_device()
    precision, why = decide(cfg.train.precision, device)
    (run_dir / "config.yaml").write_text(dump_yaml(cfg))
    start = cfg.model
    if start.name.startswith(RECIPE_PREFIX):  # the model another recipe trains: trained once, cached, reused
        start = replace(start, name=str(recipe_model(start.name, cfg.recipe_dir, say)))
    seed_everything(cfg.train.seed)
    model, tok, model_info = load_start(start, device=device)
    phases.lap("load")
    write_json(run_dir / "env.json", {**environment(precision, why), "model": model_info})
    if not resume:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    reused: dict[str, Any] = {}
    objective = build_objective(cfg.objective)
    if objective.kind == "online":  # grpo / rloo sample their own episodes as training goes
        data = DataBundle([objective.params.env], [], [], [], {"online": {
            "objective": objective.name, "env": objective.params.env, "group_size": objective.params.group_size,
            "episodes_per_step": cfg.train.batch_size * cfg.train.grad_accum,
            "steps_per_sampling": objective.params.num_iterations}})
    else:
        data = _data(cfg, tok, Path(data_cache) if data_cache else None, reused, say)
    write_json(run_dir / "data" / "mixture.json", data.report)
    phases.lap("data")
    say(f"data: {len(data.samples)} examples in {len(data.rows)} rows; model {model_info['resolved']}")
    stages = stage_rows(cfg, tok, data.samples, data.rows, data.sources,  # promptintern: rows per step
                        _surprisal_scorer(cfg, model, tok))
    if stages is not None:
        write_json(run_dir / "data" / "promptintern.json", stages.report)
    base_eval = None
    if cfg.eval.tasks and cfg.eval.baseline:
        say("evaluating the base model")
        cache = Path(base_eval_cache) if base_eval_cache else cache_dir() / "base_eval"
        t_base = time.perf_counter()
        base_eval = _base_eval(model, tok, cfg, precision, run_dir / "eval" / "base", quiet,
                               None if os.environ.get("TUNELAB_NO_EVAL_CACHE") else cache, reused,
                               str(model_info["resolved"]))
        reused["base_eval_seconds"] = round(time.perf_counter() - t_base, 1)  # a sweep's later runs reuse it
    phases.lap("base_eval")

    if objective.needs_reference:  # the base model is the reference of every method: score before applying it
        _reference(model, tok.pad_token_id, data, cfg, precision, Path(data_cache) if data_cache else None,
                   str(model_info["resolved"]), reused, say)
        phases.lap("reference")
    seed_everything(cfg.train.seed)
    method = build_method(cfg.method)
    model = method.apply(model)
    for reg in build_regularizers(cfg.regularizers):
        reg.apply(model)
    objective.prepare(model)  # an objective's own modules (choice_head's classifier)
    trainable, total = count_parameters(model)
    compiled, compile_why = decide_compile(cfg.train.compile, model, method.name, cfg.train.max_steps, device)
    if objective.kind == "online" and compiled:  # the layers also decode every step, at changing shapes
        compiled, compile_why = False, {"why": ["online objective: the model generates every step (compile off)"]}
    passes, passes_why = decide_passes(cfg.train.tokens_per_pass, objective.kind, objective.per_example,
                                       repr(cfg.objective.get("name")))
    ckpt, ckpt_why = decide_checkpointing(cfg.train.gradient_checkpointing, objective.kind, compiled, passes)
    if ckpt:  # the loop does it too (once per process); said here for env.json
        ckpt_why["allocator"] = return_freed_blocks()
    trim, trim_why = decide_heap_trim(cfg.train.trim_heap, objective.kind)
    env = json.loads((run_dir / "env.json").read_text())
    write_json(run_dir / "env.json", {**env, "speed": {"compile": compiled, "compile_decision": compile_why,
                                                       "gradient_checkpointing": ckpt, "checkpointing_decision": ckpt_why,
                                                       "tokens_per_pass": passes, "passes_decision": passes_why,
                                                       "trim_heap": trim, "trim_heap_decision": trim_why,
                                                       "loss_chunk": head_chunk(cfg.train.loss_chunk, _vocab(model) or 0),
                                                       "packing": data.report.get("packing")}})
    say(f"train: compile {'on' if compiled else 'off'} ({'; '.join(compile_why.get('why', ['as requested']))}); "
        f"gradient checkpointing {'on' if ckpt else 'off'} ({'; '.join(ckpt_why.get('why', ['as requested']))}); "
        f"passes {passes or 'one per micro-batch'} ({'; '.join(passes_why.get('why', ['as requested']))})")
    job = TrainJob(model, method, data.rows, data.sources, replace(cfg.train, compile=compiled, gradient_checkpointing=ckpt,
                                                        tokens_per_pass=passes, trim_heap=trim),
                   precision, run_dir, tok.pad_token_id, cfg.data.packing and objective.kind == "tokens",
                   data.heldout_rows, resume, objective=objective)
    job.probes = [GradInterference(job, **{k: v for k, v in d.items() if k != "name"})
                  for d in cfg.diagnostics if d["name"] == "grad_interference"]
    job.rows_at = stages
    phases.lap("prepare")
    if objective.kind == "online":
        job.rollouts = Rollouts(objective, tok, cfg.train.batch_size * cfg.train.grad_accum, precision,
                                cfg.data.max_length, cfg.train.seed)
    model, summary = train(job)
    phases.lap("train")
    if summary.get("profile"):
        say(format_summary(summary["profile"]) + f"\n  (details: {run_dir / 'profile'})")
    summary.update({"trainable_parameters": trainable, "total_parameters": total,
                    "train_seconds": round(time.perf_counter() - t_start, 1)})
    method.save_final(model, tok, run_dir / "final")
    save_head(model, run_dir / "final" / HEAD_FILE)
    write_json(run_dir / "final" / "tunelab.json", {"method": cfg.method, "base_model": model_info})
    phases.lap("save")

    tuned_eval, merged = {}, False
    if cfg.eval.tasks:
        say("evaluating the fine-tuned model")
        if cfg.eval.merge_adapters:  # the saved adapter stays as it is
            merged = method.mergeable
            model = method.merge(model) if merged else model
            say("evaluating with the adapters merged into the weights (eval.merge_adapters)" if merged else
                f"eval.merge_adapters: method {method.name!r} has nothing to merge; evaluated as trained")
        signal = signal_for(nat_spec(cfg.data.transforms), "success")  # a NAT run asks for success
        tuned_eval = evaluate_model(model, tok, cfg, precision, run_dir / "eval" / "tuned", quiet, signal=signal)
        tuned_eval |= _conditioning_check(model, tok, cfg, precision, run_dir / "eval" / "tuned", quiet)
    phases.lap("evaluate")
    tasks = recipe_tasks(cfg) if tuned_eval else {}
    regimes = {w: t for w, r in (("base", base_eval), ("tuned", tuned_eval)) if r and (t := regime_table(r, tasks))}
    if regimes.get("tuned"):
        say(format_regimes(regimes["tuned"], "prompt regimes (fine-tuned model):"))
    results = _results(cfg, base_eval, tuned_eval, summary,
                       {"name": run_dir.name, "precision": precision, "model": model_info,
                        "seconds": round(time.perf_counter() - t_start, 1), "reused": reused,
                        "phases": phases.seconds}
                       | ({"regimes": regimes} if regimes else {}) | ({"merged_for_eval": True} if merged else {}))
    write_json(run_dir / "results.json", results)
    if cfg.diagnostics:
        run_diagnostics(run_dir, cfg.diagnostics, say=say)
    report = report_run(run_dir)  # tunelab.report registers the writer (it sits above the runner)
    if report is not None:
        say(f"report: {report}")
    return run_dir


def _vocab(model) -> int | None:
    """The LM head's rows (the vocabulary the loss's head chunks span), or None without one."""
    head = base_model(model).get_output_embeddings()
    return None if head is None else int(head.weight.shape[0])


def _train_recipe_model(recipe: Path, runs: Path, say: Callable[[str], None]) -> Path:
    """A generated source's ``model: recipe:<recipe>``: run the recipe into ``runs`` (its folder)."""
    return run(recipe, out=str(runs), quiet=True)


set_recipe_runner(_train_recipe_model)  # tunelab.runner.recipe_model sits below this module


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """A finished run's ``results.json``."""
    return json.loads((Path(run_dir) / "results.json").read_text())
