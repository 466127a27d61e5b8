"""``judge`` task: the model answers MT-Bench-style questions and an LLM judge grades the answers.

The model answers the first turn of each question (the harness sends one prompt per item).
``mode: single`` reports the mean 1-10 ``rating``; ``mode: pairwise`` compares the model (A) with
baseline answers (B) in both orders and reports ``win_rate`` (ties half), ``position_consistency``
and a length-controlled win rate. See :mod:`tunelab.eval.judge` for prompts and parsing.

The judge is a Generator, or a spec string: ``http(s)://host:port[/v1]#model`` for an
OpenAI-compatible server, else a model name/dir or run folder loaded locally. Without the option
the ``TUNELAB_JUDGE`` environment variable is used.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import PurePosixPath
from typing import Any

from tunelab.data.formats import DataError
from tunelab.data.sources import load_mt_bench, resolve_data_path
from tunelab.eval.judge import (
    Judge,
    agreement_score,
    circularity_warning,
    combine_judges,
    summarize_pairwise,
    summarize_single,
)
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask
from tunelab.generate.base import Generator

log = logging.getLogger(__name__)

JUDGE_ENV = "TUNELAB_JUDGE"
REFERENCE_NAMES = ("reference_answer_gpt-4.jsonl", "reference_answer/gpt-4.jsonl")


def judge_from_spec(spec: str | Generator) -> Generator:
    """A judge Generator from a spec: ``http://host:port/v1#model`` or a local model/run."""
    if not isinstance(spec, str):
        return spec
    if spec.startswith(("http://", "https://")):
        from tunelab.generate.openai_compat import OpenAIGenerator

        url, _, model = spec.partition("#")
        return OpenAIGenerator(url, model or "default")
    from tunelab.generate.hf import HFGenerator
    from tunelab.runner.artifacts import load_for_inference

    model, tok, _ = load_for_inference(spec)
    return HFGenerator(model, tok, progress=False)


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
    resolved = resolve_data_path(path, None)
    with resolved.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {str(r.get("question_id", r.get("id"))): _answer_text(r) for r in rows}


@EVAL_TASKS.register("judge")
class JudgeTask(EvalTask):
    """LLM-as-a-judge on MT-Bench questions (first turn): single 1-10 grading or pairwise vs a baseline.

    Options:
        mode: ``single`` or ``pairwise``.
        questions: Question file (relative to ``$TUNELAB_DATA_DIR``).
        references: Reference answers (default: found beside the questions if present).
        judge: Judge Generator or spec (default: ``$TUNELAB_JUDGE``).
        judge2: An optional second judge (ratings averaged, agreement reported).
        baseline: Pairwise B answers: an answer JSONL path, or ``reference`` for the reference answers.
        data_generator: Model that generated the training data (circularity check).
        categories: Only these categories.
        max_judge_tokens: Judge response budget.
    """

    name = "judge"
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
    ) -> None:
        if mode not in ("single", "pairwise"):
            raise ValueError(f"judge mode must be 'single' or 'pairwise', got {mode!r}")
        if mode == "pairwise" and not baseline:
            raise ValueError("pairwise judging needs a baseline (answers file, or 'reference')")
        self.mode, self.questions, self.references = mode, questions, references
        self.baseline, self.categories, self.max_judge_tokens = baseline, categories, max_judge_tokens
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
        questions = self.load_questions()
        base = self._baseline_map(questions)
        if self.mode == "pairwise":
            questions = [q for q in questions if q["id"] in base]
        questions = questions[: limit if limit else None]
        return [
            EvalItem(
                q["id"],
                [{"role": "user", "content": q["turns"][0]}],
                {"question": q, "baseline": base.get(q["id"])},
            )
            for q in questions
        ]

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        return self.score_batch([item], [completions])[0]

    def score_batch(self, items: list[EvalItem], completions: list[list[str]]) -> list[dict[str, Any]]:
        """Judge the first completion of every item (each judge sees all items in one batch)."""
        questions = [it.meta["question"] for it in items]
        answers = [[c[0]] for c in completions]
        per_judge = []
        for judge in self.judges():
            if self.mode == "single":
                per_judge.append(judge.single(questions, answers))
            else:
                per_judge.append(judge.pairwise(questions, answers, [it.meta["baseline"] for it in items]))
        records = per_judge[0]
        if len(per_judge) > 1:
            records, _ = combine_judges(per_judge[0], per_judge[1], self.mode)
        return [{k: v for k, v in r.items() if k != "id"} for r in records]

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        out = summarize_single(rows) if self.mode == "single" else summarize_pairwise(rows)
        if any("judges_agree" in r for r in rows):
            out.update(agreement_score(rows))
        return out
