"""Evaluation tasks (``tunelab ls tasks``)."""

import tunelab.data.tasks  # noqa: F401  (registers the built-in families)
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask, FamilyTask, get_task, task_names

__all__ = ["EVAL_TASKS", "EvalItem", "EvalTask", "FamilyTask", "get_task", "task_names"]
