"""Evaluation tasks: a small interface, one file per task, a registry.

A task lists items (stable ids), scores completions per item, and aggregates per-item rows
into scores with confidence intervals. Built-in task families are tasks too: ``arith``
evaluates the family's test split, ``arith_ood`` its out-of-distribution split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tunelab.data.tasks.base import TASK_FAMILIES, TaskFamily
from tunelab.eval.stats import proportion_score
from tunelab.generate.base import GenerationConfig, Prompt
from tunelab.registry import Registry


@dataclass
class EvalItem:
    id: str
    prompt: Prompt
    meta: dict[str, Any] = field(default_factory=dict)


class EvalTask:
    """Base: generation tasks scored per item; ``correct`` rows aggregate to ``accuracy``."""

    name: ClassVar[str] = ""
    primary: ClassVar[str] = "accuracy"
    max_new_tokens: ClassVar[int] = 256
    stop: ClassVar[list[str]] = []

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        raise NotImplementedError

    def generation_config(self, max_new_tokens: int | None = None, **kw: Any) -> GenerationConfig:
        budget = min(max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        return GenerationConfig(max_new_tokens=budget, stop=list(self.stop), **kw)

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        raise NotImplementedError

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        return {"accuracy": proportion_score([r["correct"] for r in rows])}


class FamilyTask(EvalTask):
    """A built-in task family's test (or ood) split with its exact verifier."""

    max_new_tokens = 128

    def __init__(self, family: TaskFamily, split: str) -> None:
        self.family, self.split = family, split
        self.name = family.name + ("_ood" if split == "ood" else "")

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        samples = self.family.samples(self.split, limit or 200, seed)
        return [EvalItem(s.meta["id"], s.prompt_messages(), s.meta) for s in samples]

    def score(self, item: EvalItem, completions: list[str]) -> dict[str, Any]:
        verdicts = [self.family.verify(item.meta, c) for c in completions]
        first = verdicts[0]
        row = {"correct": int(first["correct"]), "extracted": first.get("extracted")}
        if len(verdicts) > 1:
            row["correct_any"] = int(any(v["correct"] for v in verdicts))
            row["n_correct"] = sum(int(v["correct"]) for v in verdicts)
        return row


EVAL_TASKS: Registry[Callable[..., EvalTask]] = Registry("eval task")


def get_task(name: str, **options: Any) -> EvalTask:
    """An eval task by name: registered tasks, then ``<family>`` and ``<family>_ood``."""
    if name in EVAL_TASKS:
        return EVAL_TASKS.get(name)(**options)
    base, ood = (name[:-4], True) if name.endswith("_ood") else (name, False)
    if base in TASK_FAMILIES:
        return FamilyTask(TASK_FAMILIES.get(base)(**options), "ood" if ood else "test")
    raise KeyError(f"unknown eval task {name!r}; valid choices: {', '.join(task_names())}")


def task_names() -> list[str]:
    fams = [n for f in TASK_FAMILIES.names() for n in (f, f + "_ood")]
    return sorted(set(EVAL_TASKS.names()) | set(fams))
