"""Run an eval task through a generator; per-item rows are always written (JSONL, stable ids).

Multi-turn tasks (MT-Bench) define ``follow_up(item, answers) -> Prompt | None``: the next prompt of
the conversation (the model's own earlier ``answers`` in it), or None when it is over. The harness
generates one answer per follow-up (from the first sample, ``n=1``) until every conversation is over,
passes the per-turn answers to ``score_batch(items, completions, answers)`` and keeps them in the
rows (``answers``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.generate.base import GenerationConfig, Generator

if TYPE_CHECKING:  # eval.tasks imports this module
    from tunelab.eval.tasks.base import EvalItem, EvalTask


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomic JSONL write (tmp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    os.replace(tmp, path)


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
    scores: dict[str, dict]  # metric -> {"value", "ci", "n"}
    rows: list[dict[str, Any]]  # per item, with stable ids
    seconds: float


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
    completions = generator.generate([it.prompt for it in items], cfg)
    answers = converse(task, items, completions, generator, cfg) if hasattr(task, "follow_up") else None
    elapsed = time.perf_counter() - t0
    rows = score_rows(task, items, completions, answers)
    if out is not None:
        write_jsonl(out, rows)
    return EvalResult(task.aggregate(rows), rows, elapsed)


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
