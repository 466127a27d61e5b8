"""Built-in task families (see ``base``); each module registers itself in ``TASK_FAMILIES``."""

from tunelab.data.tasks import arith, code, instruct, nlp  # noqa: F401  (registration)
from tunelab.data.tasks.base import SPLITS, TASK_FAMILIES, TaskFamily, get_family

__all__ = ["SPLITS", "TASK_FAMILIES", "TaskFamily", "get_family"]
