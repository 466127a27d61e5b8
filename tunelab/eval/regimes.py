"""The prompt-regime trade-off as one table: accuracy with CIs, input tokens and latency per item.

:func:`regime_table` summarises one evaluation (a run's base or tuned model) of the regime tasks
(:mod:`tunelab.eval.tasks.prompt_regimes`): per suite and regime, the primary score with its CI, input
tokens per item (mean, bootstrap CI), seconds per item (the task's generation time over its items: the
per-item latency when ``eval.batch_size`` is 1), the batch-1 latency measured on ``eval.latency_items``
items when asked, and, against the ``full`` regime on the same items, the paired test (exact McNemar) and
the fraction of input tokens saved.

:func:`sweep_regime_table` does the same across a sweep's arms and seeds (each item's outcome averaged
over seeds; scores with item-bootstrap CIs), adds the untrained model ("no fine-tuning") from the runs'
base evaluations, and tests every row against a reference row (default: no fine-tuning, full prompt) and
against the best full-prompt row, saying whether each row's mean lies within that row's CI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.eval.paired import compare_paired
from tunelab.eval.stats import bootstrap_ci, clustered_mean
from tunelab.io import read_jsonl

UNTRAINED = "no fine-tuning"
"""The arm label of the untrained model's rows."""


def _split(name: str) -> tuple[str, str] | None:
    """``(suite, regime)`` of a regime task name, or None."""
    for regime in ("full", "compressed", "query"):
        if name.endswith(f"_{regime}"):
            return name[: -len(regime) - 1], regime
    return None


def _paired(ref_rows: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The paired comparison of ``rows`` against ``ref_rows`` on their common items (``correct``)."""
    ref = {str(r["id"]): float(r["correct"]) for r in ref_rows if "correct" in r}
    common = [(str(r["id"]), float(r["correct"])) for r in rows if "correct" in r and str(r["id"]) in ref]
    if not common:
        return None
    return compare_paired([ref[i] for i, _ in common], [v for _, v in common], ids=[i for i, _ in common])


def regime_table(results: dict[str, Any], tasks: dict[str, Any]) -> dict[str, Any]:
    """Per suite, one entry per regime evaluated (see the module docstring).

    Args:
        results: ``{task: EvalResult}`` of one model.
        tasks: ``{task: task}`` (regime tasks are those with a ``regime`` attribute).
    """
    out: dict[str, Any] = {}
    for name, result in results.items():
        task, split = tasks.get(name), _split(name)
        if task is None or split is None or not hasattr(task, "regime"):
            continue
        n = len(result.rows)
        entry = {"task": name, "metric": task.primary, "score": result.scores.get(task.primary),
                 "input_tokens": result.scores.get("input_tokens"),
                 "seconds_per_item": result.seconds / n if n else math.nan,
                 "latency_batch1_s": result.scores.get("latency_batch1_s"), "rows": result.rows}
        out.setdefault(split[0], {})[split[1]] = entry
    for regimes in out.values():
        full = regimes.get("full")
        for regime, entry in regimes.items():
            if full is not None and regime != "full":
                entry["vs_full"] = _paired(full["rows"], entry["rows"])
                tf, tr = (full["input_tokens"] or {}).get("value"), (entry["input_tokens"] or {}).get("value")
                entry["token_saving"] = 1 - tr / tf if tf and tr is not None else None
        for entry in regimes.values():
            entry.pop("rows")
    return out


def _fmt(score: dict[str, Any] | None, digits: int = 3) -> str:
    if not score or score.get("value") is None or (isinstance(score["value"], float) and math.isnan(score["value"])):
        return "-"
    lo, hi = score.get("ci", [math.nan, math.nan])
    return f"{score['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def format_regimes(table: dict[str, Any], title: str = "") -> str:
    """A run's regime table (from :func:`regime_table`) as text."""
    lines = [title] if title else []
    for suite, regimes in table.items():
        lines.append(f"{suite}:  {'regime':10s} {'score [95% CI]':>24s} {'input tokens/item':>26s} "
                     f"{'s/item':>8s} {'batch-1 s/item':>22s} {'saved':>6s}  vs full (paired)")
        for regime, e in regimes.items():
            vs = e.get("vs_full")
            saved = e.get("token_saving")
            lines.append(f"  {'':{len(suite)}s}{regime:10s} {_fmt(e['score']):>24s} {_fmt(e['input_tokens'], 1):>26s} "
                         f"{e['seconds_per_item']:8.3f} {_fmt(e.get('latency_batch1_s')):>22s} {'' if saved is None else f'{saved:6.1%}':>6s}  "
                         + (f"delta {vs['delta']:+.3f} p={vs['p_value']:.3g} ({vs['verdict']})" if vs else "-"))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- across a sweep


def _run_rows(run_dir: Path, when: str, task: str) -> dict[str, dict[str, Any]]:
    path = run_dir / "eval" / when / f"{task}.jsonl"
    return {str(r["id"]): r for r in read_jsonl(path)} if path.is_file() else {}


def _cell(rows_by_seed: list[dict[str, dict[str, Any]]], seconds: list[float]) -> dict[str, Any]:
    """One table row from each seed's per-item rows of one (arm, task)."""
    items: dict[str, list[float]] = {}
    tokens: dict[str, float] = {}
    for rows in rows_by_seed:
        for i, r in rows.items():
            if "correct" in r:
                items.setdefault(i, []).append(float(r["correct"]))
            if "input_tokens" in r:
                tokens[i] = float(r["input_tokens"])
    return {"score": clustered_mean(list(items.values())) if items else None,
            "items": {i: float(np.mean(v)) for i, v in items.items()},
            "input_tokens": bootstrap_ci(list(tokens.values())) if tokens else None,
            "seconds_per_item": float(np.mean(seconds)) if seconds else math.nan, "seeds": len(rows_by_seed)}


def _test(ref: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any] | None:
    """Paired test of ``cell`` against ``ref`` on common items (values averaged over seeds)."""
    common = sorted(set(ref["items"]) & set(cell["items"]))
    if not common:
        return None
    result = compare_paired([ref["items"][i] for i in common], [cell["items"][i] for i in common], ids=common)
    ci = (ref.get("score") or {}).get("ci")
    value = (cell.get("score") or {}).get("value")
    result["within_ci"] = bool(ci and value is not None and ci[0] <= value <= ci[1])
    tf, tc = (ref.get("input_tokens") or {}).get("value"), (cell.get("input_tokens") or {}).get("value")
    result["token_saving"] = 1 - tc / tf if tf and tc is not None else None
    return result


def sweep_regime_table(folder: str | Path, reference: tuple[str, str] = (UNTRAINED, "full")) -> dict[str, Any]:
    """Every (arm, regime) of a sweep's regime tasks, plus the untrained model (see the module docstring).

    Args:
        folder: The sweep folder (with ``sweep.json``).
        reference: ``(arm label, regime)`` every row is tested against.

    Returns:
        ``{suite: {"rows": [{arm, regime, task, score, input_tokens, seconds_per_item, seeds,
        vs_reference, vs_best_full}], "reference": ..., "best_full": ...}}``.
    """
    sweep = json.loads((Path(folder) / "sweep.json").read_text())
    runs = [(name, r["arm"]) for name, r in sweep["runs"].items()]
    run_dirs = {name: Path(folder) / "runs" / name for name, _ in runs}
    tasks = sorted({p.stem for d in run_dirs.values() for p in (d / "eval" / "tuned").glob("*.jsonl")
                    if _split(p.stem)})
    out: dict[str, Any] = {}
    for task in tasks:
        suite, regime = _split(task)
        cells: dict[tuple[str, str], dict[str, Any]] = {}
        base = [(name, _run_rows(run_dirs[name], "base", task)) for name, _ in runs]
        base = [(n, rows) for n, rows in base if rows]
        if base:  # the untrained model: the same for every run (greedy, same items); one copy is enough
            cells[(UNTRAINED, regime)] = _cell([base[0][1]], _seconds(run_dirs[base[0][0]], "base", task))
        for arm in dict.fromkeys(a for _, a in runs):
            names = [n for n, a in runs if a == arm and _run_rows(run_dirs[n], "tuned", task)]
            if names:
                secs = [s for n in names for s in _seconds(run_dirs[n], "tuned", task)]
                cells[(arm, regime)] = _cell([_run_rows(run_dirs[n], "tuned", task) for n in names], secs)
        entry = out.setdefault(suite, {"cells": {}})
        entry["cells"].update({(a, r, task): c for (a, r), c in cells.items()})
    for entry in out.values():
        entry.update(_finish(entry.pop("cells"), reference))
    return out


def _seconds(run_dir: Path, when: str, task: str) -> list[float]:
    """Seconds per item of one run's evaluation of ``task`` (from ``results.json``'s regime table)."""
    path = run_dir / "results.json"
    if not path.is_file():
        return []
    table = json.loads(path.read_text()).get("run", {}).get("regimes", {}).get(when, {})
    split = _split(task)
    entry = table.get(split[0], {}).get(split[1]) if split else None
    return [entry["seconds_per_item"]] if entry and entry.get("seconds_per_item") is not None else []


def _finish(cells: dict[tuple[str, str, str], dict[str, Any]], reference: tuple[str, str]) -> dict[str, Any]:
    """Rows with their paired tests against the reference and the best full-prompt row."""
    ref = next((c for (a, r, _), c in cells.items() if (a, r) == reference), None)
    full = [(a, c) for (a, r, _), c in cells.items() if r == "full" and c.get("score")]
    best_arm, best = max(full, key=lambda x: x[1]["score"]["value"], default=(None, None))
    rows = []
    for (arm, regime, task), c in cells.items():
        rows.append({"arm": arm, "regime": regime, "task": task, "score": c["score"],
                     "input_tokens": c["input_tokens"], "seconds_per_item": c["seconds_per_item"], "seeds": c["seeds"],
                     "vs_reference": _test(ref, c) if ref is not None and c is not ref else None,
                     "vs_best_full": _test(best, c) if best is not None and c is not best else None})
    order = {"full": 0, "compressed": 1, "query": 2}
    rows.sort(key=lambda r: (order[r["regime"]], r["arm"] != UNTRAINED))  # arms keep the sweep's order
    return {"rows": rows, "reference": list(reference), "best_full": [best_arm, "full"] if best_arm else None}


def format_sweep_regimes(table: dict[str, Any]) -> str:
    """:func:`sweep_regime_table` as text: one block per suite, one line per (arm, regime)."""
    lines = []
    for suite, entry in table.items():
        ref, best = entry["reference"], entry["best_full"]
        lines.append(f"\n{suite} (reference: {ref[0]} / {ref[1]}; best full prompt: "
                     f"{best[0] if best else '-'})")
        lines.append(f"  {'arm':28s} {'regime':10s} {'seeds':>5s} {'score [95% CI]':>24s} {'tokens/item':>12s} "
                     f"{'s/item':>8s} {'saved':>6s} {'vs reference':>22s} {'vs best full':>22s}")
        for r in entry["rows"]:
            tok = r["input_tokens"]["value"] if r["input_tokens"] else math.nan
            vr, vb = r["vs_reference"], r["vs_best_full"]
            saved = vr.get("token_saving") if vr else None
            lines.append(f"  {r['arm'][:28]:28s} {r['regime']:10s} {r['seeds']:5d} {_fmt(r['score']):>24s} "
                         f"{tok:12.1f} {r['seconds_per_item']:8.3f} {'' if saved is None else f'{saved:6.1%}':>6s} "
                         f"{_vs(vr):>22s} {_vs(vb):>22s}")
    return "\n".join(lines)


def _vs(t: dict[str, Any] | None) -> str:
    if not t:
        return "-"
    return f"{t['delta']:+.3f} p={t['p_value']:.2g}{' in CI' if t['within_ci'] else ''}"
