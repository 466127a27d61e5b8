"""GSM8K task: answer extraction, numeric normalisation, prompts, scoring and maj@k."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunelab.eval.harness import evaluate
from tunelab.eval.tasks.base import EvalItem, get_task
from tunelab.eval.tasks.gsm8k import (
    GSM8K,
    extract_flexible,
    extract_strict,
    gold_answer,
    majority,
    normalize_number,
)
from tunelab.generate.base import GenerationConfig

DATA = Path(os.environ.get("TUNELAB_DATA_DIR", "/work/shared/data"))


@pytest.mark.parametrize("text, strict, flexible", [
    ("so 9 * 2 = 18\n#### 18", "18", "18"),
    ("#### $1,200.00", "$1,200.00", "$1,200.00"),
    ("The answer is 42.", None, "42"),
    ("#### 7 and then 9", "7", "9"),
    ("first 3, then -4", None, "-4"),
    ("It is 3/4 of the cake", None, "3/4"),
    ("costs .5 dollars", None, ".5"),
    ("no digits here", None, None),
    ("####18", "18", "18"),
])  # fmt: skip
def test_extraction_raw_strings(text: str, strict: str | None, flexible: str | None) -> None:
    assert extract_strict(text) == strict
    assert extract_flexible(text) == flexible


@pytest.mark.parametrize("raw, norm", [
    ("18", "18"), ("18.0", "18"), ("18.00", "18"), ("$18", "18"), ("1,200", "1200"), ("$1,200.50", "2401/2"),
    ("-5", "-5"), ("3/4", "3/4"), ("0.75", "3/4"), ("6/2", "3"), ("18.", "18"), ("abc", None), (None, None),
])  # fmt: skip
def test_normalize_number(raw: str | None, norm: str | None) -> None:
    assert normalize_number(raw) == norm


def test_gold_answer_and_majority() -> None:
    assert gold_answer("blah <<2*3=6>>6\n#### 2,125") == "2125"
    with pytest.raises(ValueError):
        gold_answer("#### many")
    assert majority(["3", None, "4", "4", "3"]) == "3"  # tie: first seen wins
    assert majority([None, None]) is None


def test_score_keeps_raw_strings_and_counts_failures() -> None:
    task = GSM8K()
    item = EvalItem("0", [], {"answer": "18"})
    row = task.score(item, ["She makes $18.00 a day."])
    assert row["extracted_flexible"] == "$18.00" and row["pred_flexible"] == "18"
    assert row["correct"] == 1 and row["correct_strict"] == 0 and row["strict_failed"] == 1
    row = task.score(item, ["#### 18"])
    assert row["correct"] == row["correct_strict"] == 1 and row["strict_failed"] == 0


def test_maj_at_k() -> None:
    task = GSM8K()
    item = EvalItem("0", [], {"answer": "18"})
    rows = [
        {"id": "0", **task.score(item, ["#### 17", "= 18", "18", "x"])},
        {"id": "1", **task.score(item, ["#### 5", "5", "18", "2"])},
    ]
    assert rows[0]["correct_maj"] == 1 and rows[0]["correct"] == 0 and rows[0]["n_correct"] == 2
    assert rows[1]["correct_maj"] == 0
    scores = task.aggregate(rows)
    assert scores["maj@4"]["value"] == 0.5
    assert set(scores) == {"exact_match_flexible", "exact_match_strict", "extraction_failure_rate", "maj@4"}


def test_items_zero_shot_and_fewshot(data_dir: Path) -> None:
    task = get_task("gsm8k")
    items = task.items(None, seed=0)
    assert len(items) == 1319 and items[0].id == "0" and items[5].id == "5"
    assert isinstance(items[0].prompt, list) and "####" in items[0].prompt[0]["content"]
    assert items[0].meta["answer"] == "18"
    few = GSM8K(fewshot=3)
    fitems = few.items(2, seed=0)
    prompt = fitems[0].prompt
    assert isinstance(prompt, str) and prompt.count("Question:") == 4 and prompt.endswith("Answer:")
    assert prompt == few.items(2, seed=99)[0].prompt  # shots are fixed, not seed-dependent
    cfg = few.generation_config(None)
    assert "Question:" in cfg.stop and cfg.max_new_tokens == 512
    assert task.generation_config(None).stop == []


class _AnswerHalf:
    """A fake generator: the right answer (strict format) for even ids, a wrong one otherwise."""

    fingerprint = "fake"

    def __init__(self, items: list[EvalItem]) -> None:
        self.answers = {id(it.prompt): (int(it.id), it.meta["answer"]) for it in items}

    def generate(self, prompts: list, cfg: GenerationConfig) -> list[list[str]]:
        out = []
        for p in prompts:
            i, ans = self.answers[id(p)]
            out.append([f"Work...\n#### {ans}" if i % 2 == 0 else "I think 0.5"] * cfg.n)
        return out


def test_evaluate_through_harness(data_dir: Path, tmp_path: Path) -> None:
    task = get_task("gsm8k")
    items = task.items(10, 0)
    task.items = lambda limit, seed: items  # same prompt objects for the fake
    res = evaluate(task, _AnswerHalf(items), limit=10, out=tmp_path / "gsm8k.jsonl")
    assert res.scores["exact_match_flexible"]["value"] == 0.5
    assert res.scores["exact_match_strict"]["value"] == 0.5
    assert res.scores["extraction_failure_rate"]["value"] == 0.5
    assert res.rows[1]["extracted_flexible"] == "0.5" and res.rows[1]["id"] == "1"
    assert (tmp_path / "gsm8k.jsonl").read_text().count("\n") == 10
