"""A study's findings from its sweep: the design, the tables, the power and a verdict per claim.

``tunelab sweep report <sweep folder> [--markdown]`` regenerates, from the sweep's outputs only
(``sweep.json``, the sweep file it names and the run folders), the section ``docs/findings.md`` keeps
for each study (:func:`report` computes it here; :mod:`tunelab.report.findings_doc` writes it):

* the question and the design (arms, seeds, items per task, training steps, method, model);
* per task, every arm's mean with its item-bootstrap and seed-t 95% CIs and the paired test against
  the baseline, Holm-adjusted across arms (:mod:`tunelab.runner.aggregate`), and the factorial
  ANOVA's interaction rows where there are two or more factors;
* per hypothesis of the sweep file (``hypotheses:`` ``{claim, task, arm, versus, direction, effect,
  source}``): the paired difference on the task's items (each item averaged over seeds; exact McNemar
  or sign-flip, :func:`tunelab.eval.paired.compare_paired`); for ``direction: equal`` also the
  equivalence test (TOST, statsmodels ``ttost_paired``) against the claim's margin; the claim's own
  test (the difference test for better/worse, TOST for equal) Holm-adjusted across the study's claims;
  a seed-level paired t-test (runs matched by training seed, one-sided in the claimed direction,
  two-sided for ``equal``: training randomness, one score per seed); the minimum detectable effect at
  80% power and the verdict;
* a claimed interaction of a 2 x 2 design (``interaction:``): the difference in differences on items
  (sign-flip), the per-seed one beside it (two-sided for ``direction: either``), judged like a claim
  (:func:`interaction_claim`); one absent from a saved plan is marked as not pre-registered;
* the diagnostics every run wrote (numeric leaves of ``<run>/diagnostics/*.json``, mean per arm).

Two Holm families, never mixed: the arm tables adjust each arm's test against the baseline across
that task's arms (:mod:`tunelab.runner.aggregate`); the claims table adjusts across the study's claims.

Minimum detectable effect: the paired design's standardised effect at 80% power from statsmodels'
``TTestPower`` (two-sided, alpha = 0.05 / number of hypotheses: Holm's strictest step), times the
standard deviation of the per-item differences; in the units of the task's metric. NaN below the
fewest items at which the exact tests can reach that alpha at all
(:func:`tunelab.eval.paired.min_items_for_verdict`): no effect is detectable there.

Signs: every delta is arm minus comparison with higher better, a loss negated, so a positive delta on a
loss task is a lower loss.

Verdicts. ``direction: better`` / ``worse``: *replicates* when the Holm-adjusted test is significant
in the claimed direction; *does not replicate* when it is significant the other way, or when it is not
significant although the design could detect the claimed ``effect`` (MDE <= effect); otherwise
*inconclusive at this power*. ``direction: either`` (a claimed interaction only, two-sided: no source
predicts its sign): *replicates* when the test is significant either way, *does not replicate* when it is
not although the design detects ``effect``. ``direction: equal`` (``effect`` is the equivalence margin, required and
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
from tunelab.eval.judge import OUTCOME
from tunelab.eval.judge_bias import position_bias
from tunelab.eval.length_control import length_controlled
from tunelab.eval.paired import compare_paired, sign_flip_test
from tunelab.eval.regimes import UNTRAINED
from tunelab.eval.stats import bootstrap_ci
from tunelab.runner.aggregate import aggregate, run_records
from tunelab.runner.judged_study import load_judged, outcomes
from tunelab.runner.plan import BELOW, cell_labels, mde, seen_beyond_pilot
from tunelab.runner.records import host_kind
from tunelab.runner.sweep_fields import ENSEMBLE
from tunelab.runner.sweep_file import load_sweep

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
    if direction == "either":  # two-sided: an effect of either sign is the claim
        if significant:
            return f"replicates (two-sided): {delta:+.3f}"
        if effect is not None and not math.isnan(mde) and mde <= abs(effect):
            return f"does not replicate: no effect of either sign although the design detects {abs(effect):.3f}"
        return "inconclusive at this power"
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
    the claimed direction, two-sided for ``equal`` and ``either``; None with fewer than 2 common seeds or no spread."""
    seeds = sorted(set(versus) & set(arm))
    d = [arm[s] - versus[s] for s in seeds]
    if len(seeds) < 2 or float(np.ptp(d)) == 0.0:
        return None
    alternative = {"better": "greater", "worse": "less"}.get(direction, "two-sided")
    p = sps.ttest_rel([arm[s] for s in seeds], [versus[s] for s in seeds], alternative=alternative).pvalue
    return {"p_value": float(p), "seeds": seeds, "delta": float(np.mean(d)), "alternative": alternative}


def seed_note(versus: dict[int, float], arm: dict[int, float]) -> str:
    """Why a claim has no seed-level test (:func:`seed_test` gave None): too few common seeds, or the
    same difference on every seed (a t-test has no spread to work with)."""
    seeds = sorted(set(versus) & set(arm))
    if len(seeds) < 2:
        return "too few seeds for a seed-level test"
    return f"every seed's difference is {arm[seeds[0]] - versus[seeds[0]]:+.3f}: no spread for a seed-level test"


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
            else:
                row["seed_note"] = seed_note(sa, sb)
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
                r["verdict"] += f" (on items; {r.get('seed_note', 'too few seeds for a seed-level test')})"
            elif seed_p >= ALPHA:
                r["verdict"] += f" (on items; across training seeds one-sided p = {seed_p:.2g}: seed variance is large)"
    for r in out:
        r.setdefault("verdict", "not tested: no finished runs on both arms")
    return out


def interactions(sweep: Any, items: Items) -> dict[str, dict[str, Any]]:
    """Per task of a 2 x 2 design: the interaction on items, as a difference in differences.

    For each item (values averaged over seeds): ``(a11 - a10) - (a01 - a00)``, where the first index is
    the first factor's level (baseline 0) and the second the second factor's; tested against 0 with the
    sign-flip test (:func:`tunelab.eval.paired.sign_flip_test`), with its MDE. Positive: the second
    factor's effect is larger (better) at the first factor's other level. Empty unless exactly two
    factors with two levels each.
    """
    factors = list(sweep.factors)
    if len(factors) != 2 or any(len(levels) != 2 for levels in sweep.factors.values()):
        return {}
    f1, f2 = factors
    other = {f: next(lv for lv in sweep.factors[f] if lv != sweep.baseline[f]) for f in factors}
    labels = cell_labels(sweep)
    out = {}
    for task, by_arm in items.items():
        cells = [by_arm.get(label, {}) for label in labels]
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


def interaction_claim(sweep: Any, records: list[dict[str, Any]], found: dict[str, dict[str, Any]],
                      the_plan: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sweep's claimed interaction (``interaction:``) judged on its task's difference in differences
    (:func:`interactions`, on items, alpha 0.05 on its own) like a claim (:func:`judge`), with the paired
    t-test of the per-seed differences in differences beside it and the plan's label; None without one."""
    h = sweep.interaction
    if h is None:
        return None
    out: dict[str, Any] = dict(h)
    test = found.get(h["task"])
    if test is None:
        out["verdict"] = "not tested: no finished runs in all four cells"
        return out
    out.update(test=test, mde=test["mde"], claim_p=test["p_value"])
    out["verdict"] = judge(h["direction"], test, test["p_value"], test["mde"], h["effect"])
    sign = _sign(records, h["task"])
    cells = [_seed_scores(records, h["task"], label, sign) for label in cell_labels(sweep)]
    seeds = sorted(set.intersection(*(set(c) for c in cells)))
    did = {s: (cells[3][s] - cells[2][s]) - (cells[1][s] - cells[0][s]) for s in seeds}
    zero = dict.fromkeys(seeds, 0.0)
    if (seeds_ := seed_test(zero, did, h["direction"])) is not None:
        out["seed_test"], out["seed_p"] = seeds_, seeds_["p_value"]
    else:
        out["seed_note"] = seed_note(zero, did)
    significant = out["verdict"].startswith(("replicates", "does not replicate: significant"))
    if significant:  # as for a claim: the seed-level check in the direction the items found
        seed_p = out.get("seed_p")
        if seed_p is not None and out["verdict"].startswith("does not replicate: significant"):
            seed_p = 1.0 - seed_p
        sided = "two-sided" if h["direction"] == "either" else "one-sided"
        if seed_p is None:
            out["verdict"] += f" (on items; {out.get('seed_note', 'too few seeds for a seed-level test')})"
        elif seed_p >= ALPHA:
            out["verdict"] += f" (on items; across training seeds {sided} p = {seed_p:.2g}: seed variance is large)"
    planned = (the_plan or {}).get("interaction")
    if planned and planned.get("label") == BELOW:
        out["verdict"] += f" [{BELOW}: effect {h['effect']:g} < planned MDE {planned['mde']:.3g}]"
    elif the_plan and not planned:  # the saved plan came before the claim: it was not pre-registered
        out["verdict"] += " [not pre-registered: absent from the plan saved before the seeds]"
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
    """diagnostic -> arm -> key -> mean over the arm's runs (first ``limit`` keys; every key of
    ``grad_interference``; only the ``summary`` of a diagnostic that gives one, such as ``weight_change``)."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in records:
        for name, result in sorted(r["record"].get("diagnostics", {}).items()):
            values = _flatten(result["summary"] if isinstance(result, dict) and isinstance(result.get("summary"), dict)
                              else result)
            arm = acc.setdefault(name, {}).setdefault(r["arm"].label, {})
            # grad_interference keeps every key: its per-pair summaries are the mechanism a mixing study reads
            for k, v in list(values.items())[: None if name == "grad_interference" else limit]:
                arm.setdefault(k, []).append(v)
    return {d: {arm: {k: float(np.mean(v)) for k, v in keys.items()} for arm, keys in arms.items()}
            for d, arms in acc.items()}


def _host(record: dict[str, Any]) -> str:
    """The kind of host a study record's run ran on (``records.host_kind``): seconds compare only within one."""
    return host_kind(record.get("record", {}).get("host") or {})


def resources(records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """arm -> mean over its runs of training seconds, trainable parameters, the last step's training
    loss, the returned model's held-out loss and the step it was selected at, peak memory (MB) and the
    run's wall seconds (diagnostics included), from the records. Where the study's runs ran on more than
    one kind of host (:func:`_host`), seconds are not comparable across them: each arm then has a
    row per host, labelled ``<arm> on <host>``."""
    hosts = [_host(r) for r in records]
    rows = list(zip(records, hosts))
    if len(set(hosts)) > 1:  # a row per arm and host, each arm's hosts under it, arms in the records' order
        order = {arm: i for i, arm in enumerate(dict.fromkeys(r["arm"].label for r in records))}
        rows = [(r, f" on {host}") for r, host in sorted(rows, key=lambda rh: (order[rh[0]["arm"].label], rh[1]))]
    else:
        rows = [(r, "") for r in records]
    acc: dict[str, dict[str, list[float]]] = {}
    for r, where in rows:
        train = r["results"]["run"].get("train", {})
        arm = acc.setdefault(r["arm"].label + where, {})
        for key in ("train_seconds", "trainable_parameters", "final_loss", "heldout_loss", "best_step",
                    "optimizer_state_bytes", "median_step_seconds"):
            if isinstance(train.get(key), (int, float)) and not isinstance(train.get(key), bool):
                arm.setdefault(key, []).append(float(train[key]))
        for key in ("peak_mem_mb", "seconds"):
            if isinstance(r["record"].get(key), (int, float)):
                arm.setdefault(key, []).append(float(r["record"][key]))
    return {arm: {k: float(np.mean(v)) for k, v in keys.items()} for arm, keys in acc.items()}


def failure_kinds(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """task -> arm -> failure kind -> the share of episodes failing that way, mean over the arm's runs
    (agent tasks score ``failure/<kind>`` beside success: wrong answer, malformed action, step limit ...);
    tasks without such scores are left out. A kind a run never met counts 0 for it."""
    found: dict[str, dict[str, list[dict[str, float]]]] = {}
    for r in records:
        for task, entry in r["results"].items():
            scores = entry.get("tuned_all") if isinstance(entry, dict) else None
            if not isinstance(scores, dict):
                continue
            kinds = {k.split("/", 1)[1]: float(v["value"]) for k, v in scores.items()
                     if k.startswith("failure/") and isinstance(v, dict) and "value" in v}
            if kinds:
                found.setdefault(task, {}).setdefault(r["arm"].label, []).append(kinds)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task, arms in found.items():
        names = sorted({k for runs in arms.values() for run in runs for k in run})
        out[task] = {arm: {k: float(np.mean([run.get(k, 0.0) for run in runs])) for k in names}
                     for arm, runs in arms.items()}
    return out


COST_KEYS = ("input_tokens", "token_saving", "seconds_per_item", "latency_batch1_s")
"""What :func:`inference_costs` reads of a run's prompt-regime table (``results.json``'s ``run.regimes``)."""


def inference_costs(records: list[dict[str, Any]]) -> dict[str, dict[tuple[str, str, str], dict[str, float]]]:
    """suite -> (arm, regime, host) -> the mean over the arm's runs on that kind of host (:func:`_host`) of
    input tokens per item, the share of the full prompt's tokens saved, seconds per item in the batched
    evaluation and at batch 1 (when ``eval.latency_items`` measured it), from each run's prompt-regime
    table; the untrained model's row (arm ``no fine-tuning``) from the runs' base evaluations. Seconds are
    never averaged across hosts: a study whose runs ran on two kinds of CPU gets a row per host. Studies
    without prompt regimes: {}."""
    found: dict[str, dict[tuple[str, str, str], dict[str, list[float]]]] = {}
    for r in records:
        regimes = r["results"].get("run", {}).get("regimes") or {}
        host = _host(r)
        for when, arm in (("base", UNTRAINED), ("tuned", r["arm"].label)):
            for suite, entries in (regimes.get(when) or {}).items():
                for regime, e in entries.items():
                    cell = found.setdefault(suite, {}).setdefault((arm, regime, host), {})
                    for key in COST_KEYS:
                        v = e.get(key)
                        v = v.get("value") if isinstance(v, dict) else v
                        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                            cell.setdefault(key, []).append(float(v))
    return {suite: {k: {key: float(np.mean(v)) for key, v in cell.items()} for k, cell in cells.items()}
            for suite, cells in found.items()}


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


def judged_claims(sweep: Any) -> dict[str, Any] | None:
    """The judged claims' findings (:mod:`tunelab.runner.judged_study` says what each figure is); None without a
    ``judged:`` section."""
    if not sweep.judged:
        return None
    files, stale = load_judged(sweep)
    claims = sweep.judged["claims"]
    n_claims = len(claims)
    rows = []
    for c in claims:
        mine = [f for f in files if f["arm"] == c["arm"] and f["versus"] == c["versus"]]
        row: dict[str, Any] = {**c, "seeds": sorted(int(f["seed"]) for f in mine),
                               "judges": sorted({f["judge"] for f in mine})}
        per_item, per_seed, parsed = outcomes(mine)
        total = sum(len(f["verdicts"]) for f in mine)
        if not per_item:
            row.update(verdict="not judged yet" if not mine else "no verdict parsed", items=0,
                       unparsed=total)
            rows.append(row)
            continue
        ids = sorted(per_item)
        wins = [float(np.mean(per_item[i])) for i in ids]
        test = sign_flip_test([0.5] * len(wins), wins, ids=ids)
        lc = length_controlled([OUTCOME[v["winner"]] for v in parsed], [v["len_a"] for v in parsed],
                               [v["len_b"] for v in parsed])
        seed_rates = {s: float(np.mean(o)) for s, o in sorted(per_seed.items())}
        row.update(items=len(ids), unparsed=total - len(parsed), win_rate=float(np.mean(wins)),
                   test=test, win_ci=[0.5 + test["ci"][0], 0.5 + test["ci"][1]], mde=minimum_detectable_effect([w - 0.5 for w in wins], n_claims),
                   per_seed=seed_rates, lc_win_rate=lc["lc_win_rate"], length_bias=lc["length_bias"],
                   mean_chars={"arm": float(np.mean([v["len_a"] for v in parsed])),
                               "versus": float(np.mean([v["len_b"] for v in parsed]))},
                   position=position_bias([v for f in mine for v in f["verdicts"]]))
        if len(seed_rates) >= 2 and float(np.ptp(list(seed_rates.values()))) > 0:
            alternative = "greater" if c["direction"] == "better" else "less"
            p = sps.ttest_1samp(list(seed_rates.values()), 0.5, alternative=alternative).pvalue
            row["seed_test"] = {"p_value": float(p), "alternative": alternative}
        else:
            row["seed_note"] = seed_note({s: 0.5 for s in seed_rates}, seed_rates)
        if sweep.judged["subset"]:
            meta = {str(k): m for f in mine for k, m in (f.get("meta") or {}).items()}
            keep = [i for i in ids if all(isinstance(meta.get(i, {}).get(k), (int, float))
                                          and meta[i][k] >= least for k, least in sweep.judged["subset"].items())]
            row["subset"] = {"where": dict(sweep.judged["subset"]), "items": len(keep),
                             "win_rate": bootstrap_ci([float(np.mean(per_item[i])) for i in keep])}
        rows.append(row)
    tested = [r for r in rows if "test" in r]
    if tested:
        ps = [r["test"]["p_value"] if math.isfinite(r["test"]["p_value"]) else 1.0 for r in tested]
        adjusted = multipletests(ps, method="holm")[1]
        for r, p in zip(tested, adjusted):
            r["p_holm"] = float(p)
            r["verdict"] = judge(r["direction"], r["test"], float(p), r["mde"], r["effect"], n_claims)
    return {"task": sweep.judged["task"], "judge": sweep.judged["judge"], "verdict_mode": sweep.judged["verdict"],
            "claims": rows, "stale": stale}


def resolve(target: str | Path, records: str | Path | None = None) -> Any:
    """The :class:`~tunelab.runner.sweep_file.Sweep` of ``target``: a sweep file, a study folder (its
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
            c["verdict"] += f" [{BELOW}: effect {c['effect']:g} < planned MDE {planned['mde']:.3g}]"
    return {**result, "target": str(target), "question": sweep.question, "hypotheses": claims,
            "diagnostics": diagnostics(records_), "resources": resources(records_),
            "failure_kinds": failure_kinds(records_), "inference_costs": inference_costs(records_),
            "interactions": (found := interactions(sweep, {t: items[t] for t in result["tasks"]})),
            "interaction_claim": interaction_claim(sweep, records_, found, the_plan),
            "judged": judged_claims(sweep),
            "plan": the_plan, "pilot": _read(sweep.study_folder / "pilot.json"),
            "plan_missing_after_results": the_plan is None and seen_beyond_pilot(sweep, recorded[0]),
            "_sweep": sweep, "_records": records_, "_items": items}
