"""Paired comparison of two runs (or of one run before and after fine-tuning), item by item.

Per-item rows are joined by id (``5`` and ``"5"`` are the same id). The per-item value is, first
found: ``c / n`` (code tasks: the unbiased per-problem pass@1), ``correct``, ``rating``, ``value``,
``score``, or minus ``loss`` (the perplexity task: lower is better, so ``delta`` > 0 means B's loss
is lower). :func:`tunelab.eval.paired.compare_paired` picks the test (exact McNemar for 0/1
outcomes, else the sign-flip permutation test) and gives a verdict only when the test and the CI agree.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tunelab.data.formats import DataError
from tunelab.eval.paired import compare_paired
from tunelab.io import read_jsonl

EVAL_SUBDIRS = ("eval/tuned", "eval/cli")
VALUE_KEYS = ("correct", "rating", "value", "score")


def item_value(row: dict[str, Any]) -> float | None:
    """The per-item outcome compared between runs, or None when the row has none.

    Perplexity rows give minus their loss per token: ``compare`` weighs items equally, so its delta
    can differ from the difference of the task's token-weighted ``loss``."""
    if isinstance(row.get("n"), int) and isinstance(row.get("c"), int) and row["n"] > 0:
        return row["c"] / row["n"]
    for key in VALUE_KEYS:
        value = row.get(key)
        if isinstance(value, (int, float)):  # bools too
            return float(value)
    if isinstance(row.get("loss"), (int, float)):
        return -float(row["loss"])
    return None


def read_rows(path: Path) -> dict[str, dict[str, Any]]:
    """``{id (str): row}`` from a per-item JSONL; duplicate ids are an error."""
    rows: dict[str, dict[str, Any]] = {}
    for where, row in read_jsonl(path, with_where=True):
        if "id" not in row:
            raise DataError(f"{where}: per-item row without an 'id'")
        key = str(row["id"]).strip()
        if key in rows:
            raise DataError(f"{where}: duplicate id {row['id']!r}")
        rows[key] = row
    return rows


def eval_dir(run: str | Path, subdirs: tuple[str, ...] = EVAL_SUBDIRS, itself: bool = True) -> Path:
    """The first of ``subdirs`` under ``run`` that holds per-item JSONL files (else ``run`` itself, if allowed)."""
    run = Path(run)
    for candidate in [run / s for s in subdirs] + ([run] if itself else []):
        if candidate.is_dir() and any(candidate.glob("*.jsonl")):
            return candidate
    looked = ", ".join(str(run / s) for s in subdirs)
    raise DataError(f"no per-item eval rows for {run}; looked in: {looked}")


def compare_dirs(dir_a: Path, dir_b: Path) -> dict[str, dict[str, Any]]:
    """Per task present in both folders: the paired comparison of B against A."""
    out: dict[str, dict[str, Any]] = {}
    tasks = sorted({p.stem for p in dir_a.glob("*.jsonl")} & {p.stem for p in dir_b.glob("*.jsonl")})
    for task in tasks:
        files = dir_a / f"{task}.jsonl", dir_b / f"{task}.jsonl"
        try:
            rows_a, rows_b = read_rows(files[0]), read_rows(files[1])
            result = compare_task(rows_a, rows_b)
        except DataError:
            raise
        except ValueError as e:  # a non-finite score, named by item id
            raise DataError(f"{files[0]} vs {files[1]}: {e}") from e
        if result is None:
            print(f"[tunelab] {task}: no common items with a value; skipped", file=sys.stderr)
            continue
        out[task] = result
    return out


def compare_task(rows_a: dict[str, dict], rows_b: dict[str, dict]) -> dict[str, Any] | None:
    """The paired test on items present (with a value) in both; None if there are none."""
    pairs = []
    for key, row_a in rows_a.items():
        if key in rows_b:
            va, vb = item_value(row_a), item_value(rows_b[key])
            if va is not None and vb is not None:
                pairs.append((key, va, vb))
    if not pairs:
        return None
    r = compare_paired([a for _, a, _ in pairs], [b for _, _, b in pairs], ids=[k for k, _, _ in pairs])
    return {
        "delta": r["delta"],
        "ci": r["ci"],
        "p_value": r["p_value"],
        "n": r["n"],
        "method": r["method"],
        "verdict": r["verdict"],
        **({"note": r["note"]} if "note" in r else {}),
        "only_a": len(rows_a) - len(pairs),
        "only_b": len(rows_b) - len(pairs),
    }


def compare_runs(run_a: str | Path, run_b: str | Path) -> dict[str, dict[str, Any]]:
    """Compare run B against run A on every task both evaluated (``delta = B - A``).

    Each run's rows are read from ``eval/tuned/`` (else ``eval/cli/``, else the folder itself).

    Returns:
        ``{task: {"delta", "ci", "p_value", "n", "method", "verdict", "only_a", "only_b"}}``.

    Raises:
        DataError: A run has no per-item rows, or the runs share no task.
    """
    dir_a, dir_b = eval_dir(run_a), eval_dir(run_b)
    out = compare_dirs(dir_a, dir_b)
    if not out:
        raise DataError(f"{dir_a} and {dir_b} share no task with common item ids")
    return out


def forgetting(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Base vs tuned within one run (``<run>/eval/base`` vs ``<run>/eval/tuned``): negative delta = forgetting."""
    run = Path(run_dir)
    return compare_dirs(
        eval_dir(run, ("eval/base",), itself=False), eval_dir(run, ("eval/tuned",), itself=False)
    )
