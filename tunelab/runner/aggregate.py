"""A sweep's statistics: per-arm scores, paired tests against the baseline, main effects and interactions.

Per task (its primary metric) and arm, over the arm's finished runs (one per seed):

* ``mean``: the mean over seeds and items, with ``ci_items`` (bootstrap resampling items, each item
  keeping its values from every seed: :func:`tunelab.eval.stats.clustered_mean`) and ``ci_seeds``
  (t interval over the seeds' scores, statsmodels ``DescrStatsW``; it needs >= 2 seeds).
* ``mean_items`` / ``ci_items``: the per-item mean (items weighted equally) and its CI; the
  ``mean`` of a token-weighted metric (perplexity's loss) can differ slightly from it.
* ``vs_baseline``: the paired comparison with the baseline arm on the same items (each item's value
  averaged over seeds; exact McNemar for 0/1 values, else the sign-flip test,
  :func:`tunelab.eval.paired.compare_paired`), p-values Holm-adjusted across arms (statsmodels
  ``multipletests``) and the verdict taken with the adjusted p-value ("better than the baseline" /
  "worse than the baseline"; ``delta`` is arm minus baseline, higher is better, a loss negated).
* ``anova``: a factorial ANOVA of the run scores (one per arm and seed; seeds are the replicates),
  sum-to-zero contrasts, type II sums of squares (statsmodels ``ols`` + ``anova_lm``): one row per
  main effect and interaction. It needs >= 2 seeds (residual degrees of freedom).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import DescrStatsW

from tunelab.eval.paired import compare_paired, verdict
from tunelab.eval.stats import clustered_mean


def run_records(sweep: Any, found: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One entry per recorded run of the sweep (its study records, :mod:`tunelab.runner.records`):
    ``arm`` (an :class:`~tunelab.runner.sweep_file.Arm`), ``seed``, ``name``, ``results``, ``items``
    (task -> item id -> value, higher is better), ``signs`` (task -> +1, or -1 for a loss) and the
    ``record`` itself; stale records are left out (``sweep.recorded()`` says which). ``found``: the
    records already read (else they are read here)."""
    found = sweep.recorded()[0] if found is None else found
    out = []
    for p in sweep.runs:
        record = found.get(p.name)
        if record is None:
            continue
        out.append({"arm": p.arm, "seed": p.seed, "name": p.name, "results": record["results"], "record": record,
                    "items": {t: {r["id"]: float(r["value"]) for r in v["rows"]} for t, v in record["items"].items()},
                    "signs": {t: int(v["sign"]) for t, v in record["items"].items()}})
    return out


def _seed_ci(scores: list[float]) -> list[float]:
    """t interval of the mean over seeds (NaN with fewer than 2 seeds)."""
    if len(scores) < 2:
        return [math.nan, math.nan]
    lo, hi = DescrStatsW(np.asarray(scores, dtype=float)).tconfint_mean(alpha=0.05)
    return [float(lo), float(hi)]


def _anova(rows: list[dict[str, Any]], factors: list[str]) -> dict[str, Any]:
    """Factorial ANOVA of run scores (see the module docstring)."""
    varying = [f for f in factors if len({r[f] for r in rows}) > 1]
    if not varying:
        return {"note": "no factor varies"}
    if len({r["score"] for r in rows}) == 1:
        return {"note": "every run scored the same: there is no variation to attribute"}
    frame = pd.DataFrame([{**{f"f{i}": r[f] for i, f in enumerate(varying)}, "score": r["score"]} for r in rows])
    formula = "score ~ " + " * ".join(f"C(f{i}, Sum)" for i in range(len(varying)))
    model = ols(formula, data=frame).fit()
    if model.df_resid < 1:
        return {"note": "no residual degrees of freedom: the interaction test needs at least 2 seeds per arm"}
    table = anova_lm(model, typ=2)
    names = {f"C(f{i}, Sum)": f for i, f in enumerate(varying)}
    out = []
    for term, row in table.iterrows():
        label = "residual" if term == "Residual" else " x ".join(names[t] for t in str(term).split(":"))
        out.append({"term": label, "df": float(row["df"]), "sum_sq": float(row["sum_sq"]),
                    "F": None if pd.isna(row["F"]) else float(row["F"]),
                    "p_value": None if pd.isna(row["PR(>F)"]) else float(row["PR(>F)"])})
    return {"method": "OLS, sum contrasts, type II sums of squares (statsmodels anova_lm)", "table": out}


def _task(sweep: Any, records: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """The statistics of one task across arms."""
    metric = next(r["results"][task]["metric"] for r in records if task in r["results"])
    arms: dict[str, dict[str, Any]] = {}
    for r in records:
        if task not in r["results"]:
            continue
        entry = arms.setdefault(r["arm"].label, {"levels": r["arm"].levels, "runs": [], "scores": [], "items": {}})
        entry["runs"].append(r["name"])
        entry["scores"].append(r["results"][task]["tuned"]["value"])
        values, entry["sign"] = r["items"].get(task, {}), r["signs"].get(task, 1)
        for item, value in values.items():
            entry["items"].setdefault(item, []).append(value)
    baseline = ",".join(f"{f}={lv}" for f, lv in sweep.baseline.items())
    out_arms: dict[str, Any] = {}
    tests: list[tuple[str, dict]] = []
    base_items = arms.get(baseline, {}).get("items", {})
    for label, a in arms.items():
        score = clustered_mean(list(a["items"].values())) if a["items"] else None
        sign = a.get("sign", 1)
        ci_items = sorted(sign * c for c in score["ci"]) if score else [math.nan, math.nan]
        out_arms[label] = {
            "levels": a["levels"], "seeds": len(a["scores"]), "runs": a["runs"],
            "mean": float(np.mean(a["scores"])), "seed_scores": a["scores"],
            "mean_items": sign * score["value"] if score else math.nan, "ci_items": ci_items,
            "ci_seeds": _seed_ci(a["scores"]),
        }
        common = sorted(set(a["items"]) & set(base_items))
        if label != baseline and common:
            tests.append((label, compare_paired([float(np.mean(base_items[i])) for i in common],
                                                [float(np.mean(a["items"][i])) for i in common], ids=common)))
    if tests:
        adjusted = multipletests([t["p_value"] for _, t in tests], method="holm")[1]
        for (label, t), p_holm in zip(tests, adjusted):
            t["p_holm"] = float(p_holm)
            decision, note = verdict({**t, "p_value": float(p_holm)})
            t["verdict"] = {"b better": "better than the baseline", "a better": "worse than the baseline"
                            }.get(decision, decision)
            if note:
                t["note"] = note
            out_arms[label]["vs_baseline"] = t
    factors = list(sweep.factors)
    rows = [{**r["arm"].levels, "score": r["results"][task]["tuned"]["value"]} for r in records if task in r["results"]]
    base = next((r["results"][task].get("base") for r in records if task in r["results"]), None)
    higher = all(a.get("sign", 1) == 1 for a in arms.values())
    return {"metric": metric, "higher_is_better": higher, "baseline_arm": baseline, "untrained": base, "arms": out_arms,
            "anova": _anova(rows, factors)}


def aggregate(sweep: Any, status: dict[str, dict[str, Any]],
              recorded: tuple[dict[str, dict[str, Any]], list[str]] | None = None) -> dict[str, Any]:
    """``sweep.json``: the design, every run's status, and per task the statistics above, computed
    from the study's records alone (no run folder is read; ``recorded``: ``sweep.recorded()`` when
    the caller has read it already)."""
    found, stale = recorded or sweep.recorded()
    records = run_records(sweep, found)
    recorded = {r["name"] for r in records}
    tasks = sorted({t for r in records for t, v in r["results"].items() if t != "run" and "tuned" in v})
    reused = {"data": sum(bool(r["results"]["run"].get("reused", {}).get("data")) for r in records),
              "base_eval": sum(bool(r["results"]["run"].get("reused", {}).get("base_eval")) for r in records)}
    return {
        "name": sweep.name, "file": str(Path(sweep.path).resolve()), "folder": str(sweep.folder),
        "records": str(sweep.records),
        "design": {"factors": {f: list(levels) for f, levels in sweep.factors.items()}, "seeds": sweep.seeds,
                   "baseline": sweep.baseline, "runs": len(sweep.runs)},
        "runs": {p.name: {"arm": p.arm.label, "seed": p.seed,
                          **status.get(p.name, {"status": "done" if p.name in recorded else "not run"})}
                 for p in sweep.runs},
        "stale_records": stale,
        "run_seconds": round(sum(float(r["record"].get("seconds") or 0) for r in records), 1),
        "reused": {"runs_finished": len(records), "data_from_cache": reused["data"],
                   "base_eval_from_cache": reused["base_eval"]},
        "tasks": {t: _task(sweep, records, t) for t in tasks},
    }


def fmt(value: float | None, spec: str = ".3f") -> str:
    """A number for a table: ``-`` for none or NaN."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def arm_cells(task_stats: dict[str, Any]) -> list[list[str]]:
    """One task's arms as table cells: arm, seeds, mean, CI (items), CI (seeds), delta vs baseline,
    p (Holm across arms), verdict; the baseline's delta cell says so. The terminal table and
    ``tunelab sweep report``'s markdown print these."""
    rows = []
    for label, a in task_stats["arms"].items():
        vs = a.get("vs_baseline")
        cis = [f"[{fmt(lo)}, {fmt(hi)}]" for lo, hi in (a["ci_items"], a["ci_seeds"])]
        none = ["(baseline)", "", ""] if label == task_stats.get("baseline_arm") else ["-", "", "the baseline has no score here"]
        tail = [f"{vs['delta']:+.3f}", f"{vs['p_holm']:.3g}", vs["verdict"]] if vs else none
        rows.append([label, str(a["seeds"]), f"{a['mean']:.3f}", *cis, *tail])
    return rows


def format_table(result: dict[str, Any]) -> str:
    """The terminal summary of ``sweep.json``."""
    lines = []
    runs = result["runs"].values()
    failed = [r for r in runs if r["status"] == "failed"]
    lines.append(f"sweep {result['name']}: {sum(r['status'] != 'not run' for r in runs)}/{len(result['runs'])} "
                 f"runs, {len(failed)} failed; reused data {result['reused']['data_from_cache']}, "
                 f"base evaluations {result['reused']['base_eval_from_cache']} times")
    for task, t in result["tasks"].items():
        lines.append(f"\n{task} ({t['metric']}; baseline {t['baseline_arm']})")
        lines.append(f"  {'arm':34s} {'seeds':>5s} {'mean':>7s} {'CI (items)':>17s} {'CI (seeds)':>17s} "
                     f"{'delta vs base':>14s} {'p (Holm)':>9s}  verdict")
        for c in arm_cells(t):
            lines.append(f"  {c[0][:34]:34s} {c[1]:>5s} {c[2]:>7s} {c[3]:>17s} {c[4]:>17s} {c[5]:>14s} {c[6]:>9s}  {c[7]}")
        anova = t["anova"]
        if "table" in anova:
            lines.append("  ANOVA (run scores): " + "; ".join(
                f"{row['term']}: F={fmt(row['F'], '.2f')} p={fmt(row['p_value'], '.3g')}"
                for row in anova["table"] if row["term"] != "residual"))
        else:
            lines.append(f"  ANOVA: {anova['note']}")
    for r in failed:
        lines.append(f"failed: {r['arm']} seed {r['seed']}: {r.get('error', '')}")
    return "\n".join(lines)
