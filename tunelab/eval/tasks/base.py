"""Evaluation tasks: a small interface, one file per task, a registry.

A task lists items (stable ids), scores completions per item, and aggregates per-item rows
into scores with confidence intervals. Built-in task families are tasks too: ``arith``
evaluates the family's test split, ``arith_ood`` its out-of-distribution split.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

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

    def contamination_texts(self, item: EvalItem) -> list[str]:
        """The texts of ``item`` that training data must not contain (decontamination).

        The item's own question (``meta["question"]`` where the task keeps it, else the user
        turns of its prompt, or a plain-string prompt) and a textual reference answer. Few-shot
        examples in a prompt are training items, not evaluation items, so tasks that keep the
        bare question in ``meta`` are checked against it alone.
        """
        question = item.meta.get("question")
        if isinstance(question, str):
            texts = [question]
        elif isinstance(item.prompt, str):
            texts = [item.prompt]
        else:
            texts = [str(m.get("content", "")) for m in item.prompt if m.get("role") == "user"]
        for key in ("answer", "reference", "canonical_solution"):
            if isinstance(item.meta.get(key), str):
                texts.append(item.meta[key])
        return [t for t in texts if t.strip()]


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


def with_signal(prompt: Any, signal: str) -> Any:
    """``prompt`` with ``signal`` appended to its first user turn (chat prompts; text prompts unchanged)."""
    if not signal or not isinstance(prompt, list):
        return prompt
    out = [dict(m) for m in prompt]
    first = next((k for k, m in enumerate(out) if m.get("role") == "user"), None)
    if first is not None:
        out[first]["content"] = f"{out[first]['content']} {signal}"
    return out


class Signalled:
    """A task whose prompts carry a conditioning signal (a NAT run's success signal); all else is the task's."""

    def __init__(self, task: EvalTask, signal: str) -> None:
        self.task, self.signal = task, signal

    def __getattr__(self, name: str) -> Any:
        return getattr(self.task, name)

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        """The task's items with the signal in their first user turn."""
        return [EvalItem(it.id, with_signal(it.prompt, self.signal), it.meta) for it in self.task.items(limit, seed)]


EVAL_TASKS: Registry[Callable[..., EvalTask]] = Registry(
    "eval task", package="tunelab.eval.tasks", entry_points="tunelab.eval_tasks"
)


class TaskOptionError(ValueError):
    """An option a task's constructor does not take; the message names the task and its options."""


def _factory(name: str) -> Callable[..., Any]:
    """The constructor behind a task name (a registered task, else the task family)."""
    if name in EVAL_TASKS:
        return EVAL_TASKS.get(name)
    base = name[:-4] if name.endswith("_ood") else name
    if base in TASK_FAMILIES:
        return TASK_FAMILIES.get(base)
    raise KeyError(f"unknown eval task {name!r}; valid choices: {', '.join(task_names())}")


def task_options(name: str) -> tuple[list[str], bool]:
    """(keyword arguments of task ``name``'s constructor, whether it also takes any ``**options``)."""
    factory = _factory(name)
    # a subclass that passes ``**kwargs`` up takes its base classes' options too
    inits = [c.__init__ for c in factory.__mro__ if "__init__" in vars(c)] if inspect.isclass(factory) else [factory]
    named: list[str] = []
    for init in inits:
        params = list(inspect.signature(init).parameters.values())
        named += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name != "self" and p.name not in named]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return named, False
        if init is object.__init__:
            break
    return named, True


def check_task_options(name: str, options: dict[str, Any]) -> None:
    """Raise :class:`TaskOptionError` for any option task ``name``'s constructor does not take."""
    named, anything = task_options(name)
    unknown = [k for k in options if k not in named]
    if unknown and not anything:
        accepted = ", ".join(named) or "none"
        raise TaskOptionError(
            f"task {name!r}: unknown option(s) {', '.join(unknown)}; accepted options: {accepted}"
        )


def get_task(name: str, **options: Any) -> EvalTask:
    """An eval task by name: registered tasks, then ``<family>`` and ``<family>_ood``.

    ``options`` are constructor keyword arguments (``tunelab eval --task-option``, a recipe's
    ``eval.task_options``); one the constructor does not take raises :class:`TaskOptionError`.
    """
    factory = _factory(name)
    check_task_options(name, options)
    if name in EVAL_TASKS:
        return factory(**options)
    return FamilyTask(factory(**options), "ood" if name.endswith("_ood") else "test")


def parse_task_options(specs: list[str], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """``{task: {key: value}}`` from ``task.key=value`` / ``key=value`` strings (values parsed as YAML).

    A bare ``key=value`` goes to every task in ``tasks`` whose constructor names ``key``.

    Raises:
        TaskOptionError: A malformed option, a task not in ``tasks``, an option no task takes.
    """
    out: dict[str, dict[str, Any]] = {t: {} for t in tasks}
    for spec in specs:
        key, eq, raw = spec.partition("=")
        task, dot, opt = key.strip().rpartition(".")
        if not eq or not opt:
            raise TaskOptionError(
                f"task option {spec!r}: expected task.key=value (or key=value for every task)"
            )
        value = yaml.safe_load(raw) if raw.strip() else ""
        if dot:
            if task not in out:
                raise TaskOptionError(
                    f"task option {spec!r}: task {task!r} is not among the tasks ({', '.join(tasks)})"
                )
            check_task_options(task, {opt: value})
            out[task][opt] = value
            continue
        takers = [t for t in tasks if opt in task_options(t)[0]]
        if not takers:
            accepted = "; ".join(f"{t}: {', '.join(task_options(t)[0]) or 'none'}" for t in tasks)
            raise TaskOptionError(
                f"task option {spec!r}: no task takes {opt!r} (accepted options: {accepted})"
            )
        for t in takers:
            out[t][opt] = value
    return {t: o for t, o in out.items() if o}


def task_names() -> list[str]:
    fams = [n for f in TASK_FAMILIES.names() for n in (f, f + "_ood")]
    return sorted(set(EVAL_TASKS.names()) | set(fams))
