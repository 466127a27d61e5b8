"""A study's plan and pilot: what a sweep will cost and what it can detect, before seeds are spent.

**Plan** (``tunelab sweep plan FILE``). Per planned run: recorded or not, and its estimated minutes on
this kind of host (:func:`estimate_seconds`: the mean wall time of this study's recorded runs of
the same arm on the same host kind, less any generated pool it built, else of any arm with its training
phase scaled by training steps and its evaluation by evaluation passes, else of other hosts,
said; unknown before the pilot). Per hypothesis: the minimum detectable effect (MDE) at 80% power,
two-sided, at alpha = 0.05 / number of claims (Holm's strictest step; statsmodels ``TTestPower``):

* on items: ``d(n, alpha) * sd`` of the per-item paired differences. The sd comes from the study's
  records where both arms have run; else from the pilot's per-item variance of the baseline,
  ``sd = sqrt(2 * var * (1 - rho))`` with ``rho`` the correlation of an item's outcome between two
  arms (``assume.item_correlation``, default 0.5: stated in the plan); else unknown.
* over training seeds (the paired t-test on one score per seed): ``d(seeds, alpha) * sd`` of the
  per-seed differences, from records with two or more seeds on both arms, else
  ``assume.seed_sd``, else unknown (said).

A claim whose ``effect`` is smaller than the larger known MDE is *below detection at this design*.
A claimed interaction of a 2 x 2 design (``interaction:``) is planned the same way on the per-item
difference in differences of the four cells (:func:`interaction_power`), tested on its own at alpha:
from records of all four cells, else ``sd = 2 * sqrt(var * (1 - rho))`` (four cells, equal pairwise
correlation), over seeds ``sqrt(2) * assume.seed_sd``.
Judged claims (``judged:``, :mod:`tunelab.runner.judged_study`) are planned on the win rate above one half:
on items from the judged files' per-item outcomes where some exist, else the worst case of a win/loss
verdict (sd 1/2) averaged over the seeds with the assumed item correlation between seeds,
``sd = 0.5 * sqrt((1 + (k - 1) rho) / k)``; over seeds from ``assume.seed_sd``; at alpha / number of judged
claims (their own Holm family).
The plan is saved to ``<study>/plan.json`` until the first run beyond the pilot is recorded; from
then on it is frozen (a pre-registration), and the findings carry its labels.

**Pilot** (``tunelab sweep pilot FILE``): the baseline arm (and ``pilot_arms``) at the first seed,
recorded like any run. The gate: the baseline's score on every task a hypothesis names must lie in
``pilot_range`` (default [0.2, 0.8]; tasks scored by a loss are not gated), and the success rate of each
generated pool named in ``pool_range`` (read from the record's ``pools``) in its range; outside it the sweep
refuses to spend the other seeds unless ``--accept-floor-ceiling`` is given, which the findings say.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from statsmodels.stats.power import TTestPower

from tunelab.config import ConfigError
from tunelab.device import cpu_name, decide, default_device
from tunelab.eval.paired import min_items_for_verdict
from tunelab.eval.tasks.base import get_task
from tunelab.io import write_json
from tunelab.runner.records import host_kind

ALPHA = 0.05
POWER = 0.8
DEFAULT_ITEM_CORRELATION = 0.5
BELOW = "below detection at this design"


def mde(n: int, sd: float, n_tests: int = 1, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a paired test of ``n`` differences with standard deviation
    ``sd`` detects with ``power`` (two-sided, ``alpha / n_tests``); NaN with no spread, too few
    pairs, or fewer items than the exact paired tests need to reach that alpha at all."""
    level = alpha / max(n_tests, 1)
    if n < 2 or not sd > 0 or n < min_items_for_verdict(1.0 - level):
        return math.nan
    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=level, power=power, alternative="two-sided")
    return float(d) * float(sd)


def seed_mde(seeds: int, sd: float, n_tests: int = 1) -> float:
    """The MDE of the paired t-test over ``seeds`` training seeds (no exact-test minimum)."""
    if seeds < 2 or not sd > 0:
        return math.nan
    d = TTestPower().solve_power(effect_size=None, nobs=seeds, alpha=ALPHA / max(n_tests, 1), power=POWER,
                                 alternative="two-sided")
    return float(d) * float(sd)


def this_host(sweep: Any) -> str:
    """The host kind of this machine for the sweep's runs (:func:`tunelab.runner.records.host_kind`)."""
    device = default_device()
    precision = decide(sweep.runs[0].cfg.train.precision, device)[0] if sweep.runs else "?"
    cuda = torch.cuda.get_device_name(0) if device == "cuda" else None
    return host_kind({"cpu": cpu_name(), "cuda": cuda, "precision": precision})


def _run_seconds(record: dict[str, Any]) -> float:
    """A recorded run's wall seconds less what a study's later runs do not repeat: the base model's
    evaluation it computed, and the generated pools it built (both reused from the cache after)."""
    run = record.get("results", {}).get("run", {})
    reused = run.get("reused", {})
    built_pools = bool(record.get("pools")) and not reused.get("generated") and not reused.get("data")
    data = float((run.get("phases") or {}).get("data") or 0.0) if built_pools else 0.0
    return float(record["seconds"]) - float(reused.get("base_eval_seconds") or 0.0) - data


def _eval_passes(signals: list[str] | None) -> int:
    """How many times a run evaluates its tasks: once, plus once per extra signal (``eval.signals``)."""
    return 1 + len(signals or [])


def estimate_seconds(sweep: Any, records: dict[str, dict[str, Any]], host: str) -> dict[str, tuple[float, str]]:
    """run name -> (estimated wall seconds, where the estimate comes from) for every planned run (the
    base model's evaluation, computed once and reused, left out)."""
    by_kind = [r for r in records.values() if host_kind(r["host"]) == host]
    others = [r for r in records.values() if host_kind(r["host"]) != host]
    out = {}
    for p in sweep.runs:
        if p.name in records:
            out[p.name] = (float(records[p.name].get("seconds") or math.nan), "recorded")
            continue
        same_arm = [r for r in by_kind if r["arm"] == p.arm.levels]
        if same_arm:
            out[p.name] = (float(np.mean([_run_seconds(r) for r in same_arm])), "same arm, this host")
        elif by_kind:
            out[p.name] = (_scaled(by_kind, p.cfg), "other arms on this host, scaled by steps and evaluations")
        elif others:
            out[p.name] = (_scaled(others, p.cfg), "another host (timings may not travel)")
        else:
            out[p.name] = (math.nan, "unknown: run the pilot first")
    return out


def _scaled(records: list[dict[str, Any]], cfg: Any) -> float:
    """Mean seconds of ``records`` scaled to a run of config ``cfg``: their training phase by its
    training steps over theirs, their evaluation phase by its evaluation passes over theirs, the rest
    as recorded (a record without phases is scaled whole by steps)."""
    steps = max(cfg.train.max_steps, 1)
    per = []
    for r in records:
        if not r.get("seconds"):
            continue
        ratio = steps / max(int(r["config"].get("train", {}).get("max_steps") or steps), 1)
        total = _run_seconds(r)
        phases = r.get("results", {}).get("run", {}).get("phases") or {}
        if "train" in phases and "evaluate" in phases:
            train, ev = float(phases["train"]), float(phases["evaluate"])
            evals = _eval_passes(cfg.eval.signals) / _eval_passes(r["config"].get("eval", {}).get("signals"))
            per.append(total - train - ev + train * ratio + ev * evals)
        else:
            per.append(total * ratio)
    return float(np.mean(per)) if per else math.nan


def _values(records: dict[str, dict[str, Any]], arm: str, task: str) -> dict[int, dict[str, float]]:
    """seed -> item id -> value of ``arm``'s recorded runs on ``task``."""
    out: dict[int, dict[str, float]] = {}
    for r in records.values():
        label = ",".join(f"{f}={lv}" for f, lv in r["arm"].items())
        if label == arm and task in r["items"]:
            out[int(r["seed"])] = {x["id"]: float(x["value"]) for x in r["items"][task]["rows"]}
    return out


def _proportion(planned: Any, task: str) -> bool:
    """Whether ``task`` scores items 0/1 (its primary metric is not a loss)."""
    try:
        t = get_task(task, **planned.cfg.eval.task_options.get(task, {}))
    except Exception:  # noqa: BLE001 - an agent task needs its environment; then say nothing
        return False
    return getattr(t, "primary", "") not in ("loss", "perplexity", "score", "rating")


def _seed_score(record_items: dict[str, float]) -> float:
    return float(np.mean(list(record_items.values()))) if record_items else math.nan


def scored_arm(label: str) -> str:
    """The arm whose runs a claim's label reads: ``ensemble(X)`` is scored from X's runs."""
    return label[len("ensemble("):-1] if label.startswith("ensemble(") else label


def claim_power(sweep: Any, h: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One hypothesis's detectable effects (see the module docstring)."""
    n_claims = len(sweep.hypotheses)
    rho = sweep.assume.get("item_correlation", DEFAULT_ITEM_CORRELATION)
    # an ensemble's items vary like its arm's (one pass over them): the arm's records stand in for it
    inner = {label: scored_arm(label) for label in (h["arm"], h["versus"])}
    arm = _values(records, inner[h["arm"]], h["task"])
    versus = _values(records, inner[h["versus"]], h.get("versus_task", h["task"]))
    planned = next((p for p in sweep.runs if p.arm.label == inner[h["versus"]]), sweep.runs[0])
    out: dict[str, Any] = {"claim": h["claim"], "task": h["task"], "arm": h["arm"], "versus": h["versus"],
                           "direction": h["direction"], "effect": h["effect"], "seeds": len(sweep.seeds)}
    if arm and versus:  # both arms ran: the real per-item differences, averaged over common seeds
        common_items = sorted(set.intersection(*(set(v) for v in [*arm.values(), *versus.values()])))
        diffs = [float(np.mean([arm[s][i] for s in arm])) - float(np.mean([versus[s][i] for s in versus]))
                 for i in common_items]
        out.update(items=len(diffs), item_sd=float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan,
                   item_sd_from="records of both arms")
    elif versus or (baseline := _values(records, sweep.baseline_label, h["task"])):
        # the pilot's per-item variance: of the comparison arm, else of the baseline arm (the pilot's)
        values = list(next(iter((versus or baseline).values())).values())
        var = float(np.var(values, ddof=1)) if len(values) > 1 else math.nan
        out.update(items=len(values), item_sd=math.sqrt(2 * var * (1 - rho)) if var == var else math.nan,
                   item_sd_from=f"pilot's per-item variance, item correlation between arms {rho:g} (assumed)")
    elif _proportion(planned, h["task"]):  # before the pilot: a 0/1 outcome's variance is at most 0.25
        out.update(items=planned.cfg.eval.items_for(h["task"]) or 0, item_sd=math.sqrt(2 * 0.25 * (1 - rho)),
                   item_sd_from=f"no pilot yet: the worst case of a 0/1 outcome (p = 0.5), item correlation {rho:g} "
                                "(assumed)")
    else:
        out.update(items=planned.cfg.eval.items_for(h["task"]) or 0, item_sd=math.nan,
                   item_sd_from="unknown: no pilot record yet (`tunelab sweep pilot`)")
    common_seeds = sorted(set(arm) & set(versus))
    if len(common_seeds) >= 2:
        d = [_seed_score(arm[s]) - _seed_score(versus[s]) for s in common_seeds]
        out.update(seed_sd=float(np.std(d, ddof=1)), seed_sd_from=f"records ({len(d)} seeds on both arms)")
    elif "seed_sd" in sweep.assume:
        out.update(seed_sd=sweep.assume["seed_sd"], seed_sd_from="assumed (assume.seed_sd)")
    else:
        out.update(seed_sd=math.nan, seed_sd_from="unknown (no two seeds on both arms; state assume.seed_sd)")
    return _detectable(out, len(sweep.seeds), n_claims)


def _detectable(out: dict[str, Any], seeds: int, n_tests: int = 1) -> dict[str, Any]:
    """``out`` (with ``effect``, ``items``, ``item_sd``, ``seed_sd``) with the MDE on items and over seeds,
    the larger known one (``mde``) and the plan's label."""
    out["mde_items"] = mde(out["items"], out["item_sd"], n_tests)
    out["mde_seeds"] = seed_mde(seeds, out["seed_sd"], n_tests)
    known = [m for m in (out["mde_items"], out["mde_seeds"]) if not math.isnan(m)]
    out["mde"] = max(known) if known else math.nan
    out["label"] = BELOW if known and out["effect"] < out["mde"] else ("" if known else "detectable effect unknown")
    return out


def cell_labels(sweep: Any) -> list[str]:
    """The four arm labels of a 2 x 2 design in the order (0, 0), (0, 1), (1, 0), (1, 1): the first index
    the first factor's level (0 = baseline), the second the second factor's."""
    f1, f2 = list(sweep.factors)
    other = {f: next(lv for lv in sweep.factors[f] if lv != sweep.baseline[f]) for f in (f1, f2)}
    return [",".join(f"{f}={other[f] if on else sweep.baseline[f]}" for f, on in ((f1, i), (f2, j)))
            for i in (0, 1) for j in (0, 1)]


def interaction_power(sweep: Any, records: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The claimed interaction's detectable effect (see the module docstring); None without one."""
    h = sweep.interaction
    if h is None:
        return None
    rho = sweep.assume.get("item_correlation", DEFAULT_ITEM_CORRELATION)
    cells = [_values(records, label, h["task"]) for label in cell_labels(sweep)]
    out: dict[str, Any] = {**h, "seeds": len(sweep.seeds)}
    if all(cells):
        common = sorted(set.intersection(*(set(v) for c in cells for v in c.values())))
        m = [[float(np.mean([c[s][i] for s in c])) for i in common] for c in cells]
        did = [(d - c) - (b - a) for a, b, c, d in zip(*m)]
        out.update(items=len(did), item_sd=float(np.std(did, ddof=1)) if len(did) > 1 else math.nan,
                   item_sd_from="records of the four cells")
    elif baseline := _values(records, sweep.baseline_label, h["task"]):
        values = list(next(iter(baseline.values())).values())
        var = float(np.var(values, ddof=1)) if len(values) > 1 else math.nan
        out.update(items=len(values), item_sd=2 * math.sqrt(var * (1 - rho)) if var == var else math.nan,
                   item_sd_from=f"pilot's per-item variance, four cells with item correlation {rho:g} (assumed)")
    elif _proportion(sweep.runs[0], h["task"]):  # before the pilot: a 0/1 outcome's variance is at most 0.25
        out.update(items=sweep.runs[0].cfg.eval.items_for(h["task"]) or 0, item_sd=2 * math.sqrt(0.25 * (1 - rho)),
                   item_sd_from=f"no pilot yet: the worst case of a 0/1 outcome, item correlation {rho:g} (assumed)")
    else:  # a loss has no worst case to assume
        out.update(items=sweep.runs[0].cfg.eval.items_for(h["task"]) or 0, item_sd=math.nan,
                   item_sd_from="unknown: no pilot record yet (`tunelab sweep pilot`)")
    seeds = sorted(set.intersection(*(set(c) for c in cells))) if all(cells) else []
    if len(seeds) >= 2:
        d = [(_seed_score(cells[3][s]) - _seed_score(cells[2][s])) - (_seed_score(cells[1][s]) - _seed_score(cells[0][s]))
             for s in seeds]
        out.update(seed_sd=float(np.std(d, ddof=1)), seed_sd_from=f"records ({len(d)} seeds in every cell)")
    elif "seed_sd" in sweep.assume:
        out.update(seed_sd=math.sqrt(2) * sweep.assume["seed_sd"], seed_sd_from="sqrt(2) x assume.seed_sd")
    else:
        out.update(seed_sd=math.nan, seed_sd_from="unknown (no two seeds in every cell; state assume.seed_sd)")
    return _detectable(out, len(sweep.seeds))


def judged_power(sweep: Any) -> list[dict[str, Any]]:
    """Each judged claim's detectable effect on the win rate (see the module docstring); [] without any."""
    if not sweep.judged:
        return []
    from tunelab.runner.judged_study import judged_item_outcomes

    rho = sweep.assume.get("item_correlation", DEFAULT_ITEM_CORRELATION)
    k = len(sweep.seeds)
    task = sweep.judged["task"]
    planned = sweep.runs[0]
    try:
        n_items = len(get_task(task, **planned.cfg.eval.task_options.get(task, {})).items(planned.cfg.eval.items_for(task),
                                                                                           planned.cfg.eval.seed))
    except Exception:  # noqa: BLE001 - a task that cannot list its items here (no data): the recipe's limit
        n_items = planned.cfg.eval.items_for(task) or 0
    out = []
    for c in sweep.judged["claims"]:
        row: dict[str, Any] = {"claim": c["claim"], "task": task, "arm": c["arm"], "versus": c["versus"],
                               "direction": c["direction"], "effect": c["effect"], "seeds": k}
        wins = judged_item_outcomes(sweep, c)
        if len(wins) > 1:
            row.update(items=len(wins), item_sd=float(np.std(wins, ddof=1)), item_sd_from="judged verdicts")
        else:
            row.update(items=n_items, item_sd=0.5 * math.sqrt((1 + (k - 1) * rho) / k),
                       item_sd_from=f"no verdict yet: a win/loss verdict's worst case (sd 0.5) over {k} seed(s), "
                                    f"item correlation {rho:g} (assumed)")
        if "seed_sd" in sweep.assume:
            row.update(seed_sd=sweep.assume["seed_sd"], seed_sd_from="assumed (assume.seed_sd)")
        else:
            row.update(seed_sd=math.nan, seed_sd_from="unknown (state assume.seed_sd)")
        out.append(_detectable(row, k, len(sweep.judged["claims"])))
    return out


def plan(sweep: Any, host: str | None = None) -> dict[str, Any]:
    """The study's plan on this host: runs with estimated seconds, and each claim's detectable effect."""
    records, stale = sweep.recorded()
    host = host or this_host(sweep)
    estimates = estimate_seconds(sweep, records, host)
    runs = [{"run": p.name, "arm": p.arm.label, "seed": p.seed, "recorded": p.name in records,
             "seconds": estimates[p.name][0], "estimate_from": estimates[p.name][1]} for p in sweep.runs]
    left = [r["seconds"] for r in runs if not r["recorded"]]
    return {"study": sweep.name, "host": host, "runs": runs, "stale_records": stale,
            "runs_left": len(left), "seconds_left": float(sum(left)) if left else 0.0,
            "alpha_per_claim": ALPHA / max(len(sweep.hypotheses), 1), "power": POWER,
            "assume": {"item_correlation": sweep.assume.get("item_correlation", DEFAULT_ITEM_CORRELATION),
                       **({"seed_sd": sweep.assume["seed_sd"]} if "seed_sd" in sweep.assume else {})},
            "claims": [claim_power(sweep, h, records) for h in sweep.hypotheses],
            **({"interaction": i} if (i := interaction_power(sweep, records)) else {}),
            **({"judged": j} if (j := judged_power(sweep)) else {})}


def pilot_runs(sweep: Any) -> list[Any]:
    """The pilot's planned runs: the baseline arm and ``pilot_arms`` at the first seed."""
    arms = {sweep.baseline_label, *sweep.pilot_arms}
    return [p for p in sweep.runs if p.seed == sweep.seeds[0] and p.arm.label in arms]


def seen_beyond_pilot(sweep: Any, records: dict[str, Any]) -> bool:
    """Whether results beyond the pilot are already known: a run of the study's own recorded outside the
    pilot, or runs shared from another study beyond the pilot that complete some claim's two arms (or the
    claimed interaction's four cells) with what is recorded. Shared runs that compare nothing yet (a rounds
    curve whose round-0 arm is another study's) leave the plan open."""
    pilots = {p.name for p in pilot_runs(sweep)}
    beyond = {n: r for n, r in records.items() if n not in pilots}
    if any("shared_from" not in r for r in beyond.values()):
        return True
    later = {p.arm.label for p in sweep.runs if p.name in beyond}
    known = {p.arm.label for p in sweep.runs if p.name in records}  # the pilot's arms too
    pairs = [(scored_arm(h["arm"]), scored_arm(h["versus"])) for h in sweep.hypotheses]
    pairs += [(scored_arm(c["arm"]), scored_arm(c["versus"])) for c in (sweep.judged or {}).get("claims", [])]
    if any({a, b} <= known and {a, b} & later for a, b in pairs):
        return True
    cells = cell_labels(sweep) if sweep.interaction else []
    return bool(cells) and set(cells) <= known and bool(set(cells) & later)


def save_plan(sweep: Any, the_plan: dict[str, Any]) -> bool:
    """Write ``<study>/plan.json`` unless results beyond the pilot are known (:func:`seen_beyond_pilot`; then
    it is frozen, and False is returned; a study none was saved for before then gets none: a plan written
    after the results would not be one)."""
    records, _ = sweep.recorded()
    path = sweep.study_folder / "plan.json"
    if seen_beyond_pilot(sweep, records):
        return False
    write_json(path, {k: v for k, v in the_plan.items() if k != "stale_records"})
    return True


def gate(sweep: Any, records: dict[str, dict[str, Any]], accept: bool = False) -> dict[str, Any]:
    """The pilot gate on the recorded baseline run at the first seed (see the module docstring).

    Raises:
        ConfigError: The baseline's pilot run is not recorded.
    """
    base = next((p for p in pilot_runs(sweep) if p.arm.label == sweep.baseline_label), None)
    if base is None or base.name not in records:
        raise ConfigError(f"{sweep.path}: the pilot's baseline run is not recorded yet (`tunelab sweep pilot`)")
    record = records[base.name]
    ranges = sweep.pilot_range
    scores, outside, not_gated = {}, [], []
    for task in dict.fromkeys(h["task"] for h in sweep.hypotheses):
        entry = record["results"].get(task)
        sign = record["items"].get(task, {}).get("sign", 1)
        if not entry or "tuned" not in entry:
            outside.append({"task": task, "score": None, "why": "the baseline has no score on it"})
            continue
        value = float(entry["tuned"]["value"])
        scores[task] = value
        lo, hi = ranges.get(task, ranges["default"])
        if sign < 0 or not 0.0 <= value <= 1.0:
            not_gated.append(task)
        elif not lo <= value <= hi:
            outside.append({"task": task, "score": value, "range": [lo, hi],
                            "why": "at the floor" if value < lo else "at the ceiling"})
    pools = {}
    for source, (lo, hi) in getattr(sweep, "pool_range", {}).items():
        summary = (record.get("pools", {}).get(source) or {}).get("summary") or {}
        rate = summary.get("success_rate")
        pools[source] = {"success_rate": rate, "range": [lo, hi], "failures": summary.get("failures", {}),
                         "trajectories": summary.get("trajectories")}
        if rate is None:
            outside.append({"task": f"pool {source}", "score": None,
                            "why": "the baseline's record holds no summary of this generated pool"})
        elif not lo <= rate <= hi:
            outside.append({"task": f"pool {source}", "score": rate, "range": [lo, hi],
                            "why": "too few successes" if rate < lo else "too few failures"})
    return {"run": base.name, "range": {t: list(r) for t, r in ranges.items()}, "scores": scores, "not_gated": not_gated, "outside": outside,
            "passed": not outside, "accepted": bool(outside) and accept} | ({"pools": pools} if pools else {})


def gate_message(sweep: Any, result: dict[str, Any]) -> str:
    """The refusal naming each task outside its range and its score."""
    parts = [f"{o['task']}: {o['why']}" + (f" ({o['score']:.3f} outside [{o['range'][0]:g}, {o['range'][1]:g}])"
                                         if o["score"] is not None else "") for o in result["outside"]]
    return (f"{sweep.path}: the pilot's baseline is outside its range on {'; '.join(parts)}: the claims on it "
            "cannot be tested there. Fix the design (harder/easier task, more steps) or pass "
            "--accept-floor-ceiling to spend the seeds anyway (the findings will say so)")


def _num(value: float, spec: str = ".3f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def _power_text(c: dict[str, Any]) -> str:
    """A claim's (or the interaction's) effect, MDEs with their sources and the plan's label, for the terminal."""
    return (f"effect {c['effect']:g}; MDE items {_num(c['mde_items'])} (n={c['items']}, sd {_num(c['item_sd'])}: "
            f"{c['item_sd_from']}); MDE seeds {_num(c['mde_seeds'])} ({c['seeds']} seeds, sd {_num(c['seed_sd'])}: "
            f"{c['seed_sd_from']})" + (f" -> {c['label'].upper()}" if c["label"] else " -> detectable"))


def format_plan(the_plan: dict[str, Any]) -> str:
    """The plan for the terminal: runs and minutes, then each claim's detectable effect."""
    runs = the_plan["runs"]
    done = sum(r["recorded"] for r in runs)
    lines = [f"study {the_plan['study']} on {the_plan['host']}: {len(runs)} runs, {done} recorded, "
             f"{the_plan['runs_left']} left, about {_num(the_plan['seconds_left'] / 60, '.0f')} min left"]
    for r in runs:
        state = "recorded" if r["recorded"] else f"~{_num(r['seconds'] / 60, '.1f')} min ({r['estimate_from']})"
        lines.append(f"  {r['arm']:40s} seed {r['seed']}: {state}")
    lines.append(f"claims (MDE at {the_plan['power']:.0%} power, two-sided alpha {the_plan['alpha_per_claim']:.3g} "
                 f"per claim, Holm's strictest step):")
    for c in the_plan["claims"]:
        lines.append(f"  {c['claim']} [{c['task']}: {c['arm']} vs {c['versus']}]: {_power_text(c)}")
    if i := the_plan.get("interaction"):
        lines.append(f"interaction (difference in differences, alpha {ALPHA:g} on its own): {i['claim']} "
                     f"[{i['task']}]: {_power_text(i)}")
    for c in the_plan.get("judged", []):
        lines.append(f"judged (win rate of {c['arm']} over {c['versus']} above 1/2): {c['claim']} [{c['task']}]: "
                     f"{_power_text(c)}")
    for line in the_plan.get("stale_records", []):
        lines.append(f"  {line}")
    return "\n".join(lines)
