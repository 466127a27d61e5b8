"""Multiple choice by log-likelihood: pick the answer the model finds most probable.

For each item and each choice the score is the summed log-probability of the choice's tokens
given the chat prompt (rendered with the generation prompt), as in lm-eval's ``acc``; ``acc_norm``
divides by the choice's length in characters. No text is generated, so these tasks need a model
behind a :class:`LoglikScorer`, not a Generator; their ``kind`` is ``"loglik"`` and
:func:`evaluate_loglik` runs them (the harness's ``evaluate`` is for generation tasks).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tunelab.data.tasks.base import TASK_FAMILIES
from tunelab.eval.stats import proportion_score
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask

CLASSIFICATION_SUBTASKS = ("sentiment", "topic", "yesno")


@EVAL_TASKS.register("nlp_mc")
class NlpMultipleChoice(EvalTask):
    """The ``nlp`` family's classification items (sentiment, topic, yes/no) as log-likelihood multiple choice.

    Options:
        split: ``test`` (default) or ``ood``.
    """

    kind: ClassVar[str] = "loglik"

    def __init__(self, split: str = "test") -> None:
        self.split = split
        self.family = TASK_FAMILIES.get("nlp")(subtasks=list(CLASSIFICATION_SUBTASKS))

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        samples = self.family.samples(self.split, limit or 200, seed)
        return [EvalItem(s.meta["id"], s.prompt_messages(), s.meta) for s in samples if s.meta.get("choices")]

    def score_choices(self, item: EvalItem, logliks: list[float]) -> dict[str, Any]:
        """Per-item row from the log-likelihood of each choice."""
        choices = list(item.meta["choices"])
        best = max(range(len(choices)), key=lambda j: logliks[j])
        best_norm = max(range(len(choices)), key=lambda j: logliks[j] / max(1, len(choices[j])))
        answer = item.meta["answer"]
        return {
            "answer": answer,
            "choices": choices,
            "logliks": [round(v, 4) for v in logliks],
            "pred": choices[best],
            "correct": int(choices[best] == answer),
            "correct_norm": int(choices[best_norm] == answer),
        }

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        return {
            "accuracy": proportion_score([r["correct"] for r in rows]),
            "accuracy_norm": proportion_score([r["correct_norm"] for r in rows]),
        }


@EVAL_TASKS.register("nlp_mc_ood")
class NlpMultipleChoiceOOD(NlpMultipleChoice):
    """``nlp_mc`` on the ``ood`` split (other phrasings, label words, unseen topics, longer passages), so a
    recipe can score in and out of distribution side by side."""

    def __init__(self, split: str = "ood") -> None:
        super().__init__(split)
