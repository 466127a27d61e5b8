"""Regularizers: composable with any method, active only in training mode.

A regularizer is ``apply(model)`` (it installs hooks) and never changes what a model does
in eval mode, so evaluation and saved artefacts are untouched.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from tunelab.config import parse_params
from tunelab.registry import Registry


class Regularizer:
    name: ClassVar[str]
    Params: ClassVar[type]

    def __init__(self, params: Any) -> None:
        self.params = params

    def apply(self, model: nn.Module) -> None:
        raise NotImplementedError


REGULARIZERS: Registry[type[Regularizer]] = Registry("regularizer")


def build_regularizers(specs: list[dict[str, Any]]) -> list[Regularizer]:
    out = []
    for i, spec in enumerate(specs):
        name = spec.get("name")
        if not name:
            raise ValueError(f"regularizers[{i}]: missing 'name'; valid: {', '.join(REGULARIZERS.names())}")
        cls = REGULARIZERS.get(name)
        out.append(cls(parse_params(cls.Params, spec, f"regularizers[{i}]")))
    return out


