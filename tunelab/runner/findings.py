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
  or sign-flip, :func:`tunelab.eval.stats.compare_paired`); for ``direction: equal`` also the
  equivalence test (TOST, statsmodels ``ttost_paired``) against the claim's margin; the claim's own
  test (the difference test for better/worse, TOST for equal) Holm-adjusted across the study's claims;
  a seed-level paired t-test (runs matched by training seed, one-sided in the claimed direction,
  two-sided for ``equal``: training randomness, one score per seed); the minimum detectable effect at
  80% power and the verdict;
* the diagnostics every run wrote (numeric leaves of ``<run>/diagnostics/*.json``, mean per arm).

Two Holm families, never mixed: the arm tables adjust each arm's test against the baseline across
that task's arms (:mod:`tunelab.runner.aggregate`); the claims table adjusts across the study's claims.

Minimum detectable effect: the paired design's standardised effect at 80% power from statsmodels'
``TTestPower`` (two-sided, alpha = 0.05 / number of hypotheses: Holm's strictest step), times the
standard deviation of the per-item differences; in the units of the task's metric. NaN below the
fewest items at which the exact tests can reach that alpha at all
(:func:`tunelab.eval.stats.min_items_for_verdict`): no effect is detectable there.

Signs: every delta is arm minus comparison with higher better, a loss negated, so a positive delta on a
loss task is a lower loss.

Verdicts. ``direction: better`` / ``worse``: *replicates* when the Holm-adjusted test is significant
in the claimed direction; *does not replicate* when it is significant the other way, or when it is not
significant although the design could detect the claimed ``effect`` (MDE <= effect); otherwise
*inconclusive at this power*. ``direction: equal`` (``effect`` is the equivalence margin, required and
positive): *replicates* when the Holm-adjusted TOST rejects a difference of at least the margin (a
significant but smaller difference still replicates the claim); *does not replicate* when it does not
and the difference test is significant at alpha / number of claims (Bonferroni); otherwise
*inconclusive at this power*. TOST uses the paired t statistic: for 0/1 items a normal approximation,
fine at the study sizes here (>= 100 items).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from tunelab.config import ConfigError
from tunelab.eval.stats import compare_paired, proportion_score, sign_flip_test
from tunelab.io import write_text
from tunelab.runner.aggregate import aggregate, arm_cells, fmt, run_records
from tunelab.runner.plan import BELOW, mde
from tunelab.runner.report import sweep_report
from tunelab.runner.sweep import ENSEMBLE, Arm, load_sweep

POWER, ALPHA = 0.8, 0.05


def minimum_detectable_effect(diffs: list[float], n_tests: int = 1, alpha: float = ALPHA,
                              power: float = POWER) -> float:
    """The smallest true mean difference a paired test on ``diffs`` detects with ``power``
    (two-sided, ``alpha / n_tests``; :func:`tunelab.runner.plan.mde`); NaN with no spread, or with
    fewer items than the exact paired tests need to reach that alpha at all."""
    x = np.asarray(diffs, dtype=float)
    if len(x) < 2 or float(np.ptp(x)) == 0.0:
        return math.nan
    return mde(len(x), float(x.std(ddof=1)), n_tests, alpha, power)


def judge(direction: str, test: dict[str, Any], p_holm: float, mde: float, effect: float | None,
          n_claims: int = 1) -> str:
    """The verdict on one claim (see the module docstring). For ``equal`` claims ``p_holm`` is the
    adjusted TOST p-value and ``test["p_value"]`` the unadjusted difference test's."""
    lo, hi = test["ci"]
    delta = test["delta"]
    if direction == "equal":
        if p_holm < ALPHA:
            return f"replicates: equivalent within +-{effect:.3f} (TOST)"
        if test["p_value"] < ALPHA / max(n_claims, 1) and (lo > 0 or hi < 0):
            return f"does not replicate: a difference of {delta:+.3f}"
        return f"inconclusive at this power (equivalence within +-{effect:.3f} not shown)"
    significant = p_holm < ALPHA and (lo > 0 or hi < 0)
    sign = 1 if direction == "better" else -1
    if significant:
        return "replicates" if sign * delta > 0 else "does not replicate: significant in the opposite direction"
    if effect is not None and not math.isnan(mde) and mde <= abs(effect):
        return f"does not replicate: no effect although the design detects {abs(effect):.3f}"
    return "inconclusive at this power"


def equivalence_p(a: list[float], b: list[float], margin: float) -> float:
    """TOST p-value that the paired mean difference ``b - a`` lies within ``(-margin, margin)``
    (statsmodels ``ttost_paired``); 1 with no spread outside the margin, 0 with none inside."""
    d = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(d) < 2:
        return math.nan
    if float(np.ptp(d)) == 0.0:
        return 0.0 if abs(float(d[0])) < margin else 1.0
    return float(ttost_paired(np.asarray(b, dtype=float), np.asarray(a, dtype=float), -margin, margin)[0])


def seed_test(versus: dict[int, float], arm: dict[int, float], direction: str) -> dict[str, Any] | None:
    """Paired t-test over training seeds (runs matched by seed; scores higher-is-better): one-sided in
    the claimed direction, two-sided for ``equal``; None with fewer than 2 common seeds or no spread."""
    seeds = sorted(set(versus) & set(arm))
    d = [arm[s] - versus[s] for s in seeds]
    if len(seeds) < 2 or float(np.ptp(d)) == 0.0:
        return None
    alternative = {"better": "greater", "worse": "less"}.get(direction, "two-sided")
    p = sps.ttest_rel([arm[s] for s in seeds], [versus[s] for s in seeds], alternative=alternative).pvalue
    return {"p_value": float(p), "seeds": seeds, "delta": float(np.mean(d)), "alternative": alternative}


Items = dict[str, dict[str, dict[str, list[float]]]]
"""task -> arm label -> item id -> values over seeds (higher is better)."""


def _arm_items(records: list[dict[str, Any]], task: str) -> dict[str, dict[str, list[float]]]:
    """arm label -> item id -> values over seeds (higher is better), read once per task by :func:`report`."""
    out: dict[str, dict[str, list[float]]] = {}
    for r in records:
        for item, value in r["items"].get(task, {}).items():
            out.setdefault(r["arm"].label, {}).setdefault(item, []).append(value)
    return out


def ensemble_items(records: list[dict[str, Any]], arm: str, task: str) -> dict[str, list[float]]:
    """item id -> [1 or 0]: whether the ensemble of ``arm``'s seeds picks the right choice on ``task``,
    the ensemble's class probabilities being the mean over seeds of each run's softmax over its choice
    log-likelihoods (as the paper's ensembles average predicted probabilities). Empty when the task
    keeps no log-likelihoods (not multiple choice) or the arm has no recorded run."""
    probs: dict[str, list[np.ndarray]] = {}
    answer: dict[str, int] = {}
    for r in records:
        if r["arm"].label != arm:
            continue
        for row in r["record"]["items"].get(task, {}).get("rows", []):
            if "logliks" not in row or row.get("answer_index", -1) < 0:
                return {}
            x = np.asarray(row["logliks"], dtype=float)
            probs.setdefault(row["id"], []).append(np.exp(x - x.max()) / np.exp(x - x.max()).sum())
            answer[row["id"]] = int(row["answer_index"])
    return {i: [float(int(np.argmax(np.mean(p, axis=0))) == answer[i])] for i, p in sorted(probs.items())}


def _with_ensembles(sweep: Any, records: list[dict[str, Any]], items: Items) -> Items:
    """``items`` with the ensembles the hypotheses name (``ensemble(<arm>)``) added per task."""
    for h in sweep.hypotheses:
        for label, task in ((h["arm"], h["task"]), (h["versus"], h.get("versus_task", h["task"]))):
            if label.startswith(ENSEMBLE + "(") and label not in items.get(task, {}):
                found = ensemble_items(records, label[len(ENSEMBLE) + 1 : -1], task)
                if found:
                    items.setdefault(task, {})[label] = found
    return items


def _seed_scores(records: list[dict[str, Any]], task: str, arm: str, sign: int) -> dict[int, float]:
    """seed -> the arm's run score on ``task``, higher is better (``sign`` -1 negates a loss)."""
    return {int(r["seed"]): sign * float(r["results"][task]["tuned"]["value"]) for r in records
            if r["arm"].label == arm and task in r["results"]}


def _sign(records: list[dict[str, Any]], task: str) -> int:
    """+1 when the task's score is higher-is-better, -1 for a loss (as the item values say)."""
    for r in records:
        if task in r["signs"]:
            return r["signs"][task]
    return 1


def hypotheses(sweep: Any, records: list[dict[str, Any]], items: Items) -> list[dict[str, Any]]:
    """Each hypothesis of ``sweep`` tested on the finished runs (see the module docstring)."""
    out = []
    n_claims = len(sweep.hypotheses)
    for h in sweep.hypotheses:
        vtask = h.get("versus_task", h["task"])
        a, b = items.get(vtask, {}).get(h["versus"], {}), items.get(h["task"], {}).get(h["arm"], {})
        common = sorted(set(a) & set(b))
        row: dict[str, Any] = {**h, "items": len(common)}
        if common:
            xa = [float(np.mean(a[i])) for i in common]
            xb = [float(np.mean(b[i])) for i in common]
            row["test"] = compare_paired(xa, xb, ids=common)
            row["mde"] = minimum_detectable_effect([y - x for x, y in zip(xa, xb)], n_claims)
            row["claim_p"] = row["test"]["p_value"]
            if h["direction"] == "equal":
                row["tost_p"] = row["claim_p"] = equivalence_p(xa, xb, float(h["effect"]))
            sign = _sign(records, h["task"])
            sa, sb = _seed_scores(records, vtask, h["versus"], sign), _seed_scores(records, h["task"], h["arm"], sign)
            row["seed_scores"] = {"versus": list(sa.values()), "arm": list(sb.values())}
            seeds = seed_test(sa, sb, h["direction"])
            if seeds:
                row["seed_test"], row["seed_p"] = seeds, seeds["p_value"]
        out.append(row)
    tested = [r for r in out if "test" in r and not math.isnan(r["claim_p"])]
    if tested:
        for r, p in zip(tested, multipletests([r["claim_p"] for r in tested], method="holm")[1]):
            r["p_holm"] = float(p)
            r["verdict"] = judge(r["direction"], r["test"], float(p), r["mde"], r["effect"], n_claims)
            if r["direction"] == "equal" or not (p < ALPHA):
                continue
            # the seed-level check in the direction the items found: a one-sided t p-value flips to 1 - p
            seed_p = r.get("seed_p")
            if seed_p is not None and r["verdict"].startswith("does not replicate: significant"):
                seed_p = 1.0 - seed_p
            if seed_p is None:
                r["verdict"] += " (on items; too few seeds for a seed-level test)"
            elif seed_p >= ALPHA:
                r["verdict"] += f" (on items; across training seeds one-sided p = {seed_p:.2g}: seed variance is large)"
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
        for name, result in sorted(r["record"].get("diagnostics", {}).items()):
            values = _flatten(result)
            arm = acc.setdefault(name, {}).setdefault(r["arm"].label, {})
            for k, v in list(values.items())[:limit]:
                arm.setdefault(k, []).append(v)
    return {d: {arm: {k: float(np.mean(v)) for k, v in keys.items()} for arm, keys in arms.items()}
            for d, arms in acc.items()}


def resources(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """arm -> mean over its runs of training seconds, trainable parameters, the last step's training
    loss, the returned model's held-out loss and the step it was selected at, peak memory (MB) and the
    run's wall seconds (diagnostics included), from the records."""
    acc: dict[str, dict[str, list[float]]] = {}
    for r in records:
        train = r["results"]["run"].get("train", {})
        arm = acc.setdefault(r["arm"].label, {})
        for key in ("train_seconds", "trainable_parameters", "final_loss", "heldout_loss", "best_step",
                    "optimizer_state_bytes", "median_step_seconds"):
            if isinstance(train.get(key), (int, float)) and not isinstance(train.get(key), bool):
                arm.setdefault(key, []).append(float(train[key]))
        for key in ("peak_mem_mb", "seconds"):
            if isinstance(r["record"].get(key), (int, float)):
                arm.setdefault(key, []).append(float(r["record"][key]))
    return {arm: {k: float(np.mean(v)) for k, v in keys.items()} for arm, keys in acc.items()}


def hosts(records: list[dict[str, Any]]) -> dict[str, int]:
    """host kind (CPU or GPU model, precision, torch) -> how many of the study's runs it made."""
    out: dict[str, int] = {}
    for r in records:
        h = r["record"].get("host", {})
        flags = ",".join(f for f in h.get("cpu_flags", []) if f in ("avx512_bf16", "amx_bf16", "avx2"))
        key = f"{h.get('cuda') or h.get('cpu') or 'unknown host'} ({h.get('cores')} cores; {flags or 'no bf16 flags'}); " \
              f"{h.get('precision')}; torch {h.get('torch')}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def _design(sweep: Any, result: dict[str, Any]) -> list[str]:
    """Bullet lines describing the design, what has run and where."""
    cfg = sweep.runs[0].cfg
    levels = "; ".join(f"{f} in {{{', '.join(lv)}}}" for f, lv in sweep.factors.items())
    n_items = {t: len({i for arm in by_arm.values() for i in arm}) for t, by_arm in result["_items"].items()}
    items = ", ".join(f"{t}: {n_items.get(t, 0)}" for t in result["tasks"])
    method = ", ".join(f"{k}={v}" for k, v in cfg.method.items() if k in ("name", "r", "alpha"))
    sources = ", ".join(f"{s.name} x{s.count}" if s.count else s.name for s in cfg.data.sources)
    lines = [f"- arms: {levels} ({math.prod(len(lv) for lv in sweep.factors.values())} arms), baseline "
             + Arm(sweep.baseline, {}).label.replace(",", ", "),
             f"- seeds: {len(sweep.seeds)} per arm ({', '.join(map(str, sweep.seeds))}); runs recorded: "
             f"{len(result['_records'])}/{len(sweep.runs)}",
             f"- model {cfg.model.name}; method {method}; data {sources}; {cfg.train.max_steps} steps of batch "
             f"{cfg.train.batch_size}, lr {cfg.train.lr}",
             f"- evaluation items per task: {items}"]
    if result.get("run_seconds"):
        lines.append(f"- compute: {result['run_seconds'] / 60:.1f} min over the recorded runs (sum of run wall times)")
    for host, n in hosts(result["_records"]).items():
        lines.append(f"- host: {host}: {n} run{'s' if n != 1 else ''}")
    if result.get("stale_records"):
        lines.append(f"- stale records not counted: {len(result['stale_records'])} (their config no longer matches)")
    return lines


def resolve(target: str | Path, records: str | Path | None = None) -> Any:
    """The :class:`~tunelab.runner.sweep.Sweep` of ``target``: a sweep file, a study folder (its
    ``study.json`` names the sweep file; the records are its ``records/``) or a sweep run folder (its
    ``sweep.json``).

    Raises:
        ConfigError: ``target`` is none of these.
    """
    target = Path(target)
    if target.is_file():
        return load_sweep(target, records=records)
    if (target / "study.json").is_file():
        info = json.loads((target / "study.json").read_text())
        return load_sweep(target / info["sweep_file"], records=records or target / "records")
    if (target / "sweep.json").is_file():
        result = json.loads((target / "sweep.json").read_text())
        return load_sweep(result["file"], out=str(target.parent), records=records or result.get("records"))
    raise ConfigError(f"{target}: not a sweep folder (no sweep.json), study folder (no study.json) or sweep file")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def report(target: str | Path, records: str | Path | None = None) -> dict[str, Any]:
    """The study of a sweep (``target``: see :func:`resolve`), computed from its records alone: nothing
    is rerun and no run folder is read. Each task's per-item values are gathered once and shared by
    the claims, the interaction and the design; the saved plan and pilot are attached."""
    sweep = resolve(target, records)
    recorded = sweep.recorded()  # read once: the aggregate and the claims share it
    result = aggregate(sweep, {}, recorded)
    records_ = run_records(sweep, recorded[0])
    tasks = dict.fromkeys([*result.get("tasks", {}), *(t for h in sweep.hypotheses for t in (h["task"], h.get("versus_task", h["task"])))])
    items: Items = _with_ensembles(sweep, records_, {t: _arm_items(records_, t) for t in tasks})
    the_plan = _read(sweep.study_folder / "plan.json")
    claims = hypotheses(sweep, records_, items)
    labels = {c["claim"]: c for c in (the_plan or {}).get("claims", [])}
    for c in claims:
        planned = labels.get(c["claim"])
        if planned and planned.get("label") == BELOW:
            c["verdict"] += f" [{BELOW}: effect {c['effect']:g} < planned MDE {planned['mde']:.3f}]"
    return {**result, "target": str(target), "question": sweep.question, "hypotheses": claims,
            "diagnostics": diagnostics(records_), "resources": resources(records_),
            "interactions": interactions(sweep, {t: items[t] for t in result["tasks"]}),
            "plan": the_plan, "pilot": _read(sweep.study_folder / "pilot.json"),
            "_sweep": sweep, "_records": records_, "_items": items}


def _plan_lines(study: dict[str, Any]) -> list[str]:
    """The saved plan's detectable effects and the pilot's gate."""
    out = []
    the_plan, pilot = study.get("plan"), study.get("pilot")
    if the_plan:
        minutes = sum(r["seconds"] for r in the_plan["runs"] if r["seconds"] == r["seconds"]) / 60
        out += [f"**Plan** (before the seeds were spent; host {the_plan['host']}; about {minutes:.0f} min of runs; "
                f"MDE at {the_plan['power']:.0%} power, alpha {the_plan['alpha_per_claim']:.3g} per claim; "
                f"assumed item correlation between arms {the_plan['assume']['item_correlation']:g}):", "",
                "| claim | effect (paper) | items | MDE on items | seed sd | MDE over seeds | detectable? |",
                "|---|---|---|---|---|---|---|"]
        for c in the_plan["claims"]:
            out.append(f"| {c['claim']} | {c['effect']:g} | {c['items']} | {fmt(c['mde_items'])} | "
                       f"{fmt(c['seed_sd'])} ({c['seed_sd_from'].split(' (')[0]}) | {fmt(c['mde_seeds'])} | "
                       f"{c['label'] or 'yes'} |")
        out.append("")
    if pilot:
        ranges = pilot["range"]
        scores = ", ".join(f"{t} {v:.3f} (range [{ranges.get(t, ranges['default'])[0]:g}, "
                           f"{ranges.get(t, ranges['default'])[1]:g}])" for t, v in pilot["scores"].items()
                           if t not in pilot["not_gated"])
        if pilot["passed"]:
            gate_text = "inside its range on every gated task: passed"
        else:
            bad = "; ".join(f"{o['task']} {o['why']}" for o in pilot["outside"])
            gate_text = (f"outside the range: {bad}; "
                         + ("the seeds were spent anyway (--accept-floor-ceiling): claims on these tasks are "
                            "measured at the floor or ceiling" if pilot["accepted"] else "refused"))
        out += [f"**Pilot** (baseline arm, first seed): {scores or 'no gated task'}; {gate_text}.", ""]
    return out + _pool_lines(study)


def _evolve_pool_lines(source: str, pool: dict[str, Any]) -> list[str]:
    """An evolved pool's make-up: per round its kept items, length, constraints, diversity, eliminations."""
    stats = pool["summary"]["stats"]
    elim = stats.get("eliminations", {})
    out = [f"**Pool `{source}`** (evolve, key {pool.get('key')}): {pool['summary'].get('dataset_rows')} rows in the "
           "dataset; per round (kept items):", "",
           "| round | items | instruction words | constraints | distinct-2 | near-duplicate rate | eliminated |",
           "|---|---|---|---|---|---|---|"]
    for k, g in sorted(stats.get("generations", {}).items(), key=lambda kv: int(kv[0])):
        rate = (elim.get(k) or {}).get("all", {}).get("rate")
        out.append(f"| {k} | {g['items']} | {fmt(g['instruction_words'], '.1f')} | {fmt(g['constraints'], '.2f')} | "
                   f"{fmt(g['distinct_2'], '.3f')} | {fmt(g['near_duplicate_rate'], '.3f')} | {fmt(rate, '.3f')} |")
    return out + [""]


def _pool_lines(study: dict[str, Any]) -> list[str]:
    """Each generated pool's make-up (the pilot baseline's record: episodes, success rate, failure kinds)."""
    pools: dict[str, Any] = {}
    for r in study.get("_records", []):
        for source, pool in (r["record"].get("pools") or {}).items():
            pools.setdefault(source, pool)
    out = []
    for source, pool in sorted(pools.items()):
        s = pool.get("summary") or {}
        if "stats" in s:  # an evolved pool: each round's kept items, diversity and eliminations
            out += _evolve_pool_lines(source, pool)
            continue
        if "success_rate" not in s:
            continue
        n = s.get("trajectories") or 0
        kinds = ", ".join(f"{k} {v} ({v / n:.0%})" for k, v in sorted((s.get("failures") or {}).items(),
                                                                       key=lambda kv: -kv[1])) if n else ""
        out += [f"**Pool `{source}`** ({pool.get('kind')}, key {pool.get('key')}): {n} episodes on {s.get('tasks')} "
                f"tasks, success rate {s['success_rate']:.3f}, tasks solved at least once "
                f"{s.get('tasks_solved_at_least_once')}; failures: {kinds or 'none'}.", ""]
    return out


def markdown(study: dict[str, Any], dest: Path | None = None, report_href: str | None = None) -> str:
    """The study's section of ``docs/findings.md``, from its records only (no absolute paths, no
    dates: the same records give the same bytes). ``report_href``: the link to the study's report page."""
    sweep = study["_sweep"]
    out = [f"## {study['name']}", ""]
    if study["question"]:
        out += [f"**Question.** {study['question']}", ""]
    if getattr(sweep, "differences", None):
        out += ["**Where this design differs from the paper:**", "",
                *[f"- {d}" for d in sweep.differences], ""]
    out += ["**Design.**", *_design(sweep, study), ""]
    out += _plan_lines(study)
    for task, t in study["tasks"].items():
        loss = not t.get("higher_is_better", True)
        sense = ("lower is better; delta = baseline minus arm, so a positive delta is a lower loss" if loss
                 else "higher is better; delta = arm minus baseline")
        out += [f"**{task}** ({t['metric']}, {sense}; untrained model {fmt((t.get('untrained') or {}).get('value'))}):",
                "",
                "| arm | seeds | mean | 95% CI (items) | 95% CI (seeds) | delta vs baseline | p (Holm across arms) | verdict |",
                "|---|---|---|---|---|---|---|---|"]
        out += ["| " + " | ".join(c) + " |" for c in arm_cells(t)]
        rows = [r for r in t["anova"].get("table", []) if " x " in r["term"]]
        if rows:
            out += ["", "Interaction (factorial ANOVA of run scores, seeds as replicates): " + "; ".join(
                f"{r['term']}: F = {fmt(r['F'], '.2f')}, p = {fmt(r['p_value'], '.3g')}" for r in rows)]
        for label, by_item in study["_items"].get(task, {}).items():
            if label.startswith(ENSEMBLE + "("):
                score = proportion_score([v[0] for v in by_item.values()])
                seeds = sum(r["arm"].label == label[len(ENSEMBLE) + 1 : -1] for r in study["_records"])
                out += ["", f"Ensemble of {label[len(ENSEMBLE) + 1:-1]}'s {seeds} seeds (mean class probabilities "
                        f"over the choices): accuracy {score['value']:.3f} [{score['ci'][0]:.3f}, {score['ci'][1]:.3f}] "
                        f"on {score['n']} items"]
        if task in study.get("interactions", {}):
            i = study["interactions"][task]
            out += ["", f"Interaction on items (difference in differences, {i['contrast']}; positive = better"
                    f"{', a lower loss' if loss else ''}): "
                    f"{i['delta']:+.3f} [{i['ci'][0]:+.3f}, {i['ci'][1]:+.3f}], p = {i['p_value']:.3g} "
                    f"(sign-flip, {i['items']} items), MDE {fmt(i['mde'])}"]
        out.append("")
    if study["hypotheses"]:
        n = len(study["hypotheses"])
        out += [f"**Findings under test** (paired on items averaged over seeds; delta = arm minus comparison, "
                f"higher is better, a loss negated; p: the claim's own test, the difference test or for `equal` "
                f"claims the equivalence test (TOST) against the margin, Holm-adjusted across the study's {n} "
                f"claim{'s' if n != 1 else ''}; seed-level p: paired t-test over training seeds, one-sided in the "
                f"claimed direction; MDE: minimum detectable effect at 80% power):", "",
                "| claim | task | arm vs | delta [95% CI] | test | p (Holm across claims) | seed-level p | MDE | verdict |",
                "|---|---|---|---|---|---|---|---|---|"]
        for h in study["hypotheses"]:
            t = h.get("test")
            delta = f"{t['delta']:+.3f} [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}]" if t else "-"
            test = (f"TOST +-{h['effect']:g}" if h["direction"] == "equal" else
                    (t["method"].split(" (")[0] if t and t.get("method") else "-"))
            vs = h["versus"] + (f" (on {h['versus_task']})" if h.get("versus_task", h["task"]) != h["task"] else "")
            out.append(f"| {h['claim']} | {h['task']} | {h['arm']} vs {vs} | {delta} | {test} | "
                       f"{fmt(h.get('p_holm'), '.3g')} | {fmt(h.get('seed_p'), '.3g')} | {fmt(h.get('mde'))} | "
                       f"**{h['verdict']}** |")
        sources = sorted({h["source"] for h in study["hypotheses"] if h["source"]})
        out += [""] + [f"Source: {s}" for s in sources] + ([""] if sources else [])
    if study.get("resources"):
        out += ["**Training and resources** (mean per run; the held-out loss is the returned model's, selected at "
                "the step shown when the recipe selects the best):", "",
                "| arm | last training loss | held-out loss | selected step | wall seconds | train seconds | "
                "trainable parameters | peak memory (MB) | optimizer state (MB) | median s/step |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {arm} | {fmt(v.get('final_loss'), '.4f')} | {fmt(v.get('heldout_loss'), '.4f')} | "
                f"{fmt(v.get('best_step'), '.0f')} | {fmt(v.get('seconds'), '.0f')} | {fmt(v.get('train_seconds'), '.0f')} | "
                f"{fmt(v.get('trainable_parameters'), ',.0f')} | {fmt(v.get('peak_mem_mb'), ',.0f')} | "
                f"{fmt(v['optimizer_state_bytes'] / 2**20 if 'optimizer_state_bytes' in v else None, ',.1f')} | "
                f"{fmt(v.get('median_step_seconds'), '.2f')} |"
                for arm, v in study["resources"].items()]
        out.append("")
    for name, arms in study["diagnostics"].items():
        keys = sorted({k for a in arms.values() for k in a})
        out += [f"**Diagnostic `{name}`** (mean over each arm's runs):", "",
                "| arm | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        out += [f"| {arm} | " + " | ".join(fmt(vals.get(k), ".4g") for k in keys) + " |" for arm, vals in arms.items()]
        out.append("")
    if report_href:
        out += [f"Report: [{report_href}]({report_href})", ""]
    return "\n".join(out)


BEGIN, END = "<!-- study:{} -->", "<!-- /study:{} -->"
HEADER = ("# Findings\n\nGenerated by `tunelab findings` (default: `tunelab findings studies --out docs/findings.md`) "
          "from the committed study records (`studies/<study>/records/`); never edited by hand. Each section: the "
          "question, the design, the plan's detectable effects, the pilot, the arms with 95% CIs, the claims under "
          "test with their verdicts, diagnostics and the hosts the runs ran on.\n")


def section(study: dict[str, Any], report_href: str | None = None) -> str:
    """The study's section between its ``<!-- study:NAME -->`` markers."""
    name = study["name"]
    return f"{BEGIN.format(name)}\n{markdown(study, report_href=report_href)}{END.format(name)}\n"


def write_findings(studies: str | Path = "studies", out: str | Path = "docs/findings.md",
                   pages: bool = True) -> tuple[Path, list[str]]:
    """``docs/findings.md`` from every study folder under ``studies`` (one with a ``study.json``), in
    name order, computed from the records alone; with ``pages`` each study's report page is written
    to ``<out folder>/studies/NAME.html`` (linked either way). Returns the document and the studies' names.

    Raises:
        ConfigError: ``studies`` holds no study.
    """
    studies, out = Path(studies), Path(out)
    folders = sorted(p.parent for p in studies.glob("*/study.json"))
    if not folders:
        raise ConfigError(f"{studies}: no study folders (each <study>/study.json, written by `tunelab sweep`)")
    parts, names = [], []
    for folder in folders:
        study = report(folder)
        page = out.parent / "studies" / f"{study['name']}.html"
        if pages:
            sweep_report({k: v for k, v in study.items() if not k.startswith("_")}, path=page)
        href = f"studies/{study['name']}.html"
        parts.append(section(study, href))
        names.append(study["name"])
    write_text(out, HEADER + "\n" + "\n".join(parts))
    return out, names


def summary(study: dict[str, Any]) -> str:
    """The terminal view: the hypotheses' verdicts."""
    lines = [f"study {study['name']}: {study['question'] or '(no question in the sweep file)'}"]
    for h in study["hypotheses"]:
        t = h.get("test")
        lines.append(f"  {h['claim']} [{h['task']}: {h['arm']} vs {h['versus']}]: "
                     + (f"delta {t['delta']:+.3f} p(Holm) {fmt(h.get('p_holm'), '.3g')} MDE {fmt(h['mde'])} -> "
                        if t else "")
                     + h["verdict"])
    if not study["hypotheses"]:
        lines.append("  (the sweep file states no hypotheses: see sweep.json for the arms' statistics)")
    return "\n".join(lines)
