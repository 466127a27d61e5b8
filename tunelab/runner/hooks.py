"""What the runner writes once a run or a sweep is done, registered by the layer above it.

The run report and the sweep report (``report.html``, :mod:`tunelab.report`) sit above the runner:
the runner never imports them. :mod:`tunelab.report` registers them here when it is imported (the
CLI, the UI and the public ``tunelab.run`` import it), as
:func:`tunelab.runner.recipe_model.set_recipe_runner` lets the runner train a recipe's model for the data
layer below it. With nothing registered (the
runner used alone) a run and a sweep write no report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

RunReporter = Callable[[Path], Path]
"""Writes ``<run>/report.html`` from a finished run folder; returns its path."""
SweepReporter = Callable[[dict[str, Any]], Path]
"""Writes ``<sweep>/report.html`` from ``sweep.json``'s content; returns its path."""

_reporters: dict[str, Callable[..., Path] | None] = {"run": None, "sweep": None}


def set_reporters(run: RunReporter | None = None, sweep: SweepReporter | None = None) -> None:
    """Register what writes a run's and a sweep's report (``None`` leaves that one as it is)."""
    if run is not None:
        _reporters["run"] = run
    if sweep is not None:
        _reporters["sweep"] = sweep


def report_run(run_dir: Path) -> Path | None:
    """The run's report, written by the registered reporter (None when none is registered)."""
    reporter = _reporters["run"]
    return reporter(run_dir) if reporter else None


def report_sweep(result: dict[str, Any]) -> Path | None:
    """The sweep's report, written by the registered reporter (None when none is registered)."""
    reporter = _reporters["sweep"]
    return reporter(result) if reporter else None
