"""Evol-Instruct: instructions rewritten by a model (or by program, for the ``instruct`` family), with
lineage, an eliminator, an item cache with resume, a token and cost ledger and per-round statistics.

``tunelab evolve SEEDS --evolver M --answerer M --rounds R --out FILE``; see :mod:`tunelab.evolve.evol_instruct`.
"""

from tunelab.evolve.config import EliminatorConfig, EvolveConfig, load_evolve_config
from tunelab.evolve.evol_instruct import EvolInstruct, EvolveError, evolve
from tunelab.evolve.inspect import inspect_evolved, is_evolved

__all__ = ["EliminatorConfig", "EvolInstruct", "EvolveConfig", "EvolveError", "evolve", "inspect_evolved",
           "is_evolved", "load_evolve_config"]
