"""A study's section of ``docs/findings.md`` and its terminal summary, from :func:`tunelab.report.findings.report`.

The section (markdown, no absolute paths, no dates: the same records give the same bytes) holds the
question, where the design differs from the paper, the design, the plan's detectable effects and the
pilot's gate, each generated pool's make-up, per task the arms with their CIs, the interaction and any
ensemble, the claims under test with their verdicts, resources and diagnostics. :func:`write_findings`
puts every study's section between its markers in ``docs/findings.md`` and writes each study's report
page beside it (:func:`tunelab.report.run_report.sweep_report`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tunelab.config import ConfigError
from tunelab.eval.stats import proportion_score
from tunelab.io import write_text
from tunelab.report.findings import hosts, report
from tunelab.report.run_report import sweep_report
from tunelab.runner.aggregate import arm_cells, fmt
from tunelab.runner.sweep_fields import ENSEMBLE
from tunelab.runner.sweep_file import Arm


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
    shared: dict[str, int] = {}
    for r in result["_records"]:
        if r["record"].get("shared_from"):
            other = r["record"]["shared_from"].split("/")[0]
            shared[other] = shared.get(other, 0) + 1
    for other, n in sorted(shared.items()):
        lines.append(f"- shared runs: {n} of the recorded runs are study {other}'s, the same configs digest for digest "
                     "(their records are read from there, not run again)")
    if result.get("run_seconds"):
        lines.append(f"- compute: {result['run_seconds'] / 60:.1f} min over the recorded runs (sum of run wall times)")
    for host, n in hosts(result["_records"]).items():
        lines.append(f"- host: {host}: {n} run{'s' if n != 1 else ''}")
    if result.get("stale_records"):
        lines.append(f"- stale records not counted: {len(result['stale_records'])} (their config no longer matches)")
    return lines


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
        for c in [*the_plan["claims"], *the_plan.get("judged", [])]:
            judged = " (judged: win rate above 1/2)" if c in the_plan.get("judged", []) else ""
            out.append(f"| {c['claim']}{judged} | {c['effect']:g} | {c['items']} | {fmt(c['mde_items'])} | "
                       f"{fmt(c['seed_sd'])} ({c['seed_sd_from'].split(' (')[0]}) | {fmt(c['mde_seeds'])} | "
                       f"{c['label'] or 'yes'} |")
        out.append("")
    elif study.get("plan_missing_after_results") and (study.get("hypotheses") or study.get("judged")):
        out += ["**Plan**: none was saved before the seeds were spent (the runs came first, or are another "
                "study's), so no claim's detectable effect was stated in advance; the MDE beside each verdict is "
                "computed from the records.", ""]
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
    out = [f"**Pool `{source}`** (evolve, key {pool.get('key')}): {pool['summary'].get('dataset_rows')} kept rows "
           "over every generation (the source trains on those its keep_rounds / include_seeds select); per round "
           "(kept items):", "",
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
    kept: dict[str, int] = {}
    for r in study.get("_records", []):
        for source, pool in (r["record"].get("pools") or {}).items():
            pools.setdefault(source, pool)
            kept[source] = kept.get(source, 0) + bool(pool.get("pinned"))
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
                f"{s.get('tasks_solved_at_least_once')}; failures: {kinds or 'none'}."
                + (f" {kept[source]} runs trained on it after a change of tunelab's code (the study kept its pool)."
                   if kept.get(source) else ""), ""]
    return out


def _interference_lines(study: dict[str, Any]) -> list[str]:
    """Gradient interference between the sources beside each arm's effects (the mechanism a mixing study
    asks about: does conflict between two sources predict what adding one costs?)."""
    arms = (study.get("diagnostics") or {}).get("grad_interference") or {}
    keys = sorted({k for v in arms.values() for k in v if k.startswith(("cosine.", "conflict.")) or k == "mean_conflict_rate"})
    if not keys:
        return []
    tasks = list(study["tasks"])
    out = ["**Gradient interference beside the effects** (mean over each arm's runs: the cosine between two "
           "sources' gradients on their probe batches, the share of probes where it was negative, and every "
           "task's delta against the baseline, higher is better, a loss negated; arms with one source have no "
           "pair, the baseline no delta):", "",
           "| arm | " + " | ".join(k.replace("cosine.", "cosine ").replace("conflict.", "conflict ") for k in keys)
           + " | " + " | ".join(f"delta {t}" for t in tasks) + " |",
           "|---|" + "---|" * (len(keys) + len(tasks))]
    for label, values in arms.items():
        deltas = [((study["tasks"][t]["arms"].get(label) or {}).get("vs_baseline") or {}).get("delta") for t in tasks]
        out.append(f"| {label} | " + " | ".join(fmt(values.get(k), ".3f") for k in keys) + " | "
                   + " | ".join(fmt(d, "+.3f") for d in deltas) + " |")
    return out + [""]


def _judged_lines(judged: dict[str, Any] | None) -> list[str]:
    """The judged claims (:func:`tunelab.runner.judged_study.judged_claims`) as a table and notes."""
    if not judged:
        return []
    n = len(judged["claims"])
    out = [f"**Judged claims** ({judged['task']}'s answers compared by the judge `{judged['judge']}` "
           f"({judged['verdict_mode']} verdicts), each pair shown in both orders, a flip counted a tie; win rate of "
           f"the arm over the comparison, each item averaged over the seeds judged; p: sign-flip test of win rate "
           f"1/2 on items, Holm-adjusted across the study's {n} judged claim{'s' if n != 1 else ''}; seed-level p: "
           "one-sample t over the seeds' win rates, one-sided; LC: length-controlled win rate; MDE on the win "
           "rate above 1/2 at 80% power):", "",
           "| claim | arm vs | seeds | items | win rate [95% CI] | LC win rate | p (Holm) | seed-level p | "
           "mean chars (arm / vs) | flip rate | MDE | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for c in judged["claims"]:
        if "test" not in c:
            out.append(f"| {c['claim']} | {c['arm']} vs {c['versus']} | {len(c['seeds'])} | {c.get('items', 0)} | - | - "
                       f"| - | - | - | - | - | **{c['verdict']}** |")
            continue
        lc, ci = c["lc_win_rate"], c["win_ci"]
        seed_p = fmt(c["seed_test"]["p_value"], ".3g") if "seed_test" in c else "-"
        out.append(f"| {c['claim']} | {c['arm']} vs {c['versus']} | {len(c['seeds'])} | {c['items']} | "
                   f"{c['win_rate']:.3f} [{fmt(ci[0])}, {fmt(ci[1])}] | {fmt(lc.get('value'))} | "
                   f"{fmt(c.get('p_holm'), '.3g')} | {seed_p} | {c['mean_chars']['arm']:.0f} / "
                   f"{c['mean_chars']['versus']:.0f} | {fmt(c['position']['flip_rate'].get('value'))} | "
                   f"{fmt(c['mde'])} | **{c['verdict']}** |")
        per_seed = ", ".join(f"seed {s}: {v:.3f}" for s, v in c["per_seed"].items())
        notes.append(f"- {c['arm']} vs {c['versus']}: per seed {per_seed}; {c['unparsed']} verdict(s) unparsed; "
                     f"the judge chose the answer shown first in {fmt(c['position']['first_shown'].get('value'))} of "
                     f"its decisive verdicts" + (
                         f"; items with {', '.join(f'{k} >= {v:g}' for k, v in c['subset']['where'].items())} "
                         f"({c['subset']['items']}): win rate {fmt(c['subset']['win_rate'].get('value'))} "
                         f"[{fmt(c['subset']['win_rate']['ci'][0])}, {fmt(c['subset']['win_rate']['ci'][1])}]"
                         if c.get("subset") else ""))
    out += ["", *notes]
    sources = sorted({c["source"] for c in judged["claims"]})
    out += [""] + [f"Source: {s}" for s in sources]
    out += [f"Not counted: {s}" for s in judged.get("stale", [])]
    return out + [""]


def _delta(test: dict[str, Any] | None) -> str:
    """A paired test's ``+d [lo, hi]`` cell, or ``-`` without a test."""
    return f"{test['delta']:+.3f} [{test['ci'][0]:+.3f}, {test['ci'][1]:+.3f}]" if test else "-"


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
            delta = _delta(t)
            test = (f"TOST +-{h['effect']:g}" if h["direction"] == "equal" else
                    (t["method"].split(" (")[0] if t and t.get("method") else "-"))
            vs = h["versus"] + (f" (on {h['versus_task']})" if h.get("versus_task", h["task"]) != h["task"] else "")
            out.append(f"| {h['claim']} | {h['task']} | {h['arm']} vs {vs} | {delta} | {test} | "
                       f"{fmt(h.get('p_holm'), '.3g')} | {fmt(h.get('seed_p'), '.3g')} | {fmt(h.get('mde'))} | "
                       f"**{h['verdict']}** |")
        sources = sorted({h["source"] for h in study["hypotheses"] if h["source"]})
        out += [""] + [f"Source: {s}" for s in sources] + ([""] if sources else [])
    if i := study.get("interaction_claim"):
        t = i.get("test")
        sided = "two-sided" if i["direction"] == "either" else "one-sided"
        seed = (f"seed-level p {fmt(i.get('seed_p'), '.3g')} ({sided} t over per-seed differences in differences)"
                if "seed_p" in i else i.get("seed_note", ""))
        claimed = {"better": "+", "worse": "-", "either": "+-"}[i["direction"]]
        out += [f"**Interaction under test** ({i['task']}: {t['contrast'] if t else 'difference in differences'}; "
                f"claimed {claimed}{i['effect']:g}; alpha 0.05 on its own): "
                + (f"{t['delta']:+.3f} [{t['ci'][0]:+.3f}, {t['ci'][1]:+.3f}], p = {t['p_value']:.3g} "
                   f"({t['items']} items), {seed}, MDE {fmt(i.get('mde'))}: " if t else "")
                + f"**{i['claim']}: {i['verdict']}**", "", f"Source: {i['source']}", ""]
    out += _judged_lines(study.get("judged"))
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
    for suite, cells in (study.get("inference_costs") or {}).items():
        out += [f"**Inference cost on {suite}** (per prompt regime, mean over each arm's runs; input tokens with "
                "the run's tokenizer; seconds per item in the batched evaluation, and at batch 1 where measured, "
                "averaged only over runs on the same kind of host):", "",
                "| arm | regime | host | input tokens/item | tokens saved vs full | s/item (batched) | s/item (batch 1) |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {arm} | {regime} | {host} | {fmt(v.get('input_tokens'), '.1f')} | "
                f"{fmt(v.get('token_saving'), '.1%')} | {fmt(v.get('seconds_per_item'), '.3f')} | "
                f"{fmt(v.get('latency_batch1_s'), '.3f')} |"
                for (arm, regime, host), v in sorted(cells.items(), key=lambda kv: kv[0][2])]
        out.append("")
    for task, arms in (study.get("failure_kinds") or {}).items():
        kinds = sorted({k for a in arms.values() for k in a})
        if not kinds:
            continue
        out += [f"**How episodes failed on {task}** (share of all episodes per failure kind, mean over each "
                "arm's runs; success is the rest):", "",
                "| arm | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
        out += [f"| {arm} | " + " | ".join(f"{v.get(k, 0.0):.3f}" for k in kinds) + " |" for arm, v in arms.items()]
        out.append("")
    out += _interference_lines(study)
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


def glance(studies: list[dict[str, Any]]) -> list[str]:
    """The document's first table: every claim under test of every study, one row each (the hypotheses,
    the interaction claim, the judged claims), with its model, the runs recorded of those planned, the
    effect with its CI and the verdict, as each study's section words them; a study that states no claim
    gets one row saying so. A study whose runs are not all recorded is marked interim."""
    out = ["## At a glance", "",
           "Every claim under test, as the sections below state and judge it (delta: arm minus comparison, "
           "higher is better, a loss negated; judged claims give the win rate; a study with runs still to record "
           "is interim: its verdicts may change).", "",
           "| study | model | runs | claim | delta [95% CI] | seed-level p | verdict |", "|---|---|---|---|---|---|---|"]
    for study in studies:
        sweep, name = study["_sweep"], study["name"]
        done, planned = len(study["_records"]), len(sweep.runs)
        models = ", ".join(sorted({r.cfg.model.name for r in sweep.runs}))
        head = (f"| [{name}](#{name}) | {models} | {done}/{planned}"
                + (" (interim)" if done < planned else "") + " | ")
        rows = []
        for h in study["hypotheses"]:
            rows.append(f"{h['claim']} | {_delta(h.get('test'))} | {fmt(h.get('seed_p'), '.3g')} | {h['verdict']} |")
        if i := study.get("interaction_claim"):
            rows.append(f"{i['claim']} (interaction) | {_delta(i.get('test'))} | {fmt(i.get('seed_p'), '.3g')} | {i['verdict']} |")
        for c in (study.get("judged") or {}).get("claims", []):
            win = (f"win rate {c['win_rate']:.3f} [{fmt(c['win_ci'][0])}, {fmt(c['win_ci'][1])}]"
                   if "test" in c else "-")
            seed_p = fmt(c["seed_test"]["p_value"], ".3g") if "seed_test" in c else "-"
            rows.append(f"{c['claim']} (judged) | {win} | {seed_p} | {c['verdict']} |")
        out += [head + r for r in rows] or [head + "(no claim under test: a descriptive study) | - | - | - |"]
    return out + [""]


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
    parts, names, found = [], [], []
    for folder in folders:
        study = report(folder)
        found.append(study)
        page = out.parent / "studies" / f"{study['name']}.html"
        if pages:
            sweep_report({k: v for k, v in study.items() if not k.startswith("_")}, path=page)
        href = f"studies/{study['name']}.html"
        parts.append(section(study, href))
        names.append(study["name"])
    write_text(out, HEADER + "\n" + "\n".join(glance(found)) + "\n" + "\n".join(parts))
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
    for c in (study.get("judged") or {}).get("claims", []):
        lines.append(f"  {c['claim']} [judged: {c['arm']} vs {c['versus']}]: "
                     + (f"win rate {c['win_rate']:.3f} p(Holm) {fmt(c.get('p_holm'), '.3g')} -> " if "test" in c else "")
                     + c["verdict"])
    if not study["hypotheses"] and not (study.get("judged") or {}).get("claims"):
        lines.append("  (the sweep file states no hypotheses: see sweep.json for the arms' statistics)")
    return "\n".join(lines)
