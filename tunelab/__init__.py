"""tunelab: a lab for fine-tuning LLMs — recipes, data mixing with provenance, PEFT methods,
evaluation with confidence intervals. Everything the CLI does is a Python call too."""

from __future__ import annotations

__version__ = "0.1.0"


def run(recipe=None, overrides=None, **kw):
    """Run a recipe (path, or a RunConfig) with ``a.b=c`` overrides; returns the run folder."""
    from tunelab.runner.run import run as _run

    return _run(recipe, overrides, **kw)


def validate(recipe, overrides=None) -> list[str]:
    """Problems in a recipe (empty list when it is good)."""
    from tunelab.config import load_recipe
    from tunelab.runner.validate import validate as _validate

    return _validate(load_recipe(recipe, overrides))


def load_recipe(recipe=None, overrides=None):
    """A recipe as a typed RunConfig."""
    from tunelab.config import load_recipe as _load

    return _load(recipe, overrides)
