"""Run an eval task through a generator; per-item rows are always written (JSONL, stable ids)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.generate.base import Generator

if TYPE_CHECKING:  # eval.tasks imports this module
    from tunelab.eval.tasks.base import EvalTask


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomic JSONL write (tmp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for r in rows:
            f.write(json.dumps(r, default=str) + "\n")
    os.replace(tmp, path)


@dataclass
class EvalResult:
    scores: dict[str, dict]  # metric -> {"value", "ci", "n"}
    rows: list[dict[str, Any]]  # per item, with stable ids
    seconds: float


def evaluate(task: EvalTask, generator: Generator, *, limit: int | None = None, seed: int = 1234,
             max_new_tokens: int | None = None, samples: int = 1, temperature: float = 0.0,
             out: Path | None = None) -> EvalResult:
    """Generate and score every item; writes per-item rows to ``out`` if given."""
    items = task.items(limit, seed)
    cfg = task.generation_config(max_new_tokens, n=samples, temperature=temperature, seed=seed)
    t0 = time.perf_counter()
    completions = generator.generate([it.prompt for it in items], cfg)
    elapsed = time.perf_counter() - t0
    # tasks that score in bulk (sandboxed code, judges) get all items at once
    batch = getattr(task, "score_batch", None)
    scored = batch(items, completions) if batch else [task.score(it, c) for it, c in zip(items, completions)]
    rows = []
    for it, comps, row in zip(items, completions, scored):
        rows.append({"id": it.id, **row, "completion": comps[0],
                     **({"completions": comps} if len(comps) > 1 else {})})
    if out is not None:
        write_jsonl(out, rows)
    return EvalResult(task.aggregate(rows), rows, elapsed)
