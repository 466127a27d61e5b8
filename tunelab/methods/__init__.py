"""Training methods, registered by name (``tunelab ls methods``)."""

from tunelab.methods import adapters, full, ia3, lisa, lora, partial, prefix, prompt  # noqa: F401  (registration)
from tunelab.methods.base import METHODS, Method, build_method, count_parameters

__all__ = ["METHODS", "Method", "build_method", "count_parameters"]
