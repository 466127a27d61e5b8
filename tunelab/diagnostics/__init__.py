"""Diagnostics that explain a run (``tunelab ls diagnostics``, ``tunelab diagnose RUN``).

Each module registers one with ``@DIAGNOSTICS.register``: gradient interference between sources
(measured during training), representation drift (CKA), weight change, a linearity check and a
forgetting panel. Results go to ``<run>/diagnostics/<name>.json`` and into the run's report, each
as the panel its :meth:`Diagnostic.panel` draws (by default a table of the result's values).
"""

from tunelab.diagnostics.base import DIAGNOSTICS, Context, Diagnostic, Panel, run_diagnostics

__all__ = ["DIAGNOSTICS", "Context", "Diagnostic", "Panel", "run_diagnostics"]
