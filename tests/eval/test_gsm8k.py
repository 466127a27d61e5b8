"""GSM8K task: answer extraction, numeric normalisation, prompts, scoring and maj@k."""

from __future__ import annotations

import json
import os
import random
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
    assert [it.prompt for it in fitems] == [it.prompt for it in few.items(2, seed=99)]  # not seed-dependent
    cfg = few.generation_config(None)
    assert cfg.stop == ["Question:", "</s>", "<|im_end|>", "\n\n\n"] and cfg.max_new_tokens == 512
    assert task.generation_config(None).stop == []


def _read(path: Path) -> list[dict]:
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def test_fewshot_prompts_are_lm_eval_s(data_dir: Path) -> None:
    """lm-eval 0.4.x: one Random(1234) draws 5 fresh train examples per test item, in item order."""
    train, test = _read(data_dir / "gsm8k" / "train.jsonl"), _read(data_dir / "gsm8k" / "test.jsonl")
    rnd = random.Random(1234)
    expected = []
    for row in test[:3]:
        shots = rnd.sample(train, 5)
        block = "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in shots)
        expected.append(f"{block}Question: {row['question']}\nAnswer:")
    task = GSM8K(fewshot=5)
    prompts = [it.prompt for it in task.items(3, seed=0)]
    assert prompts == expected
    assert len({p.split("Question:")[1] for p in prompts}) == 3  # fresh shots per item, not one fixed set
    # item i's prompt depends on the draws for items 0..i only, never on --limit
    assert [it.prompt for it in task.items(50, seed=0)][:3] == prompts
    assert task.items(None, seed=0)[2].prompt == prompts[2]


def test_fewshot_prompts_match_lm_eval_itself(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The real lm-eval (when installed) builds the same contexts for the first items, offline."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager, get_task_dict

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    peer = data_dir.parent / "peers" / "lm-eval" / "gsm8k_local.yaml.in"  # shared/peers beside shared/data
    if not peer.is_file():
        pytest.skip(f"lm-eval task definition not found: {peer}")
    (tmp_path / "gsm8k_local.yaml").write_text(peer.read_text().replace("DATA_DIR", str(data_dir / "gsm8k")))
    lm_task = get_task_dict(["gsm8k_local"], TaskManager(include_path=str(tmp_path)))["gsm8k_local"]
    lm_task.set_fewshot_seed(1234)
    lm_task.build_all_requests(limit=8, rank=0, world_size=1)
    contexts = {inst.doc_id: inst.args[0] for inst in lm_task.instances}
    assert [contexts[i] for i in range(8)] == [it.prompt for it in GSM8K(fewshot=5).items(8, seed=0)]
    assert lm_task.config.generation_kwargs["until"] == GSM8K(fewshot=5).stop[:3]


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
