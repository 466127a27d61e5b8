"""Training methods, registered by name (``tunelab ls methods``)."""

from tunelab.methods import full, lora  # noqa: F401  (registration)
from tunelab.methods.base import METHODS, Method, build_method, count_parameters

__all__ = ["METHODS", "Method", "build_method", "count_parameters"]
