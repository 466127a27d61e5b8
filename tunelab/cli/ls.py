"""``tunelab ls``: what a recipe can name (models, sources, methods, tasks, transforms, diagnostics,
environments, objectives), each with the first line of its docstring."""

from __future__ import annotations

import argparse
from typing import Any

from tunelab.cli.common import Commands
from tunelab.cli.output import format_listing
from tunelab.data.formats import FORMATS
from tunelab.data.tasks import TASK_FAMILIES
from tunelab.data.transforms.base import TRANSFORMS
from tunelab.diagnostics import DIAGNOSTICS
from tunelab.envs.base import ENVS
from tunelab.eval.tasks.base import EVAL_TASKS, get_task, task_names
from tunelab.methods import METHODS
from tunelab.models.load import ALIASES
from tunelab.registry import first_doc_line
from tunelab.regularizers import REGULARIZERS
from tunelab.train.objectives import OBJECTIVES


def cmd_ls(a: argparse.Namespace) -> int:
    """List what a recipe can name: models, sources (task families, formats), methods, tasks, transforms,
    diagnostics, environments, objectives."""

    sections = {
        "models": [(n, a_.description) for n, a_ in ALIASES.items()] + [("<owner/name>", "any hub id"),
                                                                         ("<dir>", "any local HF folder")],
        "sources": [(f"task: {n}", first_doc_line(c)) for n, c in TASK_FAMILIES.items()]
        + [(f"format: {n}", _first_sentence(c) or "file format") for n, c in FORMATS.items()],
        "methods": [(n, first_doc_line(c)) for n, c in METHODS.items()]
        + [(f"regularizer: {n}", first_doc_line(c)) for n, c in REGULARIZERS.items()],
        "tasks": [(n, _task_doc(n)) for n in task_names()],
        "transforms": [(n, first_doc_line(c)) for n, c in TRANSFORMS.items()],
        "diagnostics": [(n, first_doc_line(c)) for n, c in DIAGNOSTICS.items()],
        "envs": [(n, first_doc_line(c)) for n, c in ENVS.items()],
        "objectives": [(n, first_doc_line(c)) for n, c in OBJECTIVES.items()],
    }
    print(format_listing(sections, a.what))
    return 0


def _first_sentence(obj: Any) -> str:
    """The first sentence of an object's docstring, on one line (at most 90 characters)."""
    text = " ".join((obj.__doc__ or "").split()).split(". ")[0].rstrip(".")
    return text if len(text) <= 90 else text[:89] + "…"


def _task_doc(name: str) -> str:
    """A task's line: its docstring's first line, or the split and family of a built-in task."""
    if name in EVAL_TASKS:
        return first_doc_line(EVAL_TASKS.get(name))
    task = get_task(name)
    return f"{task.split} split of the built-in `{task.family.name}` family (exact verifier)"


COMMANDS: Commands = {
    "ls": (cmd_ls, lambda p: p.add_argument(
        "what", nargs="?", choices=["models", "sources", "methods", "tasks", "transforms", "diagnostics", "envs",
                               "objectives"])),
}
"""The commands of this module: name -> (function, what adds its arguments)."""
