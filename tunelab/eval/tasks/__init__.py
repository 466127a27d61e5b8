"""Evaluation tasks (``tunelab ls tasks``): one module per task, registered by name."""

import tunelab.data.tasks  # noqa: F401  (registers the built-in families: arith, arith_ood, ...)
from tunelab.eval.tasks import choice, code_exec, gsm8k, judge_task, perplexity  # noqa: F401  (registration)
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask, FamilyTask, get_task, task_names

__all__ = ["EVAL_TASKS", "EvalItem", "EvalTask", "FamilyTask", "get_task", "task_names"]
