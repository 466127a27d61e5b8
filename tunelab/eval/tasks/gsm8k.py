"""GSM8K (Cobbe et al., 2021, arXiv 2110.14168): grade-school math word problems.

Two prompt styles:

* zero-shot chat (default): the question plus an instruction to end with ``#### N``;
* ``fewshot=k``: plain text for base models, identical to lm-evaluation-harness 0.4.x's ``gsm8k``
  prompts: ``k`` worked solutions from the train split as ``Question: ...\\nAnswer: ...`` blocks
  (each followed by a blank line), then ``Question: <test question>\\nAnswer:``. As in lm-eval's
  default sampler, one ``random.Random(1234)`` draws ``k`` fresh train examples
  (``rnd.sample(train, k)``) for each test item in turn, in file order; item ``i``'s prompt depends
  only on items ``0..i``, so ``--limit N`` gives the same first ``N`` prompts as lm-eval's
  ``--limit N``. Generation stops at lm-eval's ``until`` strings (``Question:``, ``</s>``,
  ``<|im_end|>``) and also at ``"\\n\\n\\n"``.

Scoring follows lm-eval's two filters, then compares numerically (lm-eval compares strings):

* strict: the number after ``####`` (the first such marker);
* flexible: the last number anywhere in the completion.

Numbers are normalised before comparison: thousands commas, ``$``, trailing ``.0``/``.00`` and
simple fractions (``3/4``) are handled, so ``$1,200.00`` equals ``1200``. Per-item rows keep the raw
extracted strings (before normalisation) for side-by-side agreement checks with lm-eval.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction
from typing import Any

from tunelab.data.sources import resolve_data_path
from tunelab.eval.stats import proportion_score
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask
from tunelab.io import read_jsonl

INSTRUCTION = (
    "Solve the problem step by step. At the end, write the final answer on its own line "
    "in the form '#### N', where N is just the number."
)
FEWSHOT_STOP = ["Question:", "</s>", "<|im_end|>", "\n\n\n"]  # lm-eval's ``until`` + a blank-lines stop
FEWSHOT_SEED = 1234  # lm-eval's default ``fewshot_random_seed``

_NUM = r"-?\$?\s?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s?/\s?\d+)?"
_STRICT_RE = re.compile(r"####\s*(" + _NUM + ")")
_NUMBER_RE = re.compile(_NUM)


def extract_strict(text: str) -> str | None:
    """The raw number after the first ``####`` marker, or None."""
    m = _STRICT_RE.search(text)
    return m.group(1).strip() if m else None


def extract_flexible(text: str) -> str | None:
    """The raw last number in ``text`` (commas, ``$``, decimals, fractions allowed), or None."""
    found = [m.group(0).strip() for m in _NUMBER_RE.finditer(text)]
    found = [f for f in found if any(ch.isdigit() for ch in f)]
    return found[-1] if found else None


def parse_number(raw: str | None) -> Fraction | None:
    """Exact value of a raw number string, or None if it is not a number.

    Handles ``$``, thousands commas, spaces, a trailing period, decimals and ``a/b`` fractions.
    """
    if raw is None:
        return None
    s = raw.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def normalize_number(raw: str | None) -> str | None:
    """Canonical string of a number: ``"$1,200.00"`` -> ``"1200"``, ``"3/4"`` -> ``"3/4"``, ``"0.50"`` -> ``"1/2"``."""
    value = parse_number(raw)
    if value is None:
        return None
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


def gold_answer(solution: str) -> str:
    """The normalised final answer of a GSM8K worked solution (after ``#### ``)."""
    raw = solution.split("####")[-1].strip()
    norm = normalize_number(raw)
    if norm is None:
        raise ValueError(f"GSM8K solution without a numeric final answer: {raw!r}")
    return norm


def majority(values: list[str | None]) -> str | None:
    """Most common non-None value (ties: the one seen first), or None."""
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(v for v in values if v is not None and counts[v] == best)


@EVAL_TASKS.register("gsm8k")
class GSM8K(EvalTask):
    """GSM8K test split: strict and flexible exact match (numeric), maj@k with several samples.

    Options:
        fewshot: Train examples per item in lm-eval's plain-text prompts, drawn afresh for each item
            as lm-eval does (0 = zero-shot chat).
        path: Test file (relative to ``$TUNELAB_DATA_DIR``).
        train_path: Train file for few-shot examples.
    """

    primary = "exact_match_flexible"
    max_new_tokens = 512

    def __init__(
        self, fewshot: int = 0, path: str = "gsm8k/test.jsonl", train_path: str = "gsm8k/train.jsonl"
    ) -> None:
        self.fewshot, self.path, self.train_path = int(fewshot), path, train_path
        self.stop = list(FEWSHOT_STOP) if self.fewshot else []
        self._rows: list[dict[str, Any]] | None = None

    def rows(self) -> list[dict[str, Any]]:
        """The raw test rows (``question``, ``answer``), loaded once."""
        if self._rows is None:
            self._rows = read_jsonl(resolve_data_path(self.path, None))
        return self._rows

    def fewshot_contexts(self, n: int) -> list[str]:
        """lm-eval's few-shot blocks for the first ``n`` test items (``k`` fresh draws per item, in order)."""
        train = read_jsonl(resolve_data_path(self.train_path, None))
        rnd = random.Random(FEWSHOT_SEED)
        return [
            "".join(
                f"Question: {r['question']}\nAnswer: {r['answer']}\n\n"
                for r in rnd.sample(train, self.fewshot)
            )
            for _ in range(n)
        ]

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        """The first ``limit`` test items (file order, like lm-eval's ``--limit``); id = 0-based index.

        Few-shot prompts do not depend on ``seed`` (lm-eval's sampler seed is fixed at 1234).
        """
        rows = self.rows()[: limit if limit else None]
        shots = self.fewshot_contexts(len(rows)) if self.fewshot else [""] * len(rows)
        items = []
        for i, (r, block) in enumerate(zip(rows, shots)):
            q = r["question"]
            prompt: Any = (
                f"{block}Question: {q}\nAnswer:"
                if self.fewshot
                else [{"role": "user", "content": f"{q}\n\n{INSTRUCTION}"}]
            )
            items.append(EvalItem(str(i), prompt, {"question": q, "answer": gold_answer(r["answer"])}))
        return items

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        gold = item.meta["answer"]
        first = completions[0]
        raw_strict, raw_flex = extract_strict(first), extract_flexible(first)
        pred_strict, pred_flex = normalize_number(raw_strict), normalize_number(raw_flex)
        row: dict[str, Any] = {
            "answer": gold,
            "extracted_strict": raw_strict, "extracted_flexible": raw_flex,
            "pred_strict": pred_strict, "pred_flexible": pred_flex,
            "correct_strict": int(pred_strict == gold), "correct": int(pred_flex == gold),
            "strict_failed": int(raw_strict is None),
        }  # fmt: skip
        if len(completions) > 1:
            preds = [normalize_number(extract_flexible(c)) for c in completions]
            vote = majority(preds)
            row.update(
                pred_maj=vote,
                correct_maj=int(vote == gold),
                n_correct=sum(p == gold for p in preds),
                samples=len(completions),
            )
        return row

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        """Strict/flexible exact match, strict-format failure rate, and ``maj@k`` with k samples.

        ``extraction_failure_rate`` is the fraction of items whose first completion has no
        ``#### N`` answer (the strict format); flexible extraction fails only without any number.
        """
        out = {
            "exact_match_flexible": proportion_score([r["correct"] for r in rows]),
            "exact_match_strict": proportion_score([r["correct_strict"] for r in rows]),
            "extraction_failure_rate": proportion_score([r["strict_failed"] for r in rows]),
        }
        if rows and all("correct_maj" in r for r in rows):
            k = min(r["samples"] for r in rows)
            out[f"maj@{k}"] = proportion_score([r["correct_maj"] for r in rows])
        return out
