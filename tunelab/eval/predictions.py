"""Score completions produced elsewhere (``tunelab eval --predictions FILE``).

A predictions JSONL holds one row per completion: the item it answers (``task_id`` / ``id`` /
``question_id``, or the ``question`` text) and the ``completion``; several rows with one id are
that item's samples, and multi-turn tasks take every turn's answer as ``turns: [...]``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunelab.eval.harness import EvalResult, score_rows
from tunelab.eval.tasks.base import EvalItem, EvalTask
from tunelab.io import DataError, read_jsonl, write_jsonl

ID_KEYS = ("task_id", "id", "question_id")


def read_predictions(path: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """(``file:line``, row) for every non-blank line of a predictions JSONL."""
    if not Path(path).is_file():
        raise DataError(f"predictions file not found: {path}")
    rows = read_jsonl(path, with_where=True)
    if not rows:
        raise DataError(f"{path}: no predictions (the file has no rows)")
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
