"""Built-in task families (see ``base``); each module registers itself in ``TASK_FAMILIES``.

``TASK_FAMILIES`` imports every module of this package on first use: a new family is one file.
"""

from tunelab.data.tasks.base import SPLITS, TASK_FAMILIES, TaskFamily, get_family

__all__ = ["SPLITS", "TASK_FAMILIES", "TaskFamily", "get_family"]
