"""Curation transforms applied per source before mixing (``data.transforms`` in a recipe).

Importing this package registers the built-in transforms in :data:`TRANSFORMS`.
"""

from tunelab.data.transforms import filters  # noqa: F401  (registers the filters)
from tunelab.data.transforms.base import (
    TRANSFORMS,
    BaseTransform,
    Transform,
    TransformContext,
    apply_transforms,
    build_transform,
    build_transforms,
)

# Later: evol_instruct (EvolInstruct) and nat (NegativeAwareTraining) register here too.

__all__ = [
    "TRANSFORMS", "BaseTransform", "Transform", "TransformContext", "apply_transforms",
    "build_transform", "build_transforms",
]
