"""The one evaluation entry: tasks through a generator; per-item rows written (JSONL, stable ids).

:func:`evaluate_tasks` serves runs (base and tuned), ``tunelab eval`` and sweeps alike: generation
tasks go through :func:`evaluate`, log-likelihood tasks (``kind == "loglik"``) through
:func:`evaluate_loglik` with the scorer behind the same generator (same weights, same precision).

Multi-turn tasks (MT-Bench) define ``follow_up(item, answers) -> Prompt | None``: the next prompt of
the conversation (the model's own earlier ``answers`` in it), or None when it is over. The harness
generates one answer per follow-up (from the first sample, ``n=1``) until every conversation is over,
passes the per-turn answers to ``score_batch(items, completions, answers)`` and keeps them in the
rows (``answers``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tunelab.eval.tasks.base import EvalItem, EvalTask
from tunelab.generate.base import GenerationConfig, Generator
from tunelab.generate.loglik import LoglikScorer, scorer_for
from tunelab.io import write_jsonl

SAMPLING_TEMPERATURE = 0.8
"""Used when several samples per item are asked for at temperature 0 (identical greedy samples say nothing)."""


def converse(
    task: EvalTask,
    items: list[EvalItem],
    completions: list[list[str]],
    generator: Generator,
    cfg: GenerationConfig,
) -> list[list[str]]:
    """Per item, the model's answers turn by turn: its first completion, then one per follow-up prompt."""
    answers = [[c[0]] for c in completions]
    while todo := [(a, p) for it, a in zip(items, answers) if (p := task.follow_up(it, a)) is not None]:
        for (a, _), reply in zip(todo, generator.generate([p for _, p in todo], replace(cfg, n=1))):
            a.append(reply[0])
    return answers


@dataclass
class EvalResult:
    """What one task's evaluation gives: scores with CIs, per-item rows, and the time it took."""

    scores: dict[str, dict]
    """metric -> ``{"value", "ci", "n"}``."""
    rows: list[dict[str, Any]]
    """Per item, with stable ids."""
    seconds: float
    """Wall time of generation (or scoring)."""
    retries: dict[str, int] = field(default_factory=dict)
    """Requests a remote generator retried during this evaluation, by reason (none for local ones)."""


def evaluate(
    task: EvalTask,
    generator: Generator,
    *,
    limit: int | None = None,
    seed: int = 1234,
    max_new_tokens: int | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    out: Path | None = None,
) -> EvalResult:
    """Generate and score every item; writes per-item rows to ``out`` if given."""
    items = task.items(limit, seed)
    cfg = task.generation_config(max_new_tokens, n=samples, temperature=temperature, seed=seed)
    t0 = time.perf_counter()
    before = dict(getattr(generator, "retries", None) or {})
    completions = generator.generate([it.prompt for it in items], cfg)
    answers = converse(task, items, completions, generator, cfg) if hasattr(task, "follow_up") else None
    elapsed = time.perf_counter() - t0
    after = getattr(generator, "retries", None) or {}
    retries = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    rows = score_rows(task, items, completions, answers)
    if out is not None:
        write_jsonl(out, rows)
    return EvalResult(task.aggregate(rows), rows, elapsed, retries)


def score_rows(task, items: list, completions: list[list[str]], answers: list | None = None) -> list[dict[str, Any]]:
    """Score completions (n per item) and build the per-item rows; ``answers``: every turn's answer
    of multi-turn tasks. Tasks that score in bulk (sandboxed code, judges) get all items at once."""
    batch = getattr(task, "score_batch", None)
    if answers is not None:  # multi-turn tasks score every turn's answer
        scored = batch(items, completions, answers)
    elif batch:
        scored = batch(items, completions)
    else:
        scored = [task.score(it, c) for it, c in zip(items, completions)]
    return [
        {"id": it.id, **row, "completion": comps[0]}
        | ({"completions": comps} if len(comps) > 1 else {})
        | ({"answers": answers[i]} if answers is not None else {})
        for i, (it, comps, row) in enumerate(zip(items, completions, scored))
    ]


def evaluate_loglik(
    task: Any, scorer: LoglikScorer, *, limit: int | None = None, seed: int = 1234, out: Path | None = None
) -> EvalResult:
    """The log-likelihood counterpart of ``harness.evaluate``: score every choice of every item.

    Args:
        task: A task with ``kind == "loglik"`` (``items``, ``score_choices``, ``aggregate``).
        scorer: The model behind a :class:`LoglikScorer`.
        limit: Items at most.
        seed: Item sampling seed.
        out: Where to write the per-item rows (JSONL), if given.
    """
    items = task.items(limit, seed)
    pairs = [(it.prompt, c) for it in items for c in it.meta["choices"]]
    t0 = time.perf_counter()
    scores = scorer.loglik(pairs)
    counts = scorer.token_counts(pairs) if getattr(task, "needs_token_counts", False) else None
    elapsed = time.perf_counter() - t0
    rows, pos = [], 0
    for it in items:
        k = len(it.meta["choices"])
        extra = (counts[pos : pos + k],) if counts is not None else ()
        rows.append({"id": it.id, **task.score_choices(it, scores[pos : pos + k], *extra)})
        pos += k
    if out is not None:
        write_jsonl(out, rows)
    return EvalResult(task.aggregate(rows), rows, elapsed)


def evaluate_tasks(
    tasks: dict[str, EvalTask],
    generator: Generator,
    *,
    limit: int | None = None,
    seed: int = 1234,
    max_new_tokens: int | None = None,
    samples: int = 1,
    temperature: float = 0.0,
    out_dir: Path | None = None,
    log: bool = True,
) -> dict[str, EvalResult]:
    """Evaluate every task on one generator; the entry that runs, ``tunelab eval`` and sweeps share.

    Args:
        tasks: ``{name: task}``; per-item rows go to ``out_dir/<name>.jsonl``.
        generator: From ``tunelab.generate.build.build_generator`` (log-likelihood tasks need a
            local one).
        limit: Items per task (None: all).
        seed: Item sampling and generation seed.
        max_new_tokens: Generation budget (None: each task's own).
        samples: Completions per item; with ``temperature`` 0 and ``samples`` > 1 the
            completions are sampled at :data:`SAMPLING_TEMPERATURE`.
        temperature: 0 = greedy.
        out_dir: Folder for the per-item rows (None: not written).
        log: Print one line per task (score, CI, n, seconds) to stderr.
    """
    if samples > 1 and temperature == 0:
        temperature = SAMPLING_TEMPERATURE
        if log:
            print(f"[tunelab] {samples} samples per item: sampling at temperature {temperature}", file=sys.stderr)
    results: dict[str, EvalResult] = {}
    for name, task in tasks.items():
        out = out_dir / f"{name}.jsonl" if out_dir is not None else None
        if getattr(task, "kind", "generate") == "loglik":
            results[name] = evaluate_loglik(task, scorer_for(generator), limit=limit, seed=seed, out=out)
        else:
            results[name] = evaluate(task, generator, limit=limit, seed=seed, max_new_tokens=max_new_tokens,
                                     samples=samples, temperature=temperature, out=out)
        if log:
            s = results[name].scores.get(task.primary) or next(iter(results[name].scores.values()))
            r = results[name]
            retried = (f"; retries {sum(r.retries.values())} ("
                       + ", ".join(f"{k}: {v}" for k, v in r.retries.items()) + ")") if r.retries else ""
            print(f"  {name}: {task.primary} {s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}] "
                  f"n={s['n']} ({r.seconds:.0f}s){retried}", file=sys.stderr)
    return results
