"""tunelab: a lab for fine-tuning LLMs — recipes, data mixing with provenance, PEFT methods,
evaluation with confidence intervals. Everything the CLI does is a Python call too:

    import tunelab
    run_dir = tunelab.run("recipes/tiny.yaml", ["train.max_steps=3"])
    problems = tunelab.validate("recipes/tiny.yaml")
    cfg = tunelab.load_recipe("recipes/tiny.yaml")
    gen = tunelab.build_generator("smollm2-135m-instruct")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The package root stays light (PEP 562): ``import tunelab.registry`` must not load torch, and the
# root must not import the top layers that import it. Each public name resolves on first use.
_PUBLIC = {
    "run": "tunelab.runner.run",
    "validate": "tunelab.runner.validate",
    "load_recipe": "tunelab.config",
    "build_generator": "tunelab.generate.build",
    "evaluate_tasks": "tunelab.eval.harness",
}

_REGISTERS = {"run": "tunelab.report"}
"""Imported with a public name: the report layer registers the run report with the runner, so that a
run started as ``tunelab.run`` ends by writing its ``report.html`` as ``tunelab run`` does."""

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Resolve a public name (``tunelab.run`` ...) from the module that defines it."""
    if name not in _PUBLIC:
        raise AttributeError(f"module 'tunelab' has no attribute {name!r}")
    if name in _REGISTERS:
        importlib.import_module(_REGISTERS[name])
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
