"""Regularizers, registered by name (``tunelab ls methods`` lists them too).

Each module of this package registers itself with ``@REGULARIZERS.register``; ``REGULARIZERS``
imports them all on first use.
"""

from tunelab.regularizers.base import REGULARIZERS, Regularizer, build_regularizers

__all__ = ["REGULARIZERS", "Regularizer", "build_regularizers"]
