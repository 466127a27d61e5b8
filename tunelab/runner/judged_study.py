"""A study's judged claims: two arms' answers to an open-ended task compared by an LLM judge, from the records.

A sweep file's ``judged:`` section (:func:`tunelab.runner.sweep_fields.parse_judged`) names an open-ended
evaluation task (``instructions``: the WizardLM test set), a judge and claims ``{claim, arm, versus,
direction, effect, source}``. ``tunelab sweep judge FILE [--judge SPEC]`` then, for every claim and every
training seed both arms have a record for, shows the judge each item's instruction and both arms' answers
in both orders (:meth:`tunelab.eval.judge.Judge.pairwise`; a verdict that flips with the order is a tie)
and writes ``<study folder>/judged/<arm>__vs__<versus>-seed<k>.json.gz``: every verdict with the judge's
raw replies, both answers' lengths, the judge's spec, fingerprint and prompt version, and both runs'
names and config digests. Answers and prompts come from the records alone (a record keeps an
unverified answer whole: :data:`tunelab.runner.records.JUDGED_CHARS`; the prompts are rebuilt from the
task and the run's config), so judging needs no run folder and works on a fresh clone. A pair-seed
already judged by the same judge, in the same verdict mode, on the same records is not judged again: an
interrupted call resumes. Only verdicts on every common item by the sweep file's own judge count in the
findings; a look with ``--limit`` or another ``--judge`` is written but listed as not counted.

:func:`tunelab.report.findings.judged_claims` (the findings) reads those files back (:func:`load_judged`). Per
claim, ``arm``'s outcome on an item is 1 when the judge prefers its answer in both orders, 0 when it
prefers ``versus``'s, 1/2 otherwise; each item's outcome is averaged over the seeds judged, and:

* the win rate of ``arm`` (the mean over items) with the sign-flip test of ``win rate = 1/2`` and its CI
  (:func:`tunelab.eval.paired.sign_flip_test` on the items' outcomes against 1/2), Holm-adjusted across
  the study's judged claims (their own family), the minimum detectable effect at 80% power (as for every
  claim, :func:`tunelab.report.findings.minimum_detectable_effect`) and the verdict
  (:func:`tunelab.report.findings.judge`, ``effect`` being the claimed win rate above one half);
* per seed the win rate, and a one-sample t-test of the seeds' win rates against 1/2 (one-sided in the
  claimed direction; training randomness);
* the length-controlled win rate (AlpacaEval 2's GLM on the length difference,
  :func:`tunelab.eval.length_control.length_controlled`, over every judged item and seed), both arms' mean
  answer length in characters, the judge's flip rate and first-shown preference
  (:func:`tunelab.eval.judge_bias.position_bias`) and its unparsed verdicts;
* the ``subset`` (e.g. ``{difficulty: 8}``: WizardLM's hard items) alone, descriptively.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.config import ConfigError, RunConfig, from_dict
from tunelab.eval.judge import OUTCOME, Judge
from tunelab.io import DataError, read_json_gz, write_json_gz
from tunelab.runner.judged import evaluated_items
from tunelab.runner.sweep_file import arm_slug

FORMAT = "tunelab.study-judged/1"
FOLDER = "judged"
VERDICT_KEYS = ("id", "winner", "verdict_ab", "verdict_ba", "len_a", "len_b", "raw_ab", "raw_ba")


def judged_path(sweep: Any, claim: dict[str, Any], seed: int) -> Path:
    """``<study folder>/judged/<arm>__vs__<versus>-seed<k>.json.gz``."""
    return sweep.study_folder / FOLDER / f"{arm_slug(claim['arm'])}__vs__{arm_slug(claim['versus'])}-seed{seed}.json.gz"


def item_prompts(record: dict[str, Any], task: str) -> dict[str, dict[str, Any]]:
    """Item id -> ``{"question": the text the judge is shown, "meta": the item's meta}`` of ``task`` as the
    record's run evaluated it (its task options, item limit and seed)."""
    out = {}
    for it in evaluated_items(from_dict(RunConfig, dict(record["config"])), task):
        text = it.prompt if isinstance(it.prompt, str) else next(
            (m["content"] for m in reversed(it.prompt) if m.get("role") == "user"), "")
        out[str(it.id)] = {"question": text, "meta": {k: v for k, v in it.meta.items() if k != "question"}}
    return out


def record_answers(record: dict[str, Any], task: str) -> dict[str, str]:
    """Item id -> the run's answer to ``task``, from its record.

    Raises:
        DataError: the record has no rows of ``task``.
    """
    rows = (record.get("items") or {}).get(task, {}).get("rows")
    if not rows:
        raise DataError(f"record {record.get('run')!r} has no answers to {task!r} (evaluate it in every arm)")
    return {str(r["id"]): str(r.get("prediction", "")) for r in rows}


def pairs_to_judge(sweep: Any, found: dict[str, dict[str, Any]]) -> list[tuple[dict[str, Any], int, dict, dict]]:
    """(claim, seed, arm's record, versus's record) for every claim and seed both arms have a record for."""
    by_arm: dict[tuple[str, int], dict[str, Any]] = {}
    for p in sweep.runs:
        if p.name in found:
            by_arm[(p.arm.label, p.seed)] = found[p.name]
    out = []
    for claim in sweep.judged["claims"]:
        for seed in sweep.seeds:
            a, b = by_arm.get((claim["arm"], seed)), by_arm.get((claim["versus"], seed))
            if a is not None and b is not None:
                out.append((claim, seed, a, b))
    return out


def _fresh(path: Path, judge_spec: str, mode: str, limit: int | None, a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether ``path`` already holds this judge's verdicts (same spec and verdict mode) on these two records,
    on every common item, or on the first ``limit`` when a limited look is asked for again."""
    if not path.is_file():
        return False
    try:
        old = read_json_gz(path)
    except DataError:
        return False
    return (old.get("judge") == judge_spec and old.get("verdict_mode") == mode and old.get("limit") == limit
            and old.get("digests") == [a["config_digest"], b["config_digest"]])


def judge_study(sweep: Any, judge: Any = None, judge_spec: str | None = None, limit: int | None = None,
                say: Callable[[str], None] = print) -> dict[str, Any]:
    """Judge every claim's arms seed by seed (see the module docstring); what was judged and skipped.

    Args:
        sweep: The study (a :class:`~tunelab.runner.sweep_file.Sweep` with a ``judged`` section).
        judge: A Generator to judge with (default: built from ``judge_spec``).
        judge_spec: The judge's spec (default: the sweep file's ``judged.judge``), recorded with each verdict.
        limit: At most this many items per pair (the first by id; for a quick look, not for findings).
        say: Progress lines.

    Raises:
        ConfigError: the sweep file has no ``judged:`` section.
        DataError: a record without the task's answers, or two arms with no common item.
    """
    if not sweep.judged:
        raise ConfigError(f"{sweep.path}: no 'judged:' section (task, judge, claims) to judge")
    spec = judge_spec or sweep.judged["judge"]
    task = sweep.judged["task"]
    found, _ = sweep.recorded()
    todo = pairs_to_judge(sweep, found)
    done, skipped, jury = [], [], None
    for claim, seed, rec_a, rec_b in todo:
        path = judged_path(sweep, claim, seed)
        if _fresh(path, spec, sweep.judged["verdict"], limit, rec_a, rec_b):
            skipped.append(path.name)
            continue
        if jury is None:
            if judge is None:
                from tunelab.eval.tasks.judge_task import judge_from_spec

                judge = judge_from_spec(spec)
            jury = Judge(judge, verdict=sweep.judged["verdict"])
        prompts = item_prompts(rec_a, task)
        ans_a, ans_b = record_answers(rec_a, task), record_answers(rec_b, task)
        common = sorted(set(ans_a) & set(ans_b) & set(prompts))[:limit]
        if not common:
            raise DataError(f"{rec_a['run']} and {rec_b['run']} answered no common item of {task!r}")
        say(f"[tunelab] judging {claim['arm']} vs {claim['versus']}, seed {seed}: {len(common)} items of {task} "
            "(both orders)")
        questions = [{"id": i, "turns": [prompts[i]["question"]], "category": task} for i in common]
        verdicts = jury.pairwise(questions, [[ans_a[i]] for i in common], [[ans_b[i]] for i in common])
        write_json_gz(path, {
            "format": FORMAT, "study": sweep.name, "claim": claim["claim"], "arm": claim["arm"],
            "versus": claim["versus"], "seed": seed, "task": task, "judge": spec,
            "judge_fingerprint": getattr(judge, "fingerprint", str(judge)), "verdict_mode": sweep.judged["verdict"],
            "prompt_version": verdicts[0]["prompt_version"] if verdicts else None,
            "runs": [rec_a["run"], rec_b["run"]], "digests": [rec_a["config_digest"], rec_b["config_digest"]],
            "limit": limit,
            "meta": {i: prompts[i]["meta"] for i in common},
            "verdicts": [{k: v[k] for k in VERDICT_KEYS} for v in verdicts]})
        done.append(path.name)
        say(f"[tunelab] wrote {path}")
    return {"judged": done, "skipped": skipped, "waiting": _waiting(sweep, found)}


def _waiting(sweep: Any, found: dict[str, dict[str, Any]]) -> list[str]:
    """Claim-seeds not judged yet because an arm's run has no record."""
    have = {(c["claim"], s) for c, s, _, _ in pairs_to_judge(sweep, found)}
    return [f"{c['arm']} vs {c['versus']}, seed {s}" for c in sweep.judged["claims"] for s in sweep.seeds
            if (c["claim"], s) not in have]


def load_judged(sweep: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The study's judged files that count: their runs still planned (config digests), judged on every common
    item (no ``--limit``) by the sweep file's judge in its verdict mode; and why each other one does not."""
    folder = sweep.study_folder / FOLDER
    if not folder.is_dir():
        return [], []
    digests = set(sweep.digests().values())
    kept, stale = [], []
    for path in sorted(folder.glob("*.json.gz")):
        data = read_json_gz(path)
        if data.get("format") != FORMAT:
            raise DataError(f"{path}: not a judged file of a study (format {data.get('format')!r})")
        if not set(data.get("digests") or []) <= digests:
            stale.append(f"{path.name}: its runs are no longer in the sweep file (configs changed)")
        elif data.get("limit") is not None:
            stale.append(f"{path.name}: judged on the first {data['limit']} items only (--limit)")
        elif (data.get("judge"), data.get("verdict_mode")) != (sweep.judged["judge"], sweep.judged["verdict"]):
            stale.append(f"{path.name}: judged by {data.get('judge')} ({data.get('verdict_mode')} verdicts), not the "
                         f"sweep file's judge {sweep.judged['judge']} ({sweep.judged['verdict']})")
        else:
            kept.append(data)
    return kept, stale


def outcomes(files: list[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[int, list[float]], list[dict]]:
    """item -> arm's outcomes over seeds; seed -> its items' outcomes; every parsed verdict."""
    per_item: dict[str, list[float]] = {}
    per_seed: dict[int, list[float]] = {}
    parsed = []
    for f in files:
        for v in f["verdicts"]:
            if v["winner"] == "error":
                continue
            o = OUTCOME[v["winner"]]
            per_item.setdefault(str(v["id"]), []).append(o)
            per_seed.setdefault(int(f["seed"]), []).append(o)
            parsed.append(v)
    return per_item, per_seed, parsed


def judged_item_outcomes(sweep: Any, claim: dict[str, Any]) -> list[float]:
    """The claim's per-item win outcomes of ``arm`` (each averaged over the seeds judged) from the current
    judged files; [] before any (the plan's evidence)."""
    files, _ = load_judged(sweep)
    per_item, _, _ = outcomes([f for f in files if f["arm"] == claim["arm"] and f["versus"] == claim["versus"]])
    return [float(np.mean(v)) for _, v in sorted(per_item.items())]


def format_judge_done(result: dict[str, Any]) -> str:
    """What ``tunelab sweep judge`` did, in a few lines."""
    lines = [f"judged {len(result['judged'])} pair-seed(s), {len(result['skipped'])} already judged"]
    if result["waiting"]:
        lines.append("waiting for records: " + "; ".join(result["waiting"]))
    return "\n".join(lines)
