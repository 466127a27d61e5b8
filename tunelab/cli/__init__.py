"""The ``tunelab`` command line: one table {command: function}; help comes from docstrings.

Every command is a thin layer over a library call (``tunelab.run``, ``tunelab.evaluate`` ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tunelab.cli.eval import eval_command
from tunelab.config import ConfigError, builtin_recipes, load_recipe
from tunelab.data.formats import FORMATS
from tunelab.data.tasks import TASK_FAMILIES
from tunelab.data.transforms.base import TRANSFORMS
from tunelab.diagnostics import DIAGNOSTICS, run_diagnostics
from tunelab.envs.base import ENVS, get_env
from tunelab.envs.sample import check_sample_args
from tunelab.envs.sample import sample as sample_trajectories
from tunelab.eval.regimes import format_regimes, format_sweep_regimes, sweep_regime_table
from tunelab.eval.tasks.base import EVAL_TASKS, get_task, task_names
from tunelab.evolve import EvolveError, evolve, inspect_evolved, is_evolved, load_evolve_config
from tunelab.evolve.config import parse_operator_flag, parse_prices
from tunelab.evolve.estimate import estimate as estimate_evolve
from tunelab.evolve.operators import describe_operators
from tunelab.evolve.seeds import load_seeds
from tunelab.generate.base import GenerationConfig
from tunelab.generate.build import BACKENDS, build_generator
from tunelab.io import DataError, FolderLocked, StorageError, write_text
from tunelab.methods import METHODS
from tunelab.models.load import ALIASES, ModelError
from tunelab.registry import RegistryError, first_doc_line
from tunelab.regularizers import REGULARIZERS
from tunelab.report import findings, findings_doc
from tunelab.report.data_report import inspect_recipe
from tunelab.report.run_report import run_report, sweep_report
from tunelab.runner import plan as plan_mod
from tunelab.runner.compare import compare_runs
from tunelab.runner.run import load_results, run
from tunelab.runner.sweep import BACKENDS as SWEEP_BACKENDS
from tunelab.runner.sweep import check_sweep, is_sweep_file, load_sweep, run_sweep
from tunelab.runner.validate import validate
from tunelab.serve import serve_model
from tunelab.train.artifacts import export
from tunelab.train.objectives import OBJECTIVES
from tunelab.ui import serve_ui


def cmd_quickstart(a: argparse.Namespace) -> int:
    """Fine-tune smollm2-135m-instruct with LoRA on built-in arithmetic problems; evaluate before/after."""

    recipe = builtin_recipes()["quickstart"]  # the packaged recipe, whatever the current folder holds
    run_dir = run(recipe, a.overrides, out=a.out, force=a.force, resume=a.resume)
    res = load_results(run_dir)
    print("\n[tunelab] quickstart results (held-out, exact verifier, 95% CI):")
    for task, r in res.items():
        if task == "run" or "base" not in r:
            continue
        b, t = r["base"], r["tuned"]
        print(f"  {task:10s} base {b['value']:6.1%} [{b['ci'][0]:.1%}, {b['ci'][1]:.1%}]  ->  "
              f"tuned {t['value']:6.1%} [{t['ci'][0]:.1%}, {t['ci'][1]:.1%}]  (n={t['n']})")
    print(f"[tunelab] run folder: {run_dir}  ({res['run']['seconds']:.0f}s)")
    report = run_dir / "report.html" if (run_dir / "report.html").is_file() else run_report(run_dir)
    print(f"[tunelab] report: {report}")
    return 0


def cmd_diagnose(a: argparse.Namespace) -> int:
    """Run diagnostics on a finished run (CKA drift, weight change, linearity, forgetting ...) and update its report."""

    specs = [{"name": n} for n in a.only.split(",")] if a.only else None
    results = run_diagnostics(a.run, specs)
    print(json.dumps({k: {"seconds": v.get("seconds"), **({"error": v["error"]} if "error" in v else {})}
                      for k, v in results.items()}, indent=1))
    print(f"[tunelab] report: {run_report(a.run)}", file=sys.stderr)
    return 0


def cmd_sample(a: argparse.Namespace) -> int:
    """Sample agent trajectories: N attempts per task through an environment, verified, resumable."""

    options = dict(_option(o) for o in a.env_option)
    env = get_env(a.env, **options)
    settings = {"attempts": a.attempts, "limit": a.limit, "temperature": a.temperature, "max_steps": a.max_steps,
                "max_new_tokens": a.max_new_tokens, "max_live": a.max_live}
    check_sample_args(**settings)  # before the model loads or the output file is touched
    generator = build_generator(a.model, backend=a.backend, batch_size=a.batch_size, progress=False)
    summary = sample_trajectories(env, a.env, generator, a.out, seed=a.seed, **settings)
    print(json.dumps(summary, indent=1))
    return 0


def cmd_evolve(a: argparse.Namespace) -> int:
    """Evol-Instruct: rewrite seed instructions for rounds, eliminate failed evolutions, answer; a dataset with lineage.

    SEEDS is an instruction file, task:instruct (programmatic operators: --evolver programmatic), or a
    recipe YAML with an ``evolve:`` section. A killed run continues where it stopped when rerun.
    """

    if a.list_operators:
        print(describe_operators())
        return 0
    recipe = a.seeds if a.seeds.endswith((".yaml", ".yml")) else None
    cfg = load_evolve_config(recipe, a.overrides, seeds=None if recipe else a.seeds, evolver=a.evolver,
                             answerer=a.answerer, judge=a.judge, rounds=a.rounds, out=a.out, limit=a.limit,
                             operators=parse_operator_flag(a.operators), seed=a.seed, concurrency=a.concurrency,
                             backend=a.backend, prices=parse_prices(a.prices), progress=False if a.quiet else None,
                             require_out=not a.estimate)
    if a.estimate:
        print(json.dumps(estimate_evolve(cfg, load_seeds(cfg.seeds, cfg.limit, cfg.seed, cfg.recipe_dir)), indent=1))
        return 0
    try:
        report = evolve(cfg, say=lambda m: print(m, file=sys.stderr))
    except EvolveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[tunelab] dataset: {report['dataset']} ({report['dataset_rows']} rows); "
          f"report: {cfg.folder / 'report.json'}")
    return 0


def _option(text: str) -> tuple[str, Any]:
    """``key=value`` with the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"option {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    return key, yaml.safe_load(raw)


def cmd_ui(a: argparse.Namespace) -> int:
    """A local web app over a folder of runs and sweeps: reports, side-by-side answers, blind rating."""

    serve_ui(a.runs, host=a.host, port=a.port)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    """Write (again) the self-contained report.html of a run folder or a sweep folder; prints its path."""

    folder = Path(a.folder)
    if (folder / "sweep.json").is_file():
        path = sweep_report(json.loads((folder / "sweep.json").read_text()))
    elif (folder / "config.yaml").is_file():
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
    elif (folder / "results.json").is_file():
        table = load_results(folder)["run"].get("regimes", {})
        text = "\n".join(format_regimes(t, f"{'untrained' if w == 'base' else 'fine-tuned'} model:")
                         for w, t in table.items()) or "no prompt-regime tasks in this run"
    else:
        raise DataError(f"{folder}: not a run folder (no results.json) or a sweep folder (no sweep.json)")
    print(json.dumps(table, indent=2, default=str) if a.json else text)
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    """Run a recipe: data -> train -> eval -> results (skipped if results exist; --force redoes)."""

    run_dir = run(a.recipe, a.overrides, out=a.out, resume=a.resume, force=a.force,
                  data_cache=a.data_cache, base_eval_cache=a.base_eval_cache)
    print(f"[tunelab] run folder: {run_dir}")
    return 0


def cmd_sweep(a: argparse.Namespace) -> int:
    """Run a factorial sweep (recipe x factors x seeds) and aggregate it: per-arm CIs, tests, interactions.

    ``tunelab sweep report <sweep folder | sweep file> [--markdown]``: the study's findings from its outputs (design,
    tables, each hypothesis's paired test, power and verdict, diagnostics); written to
    ``<sweep folder>/findings.md`` too; ``--into docs/findings.md`` also replaces the study's section there
    and copies its report page to ``docs/studies/``.
    """

    if a.file in ("report", "plan", "pilot"):
        if not a.folder:
            raise ConfigError(f"tunelab sweep {a.file}: name the sweep file"
                              + (" (or its study folder studies/<name>, or its sweep folder)" if a.file == "report" else ""))
        return {"report": _sweep_report, "plan": _sweep_plan, "pilot": _sweep_pilot}[a.file](a)
    if a.folder:
        raise ConfigError(f"tunelab sweep: unexpected argument {a.folder!r} (did you mean `tunelab sweep report`?)")
    result = run_sweep(a.file, jobs=a.jobs, backend=a.backend, address=a.address, resume=not a.restart, out=a.out,
                       quiet=a.json, records=a.records, budget=a.budget, max_runs=a.max_runs,
                       accept_floor_ceiling=a.accept_floor_ceiling)
    if a.json:
        print(json.dumps(result, indent=2, default=str))
    failed = sum(r["status"] == "failed" for r in result["runs"].values())
    print(f"[tunelab] sweep folder: {result['folder']} (sweep.json); records: {result['records']}"
          f"{f'; {failed} run(s) failed' if failed else ''}", file=sys.stderr)
    return 1 if failed else 0


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
    print(f"[tunelab] plan {'saved to' if saved else 'frozen (runs beyond the pilot are recorded):'} "
          f"{sweep.study_folder / 'plan.json'}", file=sys.stderr)
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


def cmd_findings(a: argparse.Namespace) -> int:
    """Write docs/findings.md: every study's section (question, design, plan, pilot, arms with CIs, claims
    with verdicts, diagnostics, hosts) from its committed records under STUDIES; never edit it by hand."""

    doc, names = findings_doc.write_findings(a.studies, a.out, pages=not a.no_pages)
    print(f"[tunelab] {doc}: {len(names)} stud{'ies' if len(names) != 1 else 'y'} ({', '.join(names)})")
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    """Check a recipe or a sweep file (keys, types, names, files, hypotheses; every problem at once)
    without doing any work."""

    if is_sweep_file(a.recipe):
        problems = check_sweep(a.recipe)
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        if not problems:
            print(f"{a.recipe}: ok (sweep: {len(load_sweep(a.recipe).runs)} runs)")
        return 1 if problems else 0
    problems = validate(load_recipe(a.recipe, a.overrides))
    for p in problems:
        print(f"error: {a.recipe}: {p}", file=sys.stderr)
    if not problems:
        print(f"{a.recipe}: ok")
    return 1 if problems else 0


def cmd_ls(a: argparse.Namespace) -> int:
    """List what a recipe can name: models, sources (task families, formats), methods, tasks, transforms,
    diagnostics, environments, objectives."""

    sections = {
        "models": [(n, a_.description) for n, a_ in ALIASES.items()] + [("<owner/name>", "any hub id"),
                                                                         ("<dir>", "any local HF folder")],
        "sources": [(f"task: {n}", first_doc_line(c)) for n, c in TASK_FAMILIES.items()]
        + [(f"format: {n}", _first_sentence(c) or "file format") for n, c in FORMATS.items()],
        "methods": [(n, first_doc_line(c)) for n, c in METHODS.items()]
        + [(f"regularizer: {n}", first_doc_line(c)) for n, c in REGULARIZERS.items()],
        "tasks": [(n, _task_doc(n)) for n in task_names()],
        "transforms": [(n, first_doc_line(c)) for n, c in TRANSFORMS.items()],
        "diagnostics": [(n, first_doc_line(c)) for n, c in DIAGNOSTICS.items()],
        "envs": [(n, first_doc_line(c)) for n, c in ENVS.items()],
        "objectives": [(n, first_doc_line(c)) for n, c in OBJECTIVES.items()],
    }
    for name, rows in sections.items():
        if a.what and a.what != name:
            continue
        print(f"{name}:")
        for key, desc in rows:
            print(f"  {key:28s} {desc}")
    return 0


def _first_sentence(obj: Any) -> str:
    """The first sentence of an object's docstring, on one line (at most 90 characters)."""
    text = " ".join((obj.__doc__ or "").split()).split(". ")[0].rstrip(".")
    return text if len(text) <= 90 else text[:89] + "…"


def _task_doc(name: str) -> str:

    if name in EVAL_TASKS:
        return first_doc_line(EVAL_TASKS.get(name))
    task = get_task(name)
    return f"{task.split} split of the built-in `{task.family.name}` family (exact verifier)"


def cmd_data(a: argparse.Namespace) -> int:
    """Inspect the realised data of a recipe: mixture, samples with loss masks, length histograms."""

    if is_evolved(a.recipe):  # an Evol-Instruct dataset: items beside their parents
        return inspect_evolved(a.recipe, a.samples, a.json)
    return inspect_recipe(a.recipe, a.overrides, as_json=a.json, n_samples=a.samples)


def cmd_eval(a: argparse.Namespace) -> int:
    """Evaluate a model or run on tasks, with confidence intervals (per-item rows written).

    Task options: --task-option gsm8k.fewshot=5 --task-option judge.mode=pairwise (repeatable;
    values parsed as YAML; a bare key=value applies to every task that takes it).
    """

    return eval_command(a)


def cmd_compare(a: argparse.Namespace) -> int:
    """Paired statistics between two runs (joins per-item results by id)."""

    out = compare_runs(a.run_a, a.run_b)
    print(json.dumps(out, indent=2) if a.json else _fmt_compare(out))
    return 0


def _fmt_compare(out: dict) -> str:
    lines = []
    for task, r in out.items():
        lines.append(f"{task}: delta {r['delta']:+.3f} CI [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] "
                     f"p={r['p_value']:.3g} n={r['n']} ({r['method']}) -> {r['verdict']}"
                     + (f"  ({r['note']})" if r.get("note") else ""))
    return "\n".join(lines)


def cmd_chat(a: argparse.Namespace) -> int:
    """Talk to a model or a fine-tuned run (``--prompt`` for one shot)."""

    gen = build_generator(a.model, backend=a.backend, progress=False)
    cfg = GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=a.temperature)
    history: list[dict] = [{"role": "system", "content": a.system}] if a.system else []
    prompts = [a.prompt] if a.prompt else None
    while True:
        text = prompts.pop(0) if prompts else (None if a.prompt else _read_user())
        if text is None:
            return 0
        history.append({"role": "user", "content": text})
        reply = gen.generate([history], cfg)[0][0]
        history.append({"role": "assistant", "content": reply})
        print(reply if a.prompt else f"assistant> {reply}")
        if a.prompt and not prompts:
            return 0


def _read_user() -> str | None:
    try:
        text = input("you> ").strip()
    except EOFError:
        return None
    return None if text in ("/exit", "/quit") else text


def cmd_export(a: argparse.Namespace) -> int:
    """Write a run's weights as standard artefacts (peft adapter / HF checkpoint; --merge: merged HF model)."""

    try:
        print(f"[tunelab] exported to {export(a.run, a.out, a.merge)}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    """Serve a model or run as an OpenAI-compatible endpoint (chat and completions) on HOST:PORT."""

    serve_model(a.model, host=a.host, port=a.port, batch_size=a.batch_size, model_name=a.model_name)
    return 0


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides (values parsed as YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunelab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    table: dict[str, tuple[Callable[[argparse.Namespace], int], Callable[[argparse.ArgumentParser], None]]] = {
        "quickstart": (cmd_quickstart, lambda p: (
            p.add_argument("--out", default="runs", help="folder for the run folder (default: runs)"),
            p.add_argument("--force", action="store_true", help="redo even if results exist"),
            p.add_argument("--resume", action="store_true", help="continue from the last checkpoint"),
            _overrides(p))),
        "run": (cmd_run, lambda p: (
            p.add_argument("recipe", help="recipe YAML"), _overrides(p),
            p.add_argument("--out", help="folder for the run folder (default: recipe's `out`, else runs)"),
            p.add_argument("--resume", action="store_true", help="continue from the last checkpoint exactly"),
            p.add_argument("--force", action="store_true", help="redo even if results exist"),
            p.add_argument("--data-cache", help="folder of built data shared between runs (a sweep's)"),
            p.add_argument("--base-eval-cache", help="folder of base-model evaluations shared between runs"))),
        "sweep": (cmd_sweep, lambda p: (
            p.add_argument("file", help="sweep YAML (question, hypotheses, recipe, factors, seeds, baseline); "
                                        "or `plan FILE`, `pilot FILE`, `report FILE|STUDY|FOLDER`"),
            p.add_argument("folder", nargs="?", help="with plan/pilot/report: the sweep file (report: or its study "
                                                     "folder studies/<name>, or its sweep folder)"),
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
        "validate": (cmd_validate, lambda p: (p.add_argument("recipe"), _overrides(p))),
        "ls": (cmd_ls, lambda p: p.add_argument(
            "what", nargs="?", choices=["models", "sources", "methods", "tasks", "transforms", "diagnostics", "envs",
                                   "objectives"])),
        "data": (cmd_data, lambda p: (
            p.add_argument("action", choices=["inspect"]), p.add_argument("recipe"), _overrides(p),
            p.add_argument("--json", action="store_true", help="print only the mixture report as JSON"),
            p.add_argument("--samples", type=int, default=3, help="samples to render with their loss mask"))),
        "eval": (cmd_eval, lambda p: (
            p.add_argument("model", nargs="?", help="model name/dir or run folder (not needed with --predictions)"),
            p.add_argument("--tasks", "--task", dest="tasks", required=True, help="comma-separated task names"),
            p.add_argument("--limit", type=int, default=None, help="items per task"),
            p.add_argument("--task-option", action="append", default=[], metavar="TASK.KEY=VALUE",
                           help="a task constructor option, value parsed as YAML (repeatable): "
                                "gsm8k.fewshot=5, judge.mode=pairwise; a bare KEY=VALUE goes to every "
                                "task that takes KEY; unknown options fail listing the accepted ones"),
            p.add_argument("--k", default=None, help="pass@k values to report, e.g. 1,10"),
            p.add_argument("--samples", type=int, default=1, help="completions per item"),
            p.add_argument("--temperature", type=float, default=0.0),
            p.add_argument("--max-new-tokens", type=int, default=None),
            p.add_argument("--batch-size", type=int, default=16),
            p.add_argument("--seed", type=int, default=1234, help="item sampling and generation seed"),
            p.add_argument("--signal", default="auto", choices=["auto", "success", "failure", "none"],
                           help="prompt signal of a NAT-trained run (auto: success; failure/none: sanity checks)"),
            p.add_argument("--backend", default="auto", choices=BACKENDS,
                           help="hf (local), openai (MODEL is http://host:port/v1#name), vllm (GPU); "
                                "auto: openai for a URL, else hf"),
            p.add_argument("--predictions", help="score a predictions JSONL instead of generating"),
            p.add_argument("--out", help="folder for per-item results"),
            p.add_argument("--json", action="store_true", help="print only JSON on stdout"))),
        "diagnose": (cmd_diagnose, lambda p: (
            p.add_argument("run", help="a finished run folder"),
            p.add_argument("--only", help="comma-separated diagnostics (default: the recipe's, else all)"))),
        "sample": (cmd_sample, lambda p: (
            p.add_argument("env", help="an environment (tunelab ls envs)"),
            p.add_argument("--model", required=True, help="model name/dir, run folder or http://host:port/v1#name"),
            p.add_argument("--backend", default="auto", choices=BACKENDS),
            p.add_argument("--attempts", type=int, default=4, help="attempts per task"),
            p.add_argument("--limit", type=int, default=20, help="tasks"),
            p.add_argument("--temperature", type=float, default=0.8),
            p.add_argument("--max-steps", type=int, default=6),
            p.add_argument("--max-new-tokens", type=int, default=128),
            p.add_argument("--batch-size", type=int, default=16),
            p.add_argument("--max-live", type=int, default=256,
                           help="attempts advanced together (a finished one is written and replaced at once)"),
            p.add_argument("--seed", type=int, default=0),
            p.add_argument("--env-option", action="append", default=[], metavar="KEY=VALUE",
                           help="an environment option, e.g. source=gsm8k"),
            p.add_argument("--out", required=True, help="trajectories JSONL (appended; a rerun resumes)"))),
        "evolve": (cmd_evolve, lambda p: (
            p.add_argument("seeds", nargs="?", default="",
                           help="instruction file, task:instruct, or a recipe with an evolve: section"),
            _overrides(p),
            p.add_argument("--evolver", help="model name/dir, run folder, http://host:port/v1#name, or programmatic"),
            p.add_argument("--answerer", help="who answers (default: the evolver)"),
            p.add_argument("--judge", help="who judges Equal / Not Equal (default: the evolver)"),
            p.add_argument("--rounds", type=int, help="evolution rounds (default 2)"),
            p.add_argument("--out", help="dataset JSONL (work folder: <out>.evolve/)"),
            p.add_argument("--limit", type=int, help="seeds to use (the first N)"),
            p.add_argument("--operators", help="a,b (uniform) or a=2,b=1 (weights); --list-operators"),
            p.add_argument("--seed", type=int), p.add_argument("--concurrency", type=int),
            p.add_argument("--backend", choices=BACKENDS),
            p.add_argument("--prices", help="per million tokens: YAML file or inline {evolver: {input: 0.15, output: 0.6}}"),
            p.add_argument("--estimate", action="store_true", help="print the token and cost estimate and stop"),
            p.add_argument("--list-operators", action="store_true", help="list the operators and stop"),
            p.add_argument("--quiet", action="store_true", help="no progress bars"))),
        "ui": (cmd_ui, lambda p: (
            p.add_argument("--runs", default="runs", help="folder of runs and sweeps (ratings.sqlite is kept there)"),
            p.add_argument("--host", default="127.0.0.1"), p.add_argument("--port", type=int, default=8501))),
        "report": (cmd_report, lambda p: p.add_argument("folder", help="a run folder or a sweep folder")),
        "regimes": (cmd_regimes, lambda p: (p.add_argument("folder", help="a run folder or a sweep folder"),
                                            p.add_argument("--json", action="store_true"))),
        "compare": (cmd_compare, lambda p: (
            p.add_argument("run_a"), p.add_argument("run_b"), p.add_argument("--json", action="store_true"))),
        "chat": (cmd_chat, lambda p: (
            p.add_argument("model", help="model name/dir, run folder or http://host:port/v1#name"),
            p.add_argument("--backend", default="auto", choices=BACKENDS),
            p.add_argument("--prompt", help="one message, print the reply and exit"),
            p.add_argument("--system", help="system prompt"),
            p.add_argument("--max-new-tokens", type=int, default=256),
            p.add_argument("--temperature", type=float, default=0.0))),
        "export": (cmd_export, lambda p: (
            p.add_argument("run"), p.add_argument("--out"),
            p.add_argument("--merge", action="store_true", help="fold adapters into the base weights"))),
        "serve": (cmd_serve, lambda p: (
            p.add_argument("model", help="model name/dir or run folder"),
            p.add_argument("--host", default="127.0.0.1"), p.add_argument("--port", type=int, default=8000),
            p.add_argument("--model-name", help="the name clients ask for (default: the model argument)"),
            p.add_argument("--batch-size", type=int, default=16))),
    }
    for name, (fn, add_args) in table.items():
        doc = (fn.__doc__ or "").strip()
        p = sub.add_parser(name, help=doc.splitlines()[0], description=doc)
        add_args(p)
        p.set_defaults(fn=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may come after options (`run r.yaml --out x a.b=c`); argparse stops at the option
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra

    try:
        return args.fn(args)
    except (ConfigError, DataError, ModelError, RegistryError, FolderLocked, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
