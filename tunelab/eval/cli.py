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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.data.formats import DataError
from tunelab.eval.harness import EvalResult, evaluate, score_rows, write_jsonl
from tunelab.eval.tasks.base import EvalItem, EvalTask, get_task, parse_task_options
from tunelab.sandbox import SandboxUnavailable

ID_KEYS = ("task_id", "id", "question_id")
SAMPLING_TEMPERATURE = 0.8  # used when several samples are asked for with temperature 0


def register_tasks() -> None:
    """Import the task modules so their tasks are registered."""
    import tunelab.eval.tasks  # noqa: F401  (imports every task module)


def make_task(name: str, k: str | None = None, options: dict[str, Any] | None = None) -> EvalTask:
    """A task by name, built with constructor ``options``; ``k`` (``"1,10"``) sets code tasks' pass@k values."""
    task = get_task(name, **(options or {}))
    if k and hasattr(task, "ks"):
        from tunelab.eval.tasks.code_exec import parse_ks

        task.ks = parse_ks(k)
    return task


# ----------------------------------------------------------------------------- predictions


def read_predictions(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(``file:line``, row) for every non-blank line of a predictions JSONL."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"predictions file not found: {p}")
    rows = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{p}:{n}: expected a JSON object")
            rows.append((f"{p}:{n}", row))
    return rows


def prediction_item_id(
    row: dict[str, Any], items: dict[str, EvalItem], by_question: dict[str, str], where: str
) -> str:
    """The item id a prediction row refers to (``task_id`` / ``id`` / ``question_id``, or ``question`` text).

    Raises:
        DataError: Naming the row, when it names no item of the task.
    """
    for key in ID_KEYS:
        if row.get(key) is not None:
            item_id = str(row[key]).strip()
            if item_id not in items:
                raise DataError(f"{where}: unknown {key} {row[key]!r} (not an item of this task)")
            return item_id
    if isinstance(row.get("question"), str):
        item_id = by_question.get(row["question"].strip())
        if item_id is None:
            raise DataError(f"{where}: question text matches no item of this task: {row['question'][:80]!r}")
        return item_id
    raise DataError(f"{where}: no id ({', '.join(ID_KEYS)}) and no 'question' to match the row to an item")


def _row_turns(row: dict[str, Any], where: str) -> list[str] | None:
    """A predictions row's answer to each turn (``turns``, multi-turn tasks), or None."""
    answered = row.get("turns")
    if answered is None:
        return None
    if not isinstance(answered, list) or not answered or not all(isinstance(t, str) for t in answered):
        raise DataError(f"{where}: field 'turns': expected a list of strings (the answer to each turn)")
    return answered


def score_predictions(
    task: EvalTask, path: str | Path, *, limit: int | None = None, seed: int = 1234, out: Path | None = None
) -> EvalResult:
    """Score completions produced elsewhere; several rows with one id are that item's samples.

    Only items with predictions are scored (in the task's item order, at most ``limit``). For
    multi-turn tasks (``judge``) a row may give the answer to every turn as ``turns: [...]``.
    """
    if getattr(task, "kind", "generate") != "generate":
        raise DataError(f"task {task.name!r} scores log-likelihoods; it cannot score a predictions file")
    items = {it.id: it for it in task.items(None, seed)}
    by_question = {
        str(it.meta["question"]).strip(): it.id
        for it in items.values()
        if isinstance(it.meta.get("question"), str)
    }
    grouped: dict[str, list[str]] = {}
    turns: dict[str, list[str]] = {}
    for where, row in read_predictions(path):
        item_id = prediction_item_id(row, items, by_question, where)
        answered = _row_turns(row, where)
        if answered:
            turns.setdefault(item_id, answered)
            row.setdefault("completion", answered[0])
        if not isinstance(row.get("completion"), str):
            raise DataError(f"{where}: field 'completion': expected a string")
        grouped.setdefault(item_id, []).append(row["completion"])
    chosen = [it for it in items.values() if it.id in grouped][: limit if limit else None]
    comps = [grouped[it.id] for it in chosen]
    t0 = time.perf_counter()
    answers = (
        [turns.get(it.id, c[:1]) for it, c in zip(chosen, comps)] if hasattr(task, "follow_up") else None
    )
    rows = score_rows(task, chosen, comps, answers)
    if out is not None:
        write_jsonl(out, rows)
    return EvalResult(task.aggregate(rows), rows, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- models


def default_out(model: str) -> Path:
    """``<run>/eval/cli`` for a run folder, else ``runs/eval/<model-name>``."""
    from tunelab.runner.artifacts import is_run

    if is_run(model):
        return Path(model) / "eval" / "cli"
    name = Path(model).name if Path(model).expanduser().is_dir() else model.replace("/", "--")
    return Path("runs") / "eval" / (name or "model")


def evaluate_model(args: argparse.Namespace, tasks: dict[str, EvalTask], out: Path) -> dict[str, EvalResult]:
    """Load the model (or run) once and run every task on it."""
    import torch

    from tunelab.eval.tasks.choice import HFLoglikScorer, evaluate_loglik
    from tunelab.generate.hf import HFGenerator
    from tunelab.runner.artifacts import load_for_inference
    from tunelab.train.precision import decide

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok, _ = load_for_inference(args.model, device)
    precision, _ = decide("auto", device)
    gen = HFGenerator(model, tok, batch_size=args.batch_size, precision=precision)
    temperature = args.temperature
    if args.samples > 1 and temperature == 0:
        temperature = SAMPLING_TEMPERATURE
        print(
            f"[tunelab] {args.samples} samples per item: sampling at temperature {temperature}",
            file=sys.stderr,
        )
    results = {}
    for name, task in tasks.items():
        print(f"[tunelab] {name}: evaluating ({device}, {precision})", file=sys.stderr)
        if getattr(task, "kind", "generate") == "loglik":
            scorer = HFLoglikScorer(model, tok, batch_size=args.batch_size, precision=precision)
            results[name] = evaluate_loglik(task, scorer, limit=args.limit, out=out / f"{name}.jsonl")
        else:
            results[name] = evaluate(
                task,
                gen,
                limit=args.limit,
                max_new_tokens=args.max_new_tokens,
                samples=args.samples,
                temperature=temperature,
                out=out / f"{name}.jsonl",
            )
    return results


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
        name: {"scores": r.scores, "seconds": round(r.seconds, 2), "source": source}
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
    register_tasks()
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    options = parse_task_options(getattr(args, "task_option", None) or [], names)
    tasks = {n: make_task(n, args.k, options.get(n)) for n in names}
    if args.predictions:
        if len(tasks) != 1:
            raise ValueError("--predictions scores one task at a time; name exactly one in --tasks")
        out = Path(args.out or Path("runs") / "eval" / f"predictions-{Path(args.predictions).stem}")
        name, task = next(iter(tasks.items()))
        return (
            {name: score_predictions(task, args.predictions, limit=args.limit, out=out / f"{name}.jsonl")},
            tasks,
            out,
        )
    if not args.model:
        raise ValueError("name a model or run folder, or pass --predictions FILE")
    out = Path(args.out) if args.out else default_out(args.model)
    return evaluate_model(args, tasks, out), tasks, out


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
