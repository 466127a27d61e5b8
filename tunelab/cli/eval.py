"""``tunelab eval``: evaluate a model or run on tasks, or score a predictions file, with 95% CIs.

Per-item rows go to ``<out>/<task>.jsonl`` and the scores to ``<out>/scores.json``; the default
``<out>`` is ``<run>/eval/cli/`` for a run folder, else ``runs/eval/<model-name>/``. With ``--json``
stdout carries only ``{task: {metric: value, metric_ci: [lo, hi], ..., "n": n}}`` (code tasks add
``"isolation"``); everything else goes to stderr.

``--task-option task.key=value`` (repeatable; the value is parsed as YAML) passes a constructor
option to one task, e.g. ``gsm8k.fewshot=5`` or ``judge.mode=pairwise``; a bare ``key=value`` goes
to every named task whose constructor takes ``key``. An option no constructor takes is an error
listing the accepted ones (recipes: ``eval.task_options``, checked the same way).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.cli.common import Commands
from tunelab.config import is_run, run_config
from tunelab.data.transforms.nat import nat_spec, signal_for
from tunelab.eval.harness import EvalResult, evaluate_tasks
from tunelab.eval.predictions import score_predictions
from tunelab.eval.tasks.base import EvalTask, Signalled, get_task, parse_task_options
from tunelab.eval.tasks.code_exec import parse_ks
from tunelab.generate.build import BACKENDS, build_generator
from tunelab.sandbox import SandboxUnavailable


def make_task(name: str, k: str | None = None, options: dict[str, Any] | None = None) -> EvalTask:
    """A task by name, built with constructor ``options``; ``k`` (``"1,10"``) sets code tasks' pass@k values."""
    task = get_task(name, **(options or {}))
    if k and hasattr(task, "ks"):
        task.ks = parse_ks(k)
    return task


def run_signal(model: str | None, which: str) -> str:
    """The prompt signal for evaluating ``model``: a NAT-trained run asks for success (``auto``);
    ``success`` / ``failure`` / ``none`` choose (sanity checks); other models get none."""
    cfg = run_config(model) if model else None
    spec = nat_spec(cfg.data.transforms) if cfg else None
    if spec is None:
        if which in ("success", "failure"):
            raise ValueError(f"--signal {which}: {model} was not trained with a nat transform")
        return ""
    return signal_for(spec, "success" if which == "auto" else which)


def default_out(model: str) -> Path:
    """``<run>/eval/cli`` for a run folder, else ``runs/eval/<model-name>``."""
    if is_run(model):
        return Path(model) / "eval" / "cli"
    name = Path(model).name if Path(model).expanduser().is_dir() else model.replace("/", "--")
    return Path("runs") / "eval" / (name or "model")


# ----------------------------------------------------------------------------- output


def flatten(results: dict[str, EvalResult], tasks: dict[str, EvalTask]) -> dict[str, dict[str, Any]]:
    """``{task: {metric: value, metric_ci: [lo, hi], ..., "n": n}}`` (+ ``isolation`` for code tasks)."""
    flat: dict[str, dict[str, Any]] = {}
    for name, res in results.items():
        entry: dict[str, Any] = {}
        for metric, score in res.scores.items():
            entry[metric], entry[f"{metric}_ci"] = score["value"], score["ci"]
        primary = res.scores.get(tasks[name].primary) or next(iter(res.scores.values()), {"n": 0})
        entry["n"] = primary["n"]
        isolation = sorted({r["isolation"] for r in res.rows if "isolation" in r})
        if isolation:
            entry["isolation"] = ",".join(isolation)
        flat[name] = entry
    return flat


def table(results: dict[str, EvalResult]) -> str:
    """A plain text table: task, metric, value, 95% CI, n, seconds."""
    lines = [f"{'task':<14} {'metric':<24} {'value':>8}  {'95% CI':<19} {'n':>6} {'seconds':>8}"]
    for name, res in results.items():
        for metric, s in res.scores.items():
            ci = f"[{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"
            lines.append(
                f"{name:<14} {metric:<24} {s['value']:>8.3f}  {ci:<19} {s['n']:>6} {res.seconds:>8.1f}"
            )
    return "\n".join(lines)


def write_scores(out: Path, results: dict[str, EvalResult], source: str) -> Path:
    """``<out>/scores.json``: scores, seconds and the model or predictions file per task."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "scores.json"
    data = {
        name: {"scores": r.scores, "seconds": round(r.seconds, 2), "source": source,
               **({"retries": r.retries} if r.retries else {})}
        for name, r in results.items()
    }
    path.write_text(json.dumps(data, indent=1))
    return path


@contextlib.contextmanager
def _stdout_to_stderr(enabled: bool) -> Iterator[None]:
    if enabled:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    else:
        yield


def _run(args: argparse.Namespace) -> tuple[dict[str, EvalResult], dict[str, EvalTask], Path]:
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    options = parse_task_options(getattr(args, "task_option", None) or [], names)
    tasks = {n: make_task(n, args.k, options.get(n)) for n in names}
    signal = run_signal(args.model, getattr(args, "signal", "auto"))
    if signal:
        print(f"[tunelab] prompts carry the run's training signal: {signal!r}", file=sys.stderr)
        tasks = {n: Signalled(t, signal) for n, t in tasks.items()}
    if args.predictions:
        if len(tasks) != 1:
            raise ValueError("--predictions scores one task at a time; name exactly one in --tasks")
        out = Path(args.out or Path("runs") / "eval" / f"predictions-{Path(args.predictions).stem}")
        name, task = next(iter(tasks.items()))
        return (
            {name: score_predictions(task, args.predictions, limit=args.limit, seed=args.seed, out=out / f"{name}.jsonl")},
            tasks,
            out,
        )
    if not args.model:
        raise ValueError("name a model or run folder, or pass --predictions FILE")
    out = Path(args.out) if args.out else default_out(args.model)
    generator = build_generator(args.model, backend=args.backend, batch_size=args.batch_size)
    cfg = run_config(args.model)
    base = cfg.model.name if cfg else args.model
    for task in tasks.values():  # prompt-regime tasks count input tokens with the model's tokenizer
        getattr(task, "bind", lambda *a, **k: None)(getattr(generator, "tok", None), base)
    print(f"[tunelab] evaluating {args.model} ({type(generator).__name__}, "
          f"{getattr(generator, 'precision', 'remote')})", file=sys.stderr)
    results = evaluate_tasks(tasks, generator, limit=args.limit, seed=args.seed, max_new_tokens=args.max_new_tokens,
                             samples=args.samples, temperature=args.temperature, out_dir=out,
                             latency_items=args.latency_items)
    return results, tasks, out


def eval_command(args: argparse.Namespace) -> int:
    """Run ``tunelab eval`` from parsed arguments; returns the exit status."""
    try:
        with _stdout_to_stderr(args.json):
            results, tasks, out = _run(args)
            scores_path = write_scores(out, results, args.predictions or args.model)
    except (KeyError, ValueError, SandboxUnavailable) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(flatten(results, tasks), indent=1))
        return 0
    print(table(results))
    for name in results:
        print(f"[tunelab] {name}: per-item rows in {out / f'{name}.jsonl'}")
    print(f"[tunelab] scores in {scores_path}")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Evaluate a model or run on tasks, with confidence intervals (per-item rows written).

    Task options: --task-option gsm8k.fewshot=5 --task-option judge.mode=pairwise (repeatable;
    values parsed as YAML; a bare key=value applies to every task that takes it).
    """

    return eval_command(a)


COMMANDS: Commands = {
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
        p.add_argument("--latency-items", type=int, default=0, metavar="N",
                       help="also time N items per task one at a time (batch-1 latency, latency_batch1_s)"),
        p.add_argument("--seed", type=int, default=1234, help="item sampling and generation seed"),
        p.add_argument("--signal", default="auto", choices=["auto", "success", "failure", "none"],
                       help="prompt signal of a NAT-trained run (auto: success; failure/none: sanity checks)"),
        p.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="hf (local), openai (MODEL is http://host:port/v1#name), vllm (GPU); "
                            "auto: openai for a URL, else hf"),
        p.add_argument("--predictions", help="score a predictions JSONL instead of generating"),
        p.add_argument("--out", help="folder for per-item results"),
        p.add_argument("--json", action="store_true", help="print only JSON on stdout"))),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
