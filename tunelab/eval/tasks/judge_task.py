"""``judge`` task: the model answers MT-Bench-style questions and an LLM judge grades the answers.

MT-Bench questions have two turns. The model answers turn 1 (the harness's prompt per item), then
turn 2 with its own turn-1 answer in the conversation (the harness asks :meth:`JudgeTask.follow_up`
for the next prompt). Each turn is judged: turn 1 on its own, turn 2 with MT-Bench's multi-turn
prompt style (the whole conversation, the reply to the second question graded; references of both
turns for math, reasoning and coding). ``turns: 1`` answers and judges the first turn only.

``mode: single`` reports ``rating`` (the mean 1-10 grade over all judged turns, MT-Bench's overall
score) and ``score_turn1`` / ``score_turn2``; ``mode: pairwise`` compares the model (A) with
baseline answers (B) on every turn (both orders, a flip is a tie; on turn 2 each side's own
conversation is shown) and reports ``win_rate`` (ties half) and ``win_rate_turn1`` /
``win_rate_turn2``, ``position_consistency`` and a length-controlled win rate. Each score has a
bootstrap CI (the overall one resamples questions with both their turns). Rows keep every turn's
judgement (raw response, parsed grade or verdicts) under ``judgements`` and the model's answers
under ``answers``. See :mod:`tunelab.eval.judge` for prompts and parsing.

Scoring a predictions file (``tunelab eval --predictions``) needs each row's answers to every turn
as ``turns: [...]``; with only a ``completion`` use ``turns=1``.

The judge is a Generator, or a spec string: ``http(s)://host:port[/v1]#model`` for an
OpenAI-compatible server, else a model name/dir or run folder loaded locally. Without the option
the ``TUNELAB_JUDGE`` environment variable is used.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import PurePosixPath
from typing import Any

from tunelab.data.formats import DataError
from tunelab.data.sources import load_mt_bench, resolve_data_path
from tunelab.eval.judge import Judge, agreement_score, circularity_warning, combine_judges, summarize_turns
from tunelab.eval.judge_bias import position_bias
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask
from tunelab.generate.base import Generator, Prompt
from tunelab.generate.build import build_generator
from tunelab.io import read_jsonl

log = logging.getLogger(__name__)

JUDGE_ENV = "TUNELAB_JUDGE"
REFERENCE_NAMES = ("reference_answer_gpt-4.jsonl", "reference_answer/gpt-4.jsonl")


def judge_from_spec(spec: str | Generator) -> Generator:
    """A judge Generator from a spec (``http://host:port/v1#model``, a local model or run), or as is."""
    return build_generator(spec, progress=False)


def judge_name(spec: str | Generator) -> str:
    """A name for family detection: the spec string, or the generator's ``model`` / fingerprint."""
    return spec if isinstance(spec, str) else str(getattr(spec, "model", spec.fingerprint))


def _answer_text(row: dict[str, Any]) -> list[str]:
    """Answer turns from a FastChat answer row (``choices[0].turns``) or a flat one (``answer``...)."""
    if row.get("choices"):
        return list(row["choices"][0]["turns"])
    for key in ("answer", "completion", "output"):
        if isinstance(row.get(key), str):
            return [row[key]]
        if isinstance(row.get(key), list):
            return list(row[key])
    raise DataError(f"answer row for question {row.get('question_id', row.get('id'))!r} has no answer text")


def load_answers(path: str) -> dict[str, list[str]]:
    """``{question id (str): answer turns}`` from a JSONL answer file."""
    rows = read_jsonl(resolve_data_path(path, None))
    return {str(r.get("question_id", r.get("id"))): _answer_text(r) for r in rows}


@EVAL_TASKS.register("judge")
class JudgeTask(EvalTask):
    """LLM-as-a-judge on MT-Bench questions, turn by turn: single 1-10 grading or pairwise vs a baseline.

    Options:
        mode: ``single`` or ``pairwise``.
        turns: Turns to answer and judge, 1 or 2 (default: every turn of each question, 2 on MT-Bench;
            pairwise: at most as many as the baseline answers).
        questions: Question file (relative to ``$TUNELAB_DATA_DIR``).
        references: Reference answers (default: found beside the questions if present).
        judge: Judge Generator or spec (default: ``$TUNELAB_JUDGE``).
        judge2: An optional second judge (ratings averaged, agreement reported).
        baseline: Pairwise B answers: an answer JSONL path, or ``reference`` for the reference answers.
        data_generator: Model that generated the training data (circularity check).
        categories: Only these categories.
        max_judge_tokens: Judge response budget.
    """

    max_new_tokens = 1024

    def __init__(
        self,
        mode: str = "single",
        questions: str = "mt_bench/question.jsonl",
        references: str | None = None,
        judge: str | Generator | None = None,
        judge2: str | Generator | None = None,
        baseline: str | None = None,
        data_generator: str | None = None,
        categories: list[str] | None = None,
        max_judge_tokens: int = 512,
        turns: int | None = None,
    ) -> None:
        if mode not in ("single", "pairwise"):
            raise ValueError(f"judge mode must be 'single' or 'pairwise', got {mode!r}")
        if turns not in (None, 1, 2):
            raise ValueError(f"judge turns must be 1 or 2, got {turns!r}")
        if mode == "pairwise" and not baseline:
            raise ValueError("pairwise judging needs a baseline (answers file, or 'reference')")
        self.mode, self.questions, self.references = mode, questions, references
        self.baseline, self.categories, self.max_judge_tokens = baseline, categories, max_judge_tokens
        self.turns = turns
        self.primary = "rating" if mode == "single" else "win_rate"
        self.judge_specs = [s for s in (judge or os.environ.get(JUDGE_ENV), judge2) if s]
        self._judges: list[Judge] | None = None
        self.warnings = [
            w for s in self.judge_specs if (w := circularity_warning(judge_name(s), data_generator))
        ]
        for w in self.warnings:
            print(f"[tunelab] warning: {w}", file=sys.stderr)

    def judges(self) -> list[Judge]:
        """The judge(s), built on first use."""
        if self._judges is None:
            if not self.judge_specs:
                raise ValueError(
                    f"task 'judge' needs a judge: pass judge=... or set ${JUDGE_ENV} "
                    "(e.g. http://127.0.0.1:8000/v1#model, or a model name)"
                )
            self._judges = [Judge(judge_from_spec(s), self.max_judge_tokens) for s in self.judge_specs]
        return self._judges

    def _reference_map(self) -> dict[str, list[str]]:
        candidates = (
            [self.references]
            if self.references
            else [str(PurePosixPath(self.questions).parent / name) for name in REFERENCE_NAMES]
        )
        for path in candidates:
            try:
                return load_answers(path)
            except DataError:
                if self.references:
                    raise
        return {}

    def load_questions(self) -> list[dict[str, Any]]:
        """Questions with ``reference`` filled from the reference file when the row has none."""
        refs = self._reference_map()
        qs = [
            {**q, "reference": q.get("reference") or refs.get(q["id"])} for q in load_mt_bench(self.questions)
        ]
        return [q for q in qs if not self.categories or q["category"] in self.categories]

    def _baseline_map(self, questions: list[dict[str, Any]]) -> dict[str, list[str]]:
        if self.baseline == "reference":
            return {q["id"]: q["reference"] for q in questions if q.get("reference")}
        return load_answers(self.baseline) if self.baseline else {}

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        """One item per question; ``meta["turns"]``: how many turns it is answered and judged on."""
        questions = self.load_questions()
        base = self._baseline_map(questions)
        if self.mode == "pairwise":
            questions = [q for q in questions if q["id"] in base]
        questions = questions[: limit if limit else None]
        items = []
        for q in questions:
            n = min(self.turns or len(q["turns"]), len(q["turns"]))
            if self.mode == "pairwise":
                n = min(n, len(base[q["id"]]))
            meta = {"question": q, "baseline": base.get(q["id"]), "turns": n}
            items.append(EvalItem(q["id"], [{"role": "user", "content": q["turns"][0]}], meta))
        return items

    def follow_up(self, item: EvalItem, answers: list[str]) -> Prompt | None:
        """The next turn's conversation (the model's own earlier answers in it), or None when done."""
        done = len(answers)
        if done >= item.meta["turns"]:
            return None
        turns = item.meta["question"]["turns"]
        messages = []
        for user, answer in zip(turns[:done], answers):
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        return messages + [{"role": "user", "content": turns[done]}]

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        return self.score_batch([item], [completions])[0]

    def _judge_turn(self, items: list[EvalItem], answers: list[list[str]], turn: int) -> list[dict[str, Any]]:
        """Every judge's verdict on ``turn`` (0-based) of each item, merged when there are two judges."""
        questions = [it.meta["question"] for it in items]
        per_judge = []
        for judge in self.judges():
            if self.mode == "single":
                per_judge.append(judge.single(questions, answers, turn))
            else:
                baselines = [it.meta["baseline"] for it in items]
                per_judge.append(judge.pairwise(questions, answers, baselines, turn))
        records = per_judge[0]
        if len(per_judge) > 1:
            records, _ = combine_judges(per_judge[0], per_judge[1], self.mode)
        return [{k: v for k, v in r.items() if k not in ("id", "category")} for r in records]

    def score_batch(
        self, items: list[EvalItem], completions: list[list[str]], answers: list[list[str]] | None = None
    ) -> list[dict[str, Any]]:
        """Judge every turn of every item (each judge sees all items of a turn in one batch).

        Args:
            items: The items.
            completions: Samples per item; without ``answers`` the first is the turn-1 answer.
            answers: The model's answer to each turn per item (from the harness's follow-ups).

        Raises:
            DataError: An item has fewer answers than turns to judge.
        """
        answers = answers if answers is not None else [[c[0]] for c in completions]
        for it, a in zip(items, answers):
            if len(a) < it.meta["turns"]:
                raise DataError(
                    f"judge: question {it.id} has {len(a)} answer(s) for {it.meta['turns']} turns; give the "
                    "answer to every turn (a predictions row's 'turns' list) or set turns=1"
                )
        judgements: list[list[dict[str, Any]]] = [[] for _ in items]
        for turn in range(max((it.meta["turns"] for it in items), default=0)):
            idx = [i for i, it in enumerate(items) if it.meta["turns"] > turn]
            records = self._judge_turn([items[i] for i in idx], [answers[i] for i in idx], turn)
            for i, rec in zip(idx, records):
                judgements[i].append(rec)
        return [self._row(it, js) for it, js in zip(items, judgements)]

    def _row(self, item: EvalItem, judgements: list[dict[str, Any]]) -> dict[str, Any]:
        """Per-question summary (``rating``: mean parsed grade over its turns) + every turn's judgement."""
        row: dict[str, Any] = {
            "category": item.meta["question"].get("category", ""),
            "turns": len(judgements),
        }
        if self.mode == "single":
            ratings = [j["rating"] for j in judgements if j["rating"] is not None]
            row["rating"] = sum(ratings) / len(ratings) if ratings else None
            row.update({f"rating_turn{j['turn']}": j["rating"] for j in judgements})
        else:
            row.update({f"winner_turn{j['turn']}": j["winner"] for j in judgements})
        failed = [
            j["rating"] is None if self.mode == "single" else j["winner"] == "error" for j in judgements
        ]
        row["parse_failures"] = sum(failed)
        row["judgements"] = judgements
        return row

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        judgements = [r["judgements"] for r in rows]
        out = summarize_turns(judgements, self.mode)
        flat = [j for js in judgements for j in js]
        if self.mode == "pairwise":  # the judge's position bias beside its verdicts
            bias = position_bias(flat)
            out["flip_rate"], out["first_shown"] = bias["flip_rate"], bias["first_shown"]
        if any("judges_agree" in j for j in flat):
            out.update(agreement_score(flat))
        return out
