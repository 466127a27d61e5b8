"""Curation transforms applied per source before mixing (``data.transforms`` in a recipe).

Each module of this package registers its transforms in :data:`TRANSFORMS`, which imports
them all on first use: a new transform is one file (evol_instruct, nat ... register the same way).
"""

from tunelab.data.transforms.base import (
    TRANSFORMS,
    BaseTransform,
    Transform,
    TransformContext,
    apply_transforms,
    build_transform,
    build_transforms,
)

__all__ = [
    "TRANSFORMS", "BaseTransform", "Transform", "TransformContext", "apply_transforms",
    "build_transform", "build_transforms",
]
