"""Evaluation tasks (``tunelab ls tasks``): one module per task, registered by name.

``EVAL_TASKS`` imports every module of this package on first use, and every built-in task
family (``TASK_FAMILIES``) is a task too (``arith``, ``arith_ood`` ...): a new task is one file.
"""

from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask, FamilyTask, get_task, task_names

__all__ = ["EVAL_TASKS", "EvalItem", "EvalTask", "FamilyTask", "get_task", "task_names"]
