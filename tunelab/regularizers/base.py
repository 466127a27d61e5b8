"""Regularizers: composable with any method, active only in training mode.

A regularizer is ``apply(model)`` (it installs hooks) and never changes what a model does
in eval mode, so evaluation and saved artefacts are untouched. A new regularizer is one
module in this package: ``@REGULARIZERS.register("<name>")`` registers it and sets its
``name``, and ``REGULARIZERS`` imports the package's modules on first use.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from tunelab.config import parse_params
from tunelab.registry import Registry


class Regularizer:
    """Base class: subclasses define ``Params`` (a dataclass of recipe keys) and ``apply``."""

    name: ClassVar[str]
    """The registry name, as written in recipes (set by ``@REGULARIZERS.register``)."""
    Params: ClassVar[type]
    """Dataclass of the recipe keys (``regularizers: [{name: ..., **keys}]``)."""

    def __init__(self, params: Any) -> None:
        self.params = params

    def apply(self, model: nn.Module) -> None:
        """Install the regularizer's hooks on ``model``; they must do nothing in eval mode."""
        raise NotImplementedError


REGULARIZERS: Registry[type[Regularizer]] = Registry(
    "regularizer", package="tunelab.regularizers", entry_points="tunelab.regularizers"
)


def build_regularizers(specs: list[dict[str, Any]]) -> list[Regularizer]:
    """A recipe's ``regularizers`` list (``[{name: neftune, alpha: 5}]``) -> configured regularizers.

    Raises:
        ValueError: A spec without ``name``.
        RegistryError: An unknown regularizer (the message lists the valid ones).
        ConfigError: An unknown or ill-typed key (the message lists the valid keys).
    """
    out = []
    for i, spec in enumerate(specs):
        name = spec.get("name")
        if not name:
            raise ValueError(f"regularizers[{i}]: missing 'name'; valid: {', '.join(REGULARIZERS.names())}")
        cls = REGULARIZERS.get(name)
        out.append(cls(parse_params(cls.Params, spec, f"regularizers[{i}]")))
    return out
