"""Regularizers, registered by name (``tunelab ls methods`` lists them too)."""

from tunelab.regularizers import dropout, neftune  # noqa: F401  (registration)
from tunelab.regularizers.base import REGULARIZERS, Regularizer, build_regularizers

__all__ = ["REGULARIZERS", "Regularizer", "build_regularizers"]
