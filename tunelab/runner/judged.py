"""A judged comparison of finished runs: an LLM judge reads their answers to the same items, pair by pair.

``tunelab judge RUN_A RUN_B [RUN_C ...] --task T --judge SPEC``: for every pair of runs, the judge sees
the item's prompt and both answers, in both orders (:meth:`tunelab.eval.judge.Judge.pairwise`), on the
items both runs answered. Per pair it reports side by side:

* the raw win rate and the length-controlled one (AlpacaEval 2's GLM, :mod:`tunelab.eval.length_control`);
* the judge's biases on these verdicts: flip rate and first-shown preference (position), the slope on
  the length difference (length), and whose model family the judge shares (self-preference; measured
  against people with ``--ratings``, :mod:`tunelab.eval.judge_bias`);
* parse failures (a reply naming no winner is counted, never guessed).

Where the task has a verifier (``--gold N``), N judged items drawn at random are labelled by it and the
judge is calibrated on them by PPI, as it would be on people's ratings (``--ratings``: the ui's blind
ratings), with the gold rate over every item to check the interval against.

With three runs or more, Bradley-Terry scores of all runs with bootstrap CIs
(:mod:`tunelab.eval.bradley_terry`). Every verdict is kept (``verdicts``: item, both orders' raw replies),
and the judge's own fingerprint and prompt version.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config import ConfigError, is_run, load_config
from tunelab.data.formats import DataError
from tunelab.eval.bradley_terry import bradley_terry
from tunelab.eval.judge import OUTCOME, Judge, circularity_warning, model_family
from tunelab.eval.judge_bias import position_bias, self_preference
from tunelab.eval.length_control import length_controlled
from tunelab.eval.ppi import ppi_mean
from tunelab.eval.tasks.base import get_task
from tunelab.generate.base import Generator
from tunelab.runner.compare import eval_dir, read_rows


def evaluated_items(cfg: Any, task: str) -> list[Any]:
    """The items of ``task`` as a run with config ``cfg`` evaluated them (its task options, item limit and seed)."""
    return get_task(task, **cfg.eval.task_options.get(task, {})).items(cfg.eval.items_for(task), cfg.eval.seed)


def task_prompts(run: Path, task: str) -> dict[str, Any]:
    """Item id -> prompt (text or chat messages) of ``task`` as the run's recipe evaluated it (its task
    options, item limit and seed)."""
    return {str(it.id): it.prompt for it in evaluated_items(load_config(run), task)}


def run_answers(run: Path, task: str) -> dict[str, dict[str, Any]]:
    """Item id -> ``{"prompt", "answer", "correct"}`` of a run's evaluation of ``task`` (prompts rebuilt
    from its recipe; ``correct`` where the task's verifier scored the answer).

    Raises:
        DataError: no such run, or it has no rows of ``task``.
    """
    if not is_run(run, need="config"):
        raise DataError(f"{run}: not a run folder (no config.yaml)")
    path = eval_dir(run) / f"{task}.jsonl"
    if not path.is_file():
        raise DataError(f"{run}: no evaluation of {task!r} ({path} is missing)")
    rows = read_rows(path)
    prompts = {i: p if isinstance(p, str) else p[-1]["content"] for i, p in task_prompts(run, task).items()}
    out = {}
    for i, row in rows.items():
        answer = row.get("completion")
        if isinstance(answer, str) and i in prompts:
            out[i] = {"prompt": prompts[i], "answer": answer,
                      **({"correct": float(row["correct"])} if isinstance(row.get("correct"), (int, float)) else {})}
    return out


def _lineage(run: Path) -> dict[str, str | None]:
    """The model a run was tuned from and the model that generated its training data (None: none)."""
    cfg = load_config(run)
    generators = [src.generate.get("model") or src.generate.get("evolver") for src in cfg.data.sources
                  if isinstance(src.generate, dict)]
    return {"model": cfg.model.name, "generator": next((g for g in generators if g), None)}


def judge_runs(runs: Sequence[str | Path], task: str, judge: Generator, judge_name: str, limit: int | None = None,
               gold: int = 0, seed: int = 0, say: Callable[[str], None] = print, verdict: str = "text") -> dict[str, Any]:
    """Judge every pair of ``runs`` on ``task``'s common items (see the module docstring).

    Args:
        runs: Two or more run folders with an evaluation of ``task``.
        task: The evaluation task whose answers are judged.
        judge: The judge model.
        judge_name: Its model name (for its family).
        limit: At most this many common items per pair (the first by id).
        gold: Calibrate the judge on the task's verifier: this many items per pair, drawn at random,
            get their gold winner (the run whose answer is correct; a tie when both or neither are) and
            PPI corrects the judge with them (:func:`gold_calibration`); 0: none.
        seed: The draw of those items.
        say: Progress lines.
        verdict: ``text`` (the judge writes a justification and a verdict) or ``logprob`` (a local judge's
            most likely verdict, :class:`tunelab.eval.judge.Judge`).

    Raises:
        ConfigError: fewer than two runs, or a run named twice.
        DataError: a run without the task's answers, or a pair with no common item.
    """
    paths = [Path(r) for r in runs]
    if len(paths) < 2:
        raise ConfigError(f"tunelab judge: name at least two runs, got {len(paths)}")
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        raise ConfigError(f"tunelab judge: a run is named twice ({', '.join(names)})")
    answers = {p.name: run_answers(p, task) for p in paths}
    lineage = {p.name: _lineage(p) for p in paths}
    if gold:  # before any judging: a task without a verifier cannot give gold labels
        for name in names:
            if missing := next((i for i, x in answers[name].items() if "correct" not in x), None):
                raise DataError(f"--gold: item {missing!r} of run {name!r} has no verifier score ('correct'); "
                                "calibrating on gold labels needs a task with a verifier")
    jury = Judge(judge, verdict=verdict)
    pairs, battles = [], []
    for a, b in itertools.combinations(names, 2):
        common = sorted(set(answers[a]) & set(answers[b]))[:limit]
        if not common:
            raise DataError(f"runs {a!r} and {b!r} answered no common item of {task!r}")
        say(f"[tunelab] judging {a} vs {b} on {len(common)} items of {task} (both orders)")
        questions = [{"id": i, "turns": [answers[a][i]["prompt"]], "category": task} for i in common]
        records = jury.pairwise(questions, [[answers[a][i]["answer"]] for i in common],
                                [[answers[b][i]["answer"]] for i in common])
        ok = [r for r in records if r["winner"] != "error"]
        outcomes = [OUTCOME[r["winner"]] for r in ok]
        lc = length_controlled(outcomes, [r["len_a"] for r in ok], [r["len_b"] for r in ok])
        prefs = self_preference(judge_name, {"a": lineage[a]["model"], "b": lineage[b]["model"]},
                                generator=lineage[a]["generator"] or lineage[b]["generator"])
        battles += [(a, b, o) for o in outcomes]
        try:  # too few parsed verdicts for the gold draw: say so, and keep the judging done
            gold_part = gold_calibration(records, answers[a], answers[b], gold, seed) if gold else None
        except DataError as e:
            gold_part = {"error": str(e)}
            say(f"[tunelab] {a} vs {b}: no gold calibration ({e})")
        pairs.append({"a": a, "b": b, "items": len(common), "judged": len(ok), "parse_failures": len(records) - len(ok),
                      "raw_win_rate": lc["raw"], "lc_win_rate": lc["lc_win_rate"], "length_bias": lc["length_bias"],
                      "mean_length_difference": lc["mean_dlen"], **({"note": lc["note"]} if "note" in lc else {}),
                      "position_bias": position_bias(records), "self_preference": prefs,
                      **({"gold": gold_part} if gold_part else {}),
                      "verdicts": [{k: r[k] for k in ("id", "winner", "verdict_ab", "verdict_ba", "len_a", "len_b",
                                                       "raw_ab", "raw_ba")} for r in records]})
    out: dict[str, Any] = {"task": task, "judge": judge_name, "judge_fingerprint": judge.fingerprint, "verdict": verdict,
                           "judge_family": model_family(judge_name), "runs": names, "lineage": lineage, "pairs": pairs}
    warnings = {w for info in lineage.values() if info["generator"]
                and (w := circularity_warning(model_family(judge_name) or "", model_family(info["generator"])))}
    if warnings:
        out["warnings"] = sorted(warnings)
    if len(names) > 2:
        if not battles:
            raise DataError("no verdict parsed: the judge named no winner on any item")
        out["bradley_terry"] = bradley_terry(battles, reference=names[0])
    return out


def gold_calibration(records: Sequence[dict[str, Any]], a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]],
                     n: int, seed: int = 0) -> dict[str, Any]:
    """The judge calibrated on a verifier instead of people: ``n`` judged items drawn at random get their
    gold outcome for B (1 when only B's answer is correct, 0 when only A's, 0.5 otherwise) and PPI
    (:func:`tunelab.eval.ppi.ppi_mean`) estimates B's gold win rate from them and every judge verdict.
    Since the verifier scored every item, the gold rate over all of them (``truth``) says whether the
    interval covers it: a check people's ratings never allow.

    Raises:
        DataError: the task has no verifier scores (``correct``), or fewer than ``n`` judged items.
    """
    judged = [r for r in records if r["winner"] != "error"]
    missing = [r["id"] for r in judged if "correct" not in a[r["id"]] or "correct" not in b[r["id"]]]
    if missing:
        raise DataError(f"--gold: item {missing[0]!r} has no verifier score ('correct'); calibrating on gold "
                        f"labels needs a task with a verifier")
    if len(judged) < max(n, 2):
        raise DataError(f"--gold {n}: only {len(judged)} items were judged")
    rng = np.random.default_rng(seed)
    picked = set(rng.choice(len(judged), size=n, replace=False).tolist())
    judge_b = [1.0 - OUTCOME[r["winner"]] for r in judged]
    truth = [0.5 + 0.5 * (b[r["id"]]["correct"] - a[r["id"]]["correct"]) for r in judged]
    est = ppi_mean([v for k, v in enumerate(judge_b) if k not in picked], [judge_b[k] for k in sorted(picked)],
                   [truth[k] for k in sorted(picked)])
    return {**est, "truth": float(np.mean(truth)), "labels": "verifier", "seed": seed}


def format_judged(result: dict[str, Any]) -> str:
    """The comparison as text: one block per pair, then Bradley-Terry scores."""

    def ci(s: dict[str, Any]) -> str:
        return f"{s['value']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]"

    lines = [f"judge {result['judge']} (family {result['judge_family']}) on {result['task']}"]
    for p in result["pairs"]:
        pos, length = p["position_bias"], p["length_bias"]
        lines += [f"{p['a']} vs {p['b']}: {p['judged']} of {p['items']} items judged ({p['parse_failures']} unparsed)",
                  f"  win rate of {p['a']}: raw {ci(p['raw_win_rate'])}, length-controlled {ci(p['lc_win_rate'])}"
                  f" (mean length difference {p['mean_length_difference']:+.0f} chars)",
                  f"  position bias: flip rate {ci(pos['flip_rate'])}, first shown chosen {ci(pos['first_shown'])}"
                  f" (p {pos['first_shown']['p']:.3g})",
                  f"  length bias: slope {ci(length)}" if length.get("n") and length["value"] == length["value"]
                  else f"  length bias: {p.get('note', 'not estimable')}"]
        own = p["self_preference"]["own"]
        lines.append(f"  self-preference: the judge shares the family of {', '.join(p[s] for s in own) or 'neither run'}")
        if "human" in p:
            h = p["human"]
            lines.append(f"  people ({h['n']} rated): PPI {ci(h['ppi'])}, people only {ci(h['human_only'])}, "
                         f"judge only {ci(h['judge_only'])}")
        if "error" in p.get("gold", {}):
            lines.append(f"  no gold calibration: {p['gold']['error']}")
        elif "gold" in p:
            g = p["gold"]
            lines.append(f"  win rate of {p['b']} by the verifier ({g['n']} gold labels): PPI {ci(g['ppi'])}, gold only "
                         f"{ci(g['human_only'])}, judge only {ci(g['judge_only'])}; all {g['n'] + g['N']} gold: "
                         f"{g['truth']:.3f}")
    if "bradley_terry" in result:
        bt = result["bradley_terry"]
        lines.append("Bradley-Terry (Elo scale, bootstrap 95% CI):")
        lines += [f"  {s}: {ci(bt['scores'][s])}" for s in bt["order"]]
    lines += [f"warning: {w}" for w in result.get("warnings", [])]
    return "\n".join(lines)
