"""Question-answering agents, offline: StrategyQA-style yes/no (``yesno_qa``) and HotpotQA-style
short answers scored by token F1 (``f1_qa``).

The papers' agents (ReAct, NAT, FireAct) search Wikipedia or Google. No search engine is reachable
here, so these environments give the agent the question (and the row's ``context`` where the data
has one) and verify only its final ``finish[answer]``. ``search[...]`` and ``lookup[...]`` are
understood but answer that search is unavailable offline, so a trained agent that searches is not
counted as malformed. The first user turn is :func:`tunelab.data.agent_formats.qa_prompt`, the same as the
NAT and FireAct trajectories loaded as data, so a model trained on them is asked as it was trained.

F1 and exact match follow the SQuAD v1.1 evaluation script (lower-case, drop punctuation and the
articles a/an/the, collapse whitespace; F1 over bags of tokens), with the HotpotQA script's rule that
a yes / no / noanswer prediction scores 0 unless it equals the gold answer.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from tunelab.data.agent_formats import qa_prompt
from tunelab.data.sources import read_rows, resolve_data_path, row_where
from tunelab.envs.base import ENVS, Environment, EnvTask
from tunelab.io import DataError

OFFLINE = "Search is not available offline. Answer from what you know with finish[answer]."
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 between the normalised answers (SQuAD v1.1); a yes / no / noanswer prediction or gold
    answer that differs from the other scores 0 (HotpotQA)."""
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in ("yes", "no", "noanswer") or ref in ("yes", "no", "noanswer")) and pred != ref:
        return 0.0
    common = Counter(pred.split()) & Counter(ref.split())
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred.split()), same / len(ref.split())
    return 2 * precision * recall / (precision + recall)


def parse_yes_no(answer: str | bool | None) -> bool | None:
    """True for an exact "yes" / "true", False for "no" / "false" (any case, punctuation and spacing
    around ignored), None for anything else (an answer that is not yes or no)."""
    if isinstance(answer, bool) or answer is None:
        return answer
    word = normalize_answer(str(answer))
    return True if word in ("yes", "true") else False if word in ("no", "false") else None


class _QA(Environment):
    """Shared: questions from a data file, an offline search tool, the QA prompt."""

    tools = ("search", "lookup")
    form: ClassVar[str] = "short"

    def tasks(self, limit: int | None, seed: int) -> list[EnvTask]:
        """The file's questions, shuffled by ``seed`` (at most ``limit``)."""
        path = resolve_data_path(self.params.path, None)
        out = []
        for n, row in read_rows(path):
            where = row_where(path, n)
            if isinstance(row, Exception):
                raise row
            if not isinstance(row.get("question"), str) or row.get("answer") is None:
                raise DataError(f"{where}: expected a 'question' (a string) and an 'answer'")
            meta = {"answer": row["answer"], **({"context": row["context"]} if row.get("context") else {})}
            out.append(EnvTask(f"{path.stem}/{row.get('id', n)}", row["question"], meta))
        random.Random(seed).shuffle(out)
        return out[:limit]

    def tool(self, name: str, argument: str) -> str:
        """No search engine offline: the observation says so."""
        return OFFLINE

    def prompt(self, task: EnvTask) -> str:
        """The QA prompt of the trajectory datasets, with the row's context first when it has one."""
        context = task.meta.get("context")
        text = qa_prompt(task.question, self.form)
        return f"Context: {_context_text(context)}\n\n{text}" if context else text


def _context_text(context: Any) -> str:
    """A context as text: a string as is; HotpotQA's ``[[title, [sentences]], ...]`` joined."""
    if isinstance(context, str):
        return context
    if isinstance(context, list):
        return " ".join(f"{c[0]}: {''.join(c[1])}" if isinstance(c, list) and len(c) == 2 else str(c)
                        for c in context)
    return str(context)


@ENVS.register("yesno_qa")
class YesNoQA(_QA):
    """StrategyQA-style yes/no questions, offline (no search); success = exactly Yes or No, matching the gold."""

    form = "yesno"

    @dataclass
    class Params:
        """Options: the questions file."""

        path: str = "nat_strategyqa/test_random_500.jsonl"
        """Questions with a boolean (or yes/no) ``answer`` (relative: against $TUNELAB_DATA_DIR)."""

    def verify(self, task: EnvTask, answer: str | None) -> dict[str, Any]:
        """Exact yes/no: the answer must be Yes or No (any case) and equal the gold one."""
        got, gold = parse_yes_no(answer), parse_yes_no(task.meta["answer"])
        if gold is None:
            raise DataError(f"task {task.id}: the gold answer {task.meta['answer']!r} is not yes or no")
        ok = got is not None and got == gold
        return {"success": ok, "score": float(ok), "answer": answer, "gold": "Yes" if gold else "No"}


@ENVS.register("f1_qa")
class F1QA(_QA):
    """HotpotQA-style short answers, offline (no search); success = exact match, score = token F1."""

    metrics = ("em", "f1")

    @dataclass
    class Params:
        """Options: the questions file."""

        path: str = "nat_hotpotqa/dev_random_500.json"
        """Questions with a short text ``answer`` (relative: against $TUNELAB_DATA_DIR)."""

    def verify(self, task: EnvTask, answer: str | None) -> dict[str, Any]:
        """SQuAD exact match (success) and token F1 (score, NAT's graded classes read it)."""
        gold = str(task.meta["answer"])
        em, f1 = (exact_match(answer, gold), f1_score(answer, gold)) if answer is not None else (0.0, 0.0)
        return {"success": em == 1.0, "score": f1, "em": em, "f1": f1, "answer": answer, "gold": gold}
