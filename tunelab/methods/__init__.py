"""Training methods, registered by name (``tunelab ls methods``).

Each module of this package registers its method with ``@METHODS.register``; ``METHODS``
imports them all on first use, so a new method is one new file here.
"""

from tunelab.methods.base import METHODS, Method, build_method, count_parameters

__all__ = ["METHODS", "Method", "build_method", "count_parameters"]
