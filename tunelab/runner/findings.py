"""A study's findings from its sweep: the design, the tables, the power and a verdict per claim.

``tunelab sweep report <sweep folder> [--markdown]`` regenerates, from the sweep's outputs only
(``sweep.json``, the sweep file it names and the run folders), the section ``docs/findings.md`` keeps
for each study:

* the question and the design (arms, seeds, items per task, training steps, method, model);
* per task, every arm's mean with its item-bootstrap and seed-t 95% CIs and the paired test against
  the baseline, Holm-adjusted across arms (:mod:`tunelab.runner.aggregate`), and the factorial
  ANOVA's interaction rows where there are two or more factors;
* per hypothesis of the sweep file (``hypotheses:`` ``{claim, task, arm, versus, direction, effect,
  source}``): the paired difference on the task's items (each item averaged over seeds; exact McNemar
  or sign-flip, :func:`tunelab.eval.stats.compare_paired`), p Holm-adjusted across the study's
  hypotheses, a seed-level Welch t-test (training randomness: one score per seed), the minimum
  detectable effect at 80% power and the verdict;
* the diagnostics every run wrote (numeric leaves of ``<run>/diagnostics/*.json``, mean per arm).

Minimum detectable effect: the paired design's standardised effect at 80% power from statsmodels'
``TTestPower`` (two-sided, alpha = 0.05 / number of hypotheses: Holm's strictest step), times the
standard deviation of the per-item differences; in the units of the task's metric.

Verdicts. ``direction: better`` / ``worse``: *replicates* when the Holm-adjusted test is significant
in the claimed direction; *does not replicate* when it is significant the other way, or when it is not
significant although the design could detect the claimed ``effect`` (MDE <= effect); otherwise
*inconclusive at this power*. ``direction: equal`` (``effect`` is the margin, default the MDE):
*replicates* when the difference's CI lies within +-margin; *does not replicate* when the test finds a
difference; otherwise *inconclusive at this power*.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from tunelab.config import ConfigError
from tunelab.eval.stats import compare_paired, sign_flip_test
from tunelab.io import read_jsonl
from tunelab.runner.aggregate import arm_cells, fmt, item_values, run_records
from tunelab.runner.sweep import Arm, load_sweep

POWER, ALPHA = 0.8, 0.05


def minimum_detectable_effect(diffs: list[float], n_tests: int = 1, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The smallest true mean difference a paired test on ``diffs`` detects with ``power``
    (two-sided, ``alpha / n_tests``); NaN with fewer than 2 items or no spread."""
    x = np.asarray(diffs, dtype=float)
    if len(x) < 2 or float(np.ptp(x)) == 0.0:
        return math.nan
    d = TTestPower().solve_power(effect_size=None, nobs=len(x), alpha=alpha / max(n_tests, 1), power=power,
                                 alternative="two-sided")
    return float(d) * float(x.std(ddof=1))


def judge(direction: str, test: dict[str, Any], p_holm: float, mde: float, effect: float | None) -> str:
    """The verdict on one claim (see the module docstring)."""
    lo, hi = test["ci"]
    delta = test["delta"]
    significant = p_holm < ALPHA and (lo > 0 or hi < 0)
    if direction == "equal":
        margin = effect if effect is not None else mde
        if significant:
            return f"does not replicate: a difference of {delta:+.3f}"
        if not math.isnan(margin) and -margin <= lo and hi <= margin:
            return f"replicates: the difference lies within +-{margin:.3f}"
        return "inconclusive at this power"
    sign = 1 if direction == "better" else -1
    if significant:
        return "replicates" if sign * delta > 0 else "does not replicate: significant in the opposite direction"
    if effect is not None and not math.isnan(mde) and mde <= abs(effect):
        return f"does not replicate: no effect although the design detects {abs(effect):.3f}"
    return "inconclusive at this power"


Items = dict[str, dict[str, dict[str, list[float]]]]
"""task -> arm label -> item id -> values over seeds (higher is better)."""


def _arm_items(records: list[dict[str, Any]], task: str) -> dict[str, dict[str, list[float]]]:
    """arm label -> item id -> values over seeds (higher is better), read once per task by :func:`report`."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in records:
        values, _ = item_values(r["dir"], task)
        for item, value in values.items():
            out.setdefault(r["arm"].label, {}).setdefault(item, []).append(value)
    return out


def _seed_scores(records: list[dict[str, Any]], task: str, arm: str) -> list[float]:
    return [r["results"][task]["tuned"]["value"] for r in records
            if r["arm"].label == arm and task in r["results"]]


def hypotheses(sweep: Any, records: list[dict[str, Any]], items: Items) -> list[dict[str, Any]]:
    """Each hypothesis of ``sweep`` tested on the finished runs (see the module docstring)."""
    out = []
    for h in sweep.hypotheses:
        by_arm = items.get(h["task"], {})
        a, b = by_arm.get(h["versus"], {}), by_arm.get(h["arm"], {})
        common = sorted(set(a) & set(b))
        row: dict[str, Any] = {**h, "items": len(common)}
        if common:
            xa = [float(np.mean(a[i])) for i in common]
            xb = [float(np.mean(b[i])) for i in common]
            row["test"] = compare_paired(xa, xb, ids=common)
            row["mde"] = minimum_detectable_effect([y - x for x, y in zip(xa, xb)], len(sweep.hypotheses))
            sa, sb = _seed_scores(records, h["task"], h["versus"]), _seed_scores(records, h["task"], h["arm"])
            row["seed_scores"] = {"versus": sa, "arm": sb}
            if len(sa) >= 2 and len(sb) >= 2 and np.ptp(sa + sb) > 0:
                with warnings.catch_warnings():  # one arm constant (every seed at 100%) is a valid input
                    warnings.simplefilter("ignore", RuntimeWarning)
                    row["seed_p"] = float(sps.ttest_ind(sb, sa, equal_var=False).pvalue)
        out.append(row)
    tested = [r for r in out if "test" in r]
    if tested:
        for r, p in zip(tested, multipletests([r["test"]["p_value"] for r in tested], method="holm")[1]):
            r["p_holm"] = float(p)
            r["verdict"] = judge(r["direction"], r["test"], float(p), r["mde"], r["effect"])
            if p < ALPHA and not r.get("seed_p", 0.0) < ALPHA:
                r["verdict"] += (f" (on items; across training seeds p = {r['seed_p']:.2g}: seed variance is large)"
                                 if "seed_p" in r else " (on items; too few seeds for a seed-level test)")
    for r in out:
        r.setdefault("verdict", "not tested: no finished runs on both arms")
    return out


def interactions(sweep: Any, items: Items) -> dict[str, dict[str, Any]]:
    """Per task of a 2 x 2 design: the interaction on items, as a difference in differences.

    For each item (values averaged over seeds): ``(a11 - a10) - (a01 - a00)``, where the first index is
    the first factor's level (baseline 0) and the second the second factor's; tested against 0 with the
    sign-flip test (:func:`tunelab.eval.stats.sign_flip_test`), with its MDE. Positive: the second
    factor's effect is larger (better) at the first factor's other level. Empty unless exactly two
    factors with two levels each.
    """
    factors = list(sweep.factors)
    if len(factors) != 2 or any(len(levels) != 2 for levels in sweep.factors.values()):
        return {}
    f1, f2 = factors
    other = {f: next(lv for lv in sweep.factors[f] if lv != sweep.baseline[f]) for f in factors}
    label = {(i, j): Arm({f1: other[f1] if i else sweep.baseline[f1], f2: other[f2] if j else sweep.baseline[f2]},
                         {}).label for i in (0, 1) for j in (0, 1)}
    out = {}
    for task, by_arm in items.items():
        cells = [by_arm.get(label[c], {}) for c in ((0, 0), (0, 1), (1, 0), (1, 1))]
        common = sorted(set.intersection(*(set(c) for c in cells))) if all(cells) else []
        if len(common) < 2:
            continue
        m = [[float(np.mean(c[i])) for i in common] for c in cells]
        did = [(d - c) - (b - a) for a, b, c, d in zip(*m)]
        test = sign_flip_test([0.0] * len(did), did, ids=common)
        out[task] = {"contrast": f"({f2} effect at {f1}={other[f1]}) - ({f2} effect at {f1}={sweep.baseline[f1]})",
                     "delta": test["delta"], "ci": test["ci"], "p_value": test["p_value"], "items": len(did),
                     "mde": minimum_detectable_effect(did), "method": "sign-flip test of per-item difference in differences"}
    return out


def _flatten(tree: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a diagnostics result (``a.b.c`` keys), bookkeeping keys left out."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for k, v in tree.items():
            if k not in ("seconds", "positions", "n", "rows"):
                out.update(_flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        return {prefix[:-1]: float(tree)}
    return {}


def diagnostics(records: list[dict[str, Any]], limit: int = 8) -> dict[str, dict[str, dict[str, float]]]:
    """diagnostic -> arm -> key -> mean over the arm's runs (first ``limit`` keys)."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in records:
        for path in sorted((r["dir"] / "diagnostics").glob("*.json")):
            values = _flatten(json.loads(path.read_text()))
            arm = acc.setdefault(path.stem, {}).setdefault(r["arm"].label, {})
            for k, v in list(values.items())[:limit]:
                arm.setdefault(k, []).append(v)
    return {d: {arm: {k: float(np.mean(v)) for k, v in keys.items()} for arm, keys in arms.items()}
            for d, arms in acc.items()}


def resources(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """arm -> mean over its runs of training seconds, trainable parameters and peak memory (MB, the
    largest ``peak_mem_mb`` in ``metrics.jsonl``)."""
    acc: dict[str, dict[str, list[float]]] = {}
    for r in records:
        train = r["results"]["run"].get("train", {})
        arm = acc.setdefault(r["arm"].label, {})
        for key in ("train_seconds", "trainable_parameters"):
            if isinstance(train.get(key), (int, float)):
                arm.setdefault(key, []).append(float(train[key]))
        metrics = r["dir"] / "metrics.jsonl"
        peaks = [row["peak_mem_mb"] for row in read_jsonl(metrics) if "peak_mem_mb" in row] if metrics.is_file() else []
        if peaks:
            arm.setdefault("peak_mem_mb", []).append(float(max(peaks)))
    return {arm: {k: float(np.mean(v)) for k, v in keys.items()} for arm, keys in acc.items()}


def _design(sweep: Any, result: dict[str, Any]) -> list[str]:
    """Bullet lines describing the design."""
    cfg = sweep.runs[0].cfg
    levels = "; ".join(f"{f} in {{{', '.join(lv)}}}" for f, lv in sweep.factors.items())
    n_items = {t: len({i for arm in by_arm.values() for i in arm}) for t, by_arm in result["_items"].items()}
    items = ", ".join(f"{t}: {n_items.get(t, 0)}" for t in result["tasks"])
    method = ", ".join(f"{k}={v}" for k, v in cfg.method.items() if k in ("name", "r", "alpha"))
    sources = ", ".join(f"{s.name} x{s.count}" if s.count else s.name for s in cfg.data.sources)
    lines = [f"- arms: {levels} ({math.prod(len(lv) for lv in sweep.factors.values())} arms), baseline "
             + Arm(sweep.baseline, {}).label.replace(",", ", "),
             f"- seeds: {len(sweep.seeds)} per arm ({', '.join(map(str, sweep.seeds))}); runs finished: "
             f"{len(result['_records'])}/{len(sweep.runs)}",
             f"- model {cfg.model.name}; method {method}; data {sources}; {cfg.train.max_steps} steps of batch "
             f"{cfg.train.batch_size}, lr {cfg.train.lr}",
             f"- evaluation items per task: {items}"]
    if result.get("seconds"):
        lines.append(f"- wall time of the sweep on this machine: {result['seconds'] / 60:.1f} min")
    return lines


def report(target: str | Path) -> dict[str, Any]:
    """The study of a sweep: ``target`` is its folder (the sweep file recorded in ``sweep.json`` is
    read) or its sweep file (its folder is ``<out>/<name>``); nothing is rerun. Each task's per-item
    values are read from the run folders once and shared by the claims, the interaction and the design."""
    target = Path(target)
    if target.is_file():
        sweep = load_sweep(target)
        folder = sweep.folder
    else:
        folder, sweep = target, None
    if not (folder / "sweep.json").is_file():
        raise ConfigError(f"{folder}: not a sweep folder (no sweep.json); run `tunelab sweep <file>` first")
    result = json.loads((folder / "sweep.json").read_text())
    sweep = sweep or load_sweep(result["file"], out=str(folder.parent))
    records = run_records(sweep)
    tasks = dict.fromkeys([*result.get("tasks", {}), *(h["task"] for h in sweep.hypotheses)])
    items: Items = {t: _arm_items(records, t) for t in tasks}
    return {**result, "folder": str(folder), "target": str(target), "question": sweep.question,
            "hypotheses": hypotheses(sweep, records, items), "diagnostics": diagnostics(records),
            "resources": resources(records), "interactions": interactions(sweep, {t: items[t] for t in result["tasks"]}),
            "_sweep": sweep, "_records": records, "_items": items}


def markdown(study: dict[str, Any]) -> str:
    """The study's section of ``docs/findings.md``."""
    sweep, folder = study["_sweep"], Path(study["folder"])
    out = [f"## {study['name']}", ""]
    if study["question"]:
        out += [f"**Question.** {study['question']}", ""]
    out += ["**Design.**", *_design(sweep, study), ""]
    for task, t in study["tasks"].items():
        out += [f"**{task}** ({t['metric']}; untrained model {fmt((t.get('untrained') or {}).get('value'))}):", "",
                "| arm | seeds | mean | 95% CI (items) | 95% CI (seeds) | delta vs baseline | p (Holm) | verdict |",
                "|---|---|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(c) + " |" for c in arm_cells(t)]
        rows = [r for r in t["anova"].get("table", []) if " x " in r["term"]]
        if rows:
            out += ["", "Interaction (factorial ANOVA of run scores, seeds as replicates): " + "; ".join(
                f"{r['term']}: F = {fmt(r['F'], '.2f')}, p = {fmt(r['p_value'], '.3g')}" for r in rows)]
        if task in study.get("interactions", {}):
            i = study["interactions"][task]
            out += ["", f"Interaction on items (difference in differences, {i['contrast']}; positive = better): "
                    f"{i['delta']:+.3f} [{i['ci'][0]:+.3f}, {i['ci'][1]:+.3f}], p = {i['p_value']:.3g} "
                    f"(sign-flip, {i['items']} items), MDE {fmt(i['mde'])}"]
        out.append("")
    if study["hypotheses"]:
        out += ["**Findings under test** (paired on items averaged over seeds; p Holm-adjusted across "
                "the claims; MDE: minimum detectable effect at 80% power):", "",
                "| claim | task | arm vs | delta [95% CI] | p (Holm) | seed-level p | MDE | verdict |",
                "|---|---|---|---|---|---|---|---|"]
        for h in study["hypotheses"]:
            t = h.get("test")
            delta = f"{t['delta']:+.3f} [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]" if t else "-"
            out.append(f"| {h['claim']} | {h['task']} | {h['arm']} vs {h['versus']} | {delta} | "
                       f"{fmt(h.get('p_holm'), '.3g')} | {fmt(h.get('seed_p'), '.3g')} | {fmt(h.get('mde'))} | "
                       f"**{h['verdict']}** |")
        sources = sorted({h["source"] for h in study["hypotheses"] if h["source"]})
        out += [""] + [f"Source: {s}" for s in sources] + ([""] if sources else [])
    if study.get("resources"):
        out += ["**Resources** (mean per run on this machine):", "",
                "| arm | train seconds | trainable parameters | peak memory (MB) |", "|---|---|---|---|"]
        out += [f"| {arm} | {fmt(v.get('train_seconds'), '.0f')} | {fmt(v.get('trainable_parameters'), ',.0f')} | "
                f"{fmt(v.get('peak_mem_mb'), ',.0f')} |" for arm, v in study["resources"].items()]
        out.append("")
    for name, arms in study["diagnostics"].items():
        keys = sorted({k for a in arms.values() for k in a})
        out += [f"**Diagnostic `{name}`** (mean over each arm's runs):", "",
                "| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        out += [f"| {arm} | " + " | ".join(fmt(vals.get(k), ".4g") for k in keys) + " |" for arm, vals in arms.items()]
        out.append("")
    where = os.path.relpath(folder) if not os.path.relpath(folder).startswith("..") else str(folder)
    out += [f"Report: [{where}/report.html]({where}/report.html); regenerate this section: "
            f"`tunelab sweep report {study.get('target', where)} --markdown`", ""]
    return "\n".join(out)


def summary(study: dict[str, Any]) -> str:
    """The terminal view: the hypotheses' verdicts."""
    lines = [f"study {study['name']}: {study['question'] or '(no question in the sweep file)'}"]
    for h in study["hypotheses"]:
        t = h.get("test")
        lines.append(f"  {h['claim']} [{h['task']}: {h['arm']} vs {h['versus']}]: "
                     + (f"delta {t['delta']:+.3f} p(Holm) {h['p_holm']:.3g} MDE {fmt(h['mde'])} -> " if t else "")
                     + h["verdict"])
    if not study["hypotheses"]:
        lines.append("  (the sweep file states no hypotheses: see sweep.json for the arms' statistics)")
    return "\n".join(lines)
