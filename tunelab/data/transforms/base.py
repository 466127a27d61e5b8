"""Curation transforms: the protocol, the registry and the pipeline runner.

A transform is a class registered in :data:`TRANSFORMS` with

- ``Params``: a dataclass whose fields are its recipe keys (attribute docstrings, defaults);
- ``__init__(self, params)``;
- ``__call__(self, samples, ctx) -> (kept samples, {reason: removed count})``.

A recipe lists them as ``data.transforms: [{name: dedup}, {name: length, max_tokens: 512}]``;
the caller applies the list to each source separately, before mixing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from tunelab.config import ConfigError, parse_params
from tunelab.registry import Registry
from tunelab.types import Sample

Removed = dict[str, int]


@dataclass
class TransformContext:
    """What transforms may need besides the samples."""

    count_tokens: Callable[[Sample], int] | None = None
    """Tokens of one sample under the run's tokenizer (None: no tokenizer at hand)."""
    eval_texts: list[str] = field(default_factory=list)
    """Texts of the evaluation sets named by the recipe (every item's question and reference), for
    decontamination."""
    eval_ids: list[str] = field(default_factory=list)
    """``task/item id`` of each of ``eval_texts`` (same order; may be empty)."""
    seed: int = 0
    """Seed for seeded transforms (near_dedup hashing, cap)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Extra findings transforms record for the data report (e.g. ``contaminated`` overlaps)."""


@runtime_checkable
class Transform(Protocol):
    """The shape of a transform class instance (see the module docstring)."""

    Params: ClassVar[type]

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]: ...


TRANSFORMS: Registry[type[Any]] = Registry(
    "transform", package="tunelab.data.transforms", entry_points="tunelab.transforms"
)


class BaseTransform:
    """Convenience base: keeps ``params``; subclasses define ``Params`` and ``keep``/``__call__``."""

    Params: ClassVar[type]
    reason: ClassVar[str] = "filtered"
    heldout_too: ClassVar[bool] = False
    """Also applied to the held-out examples (decontamination: held-out loss must never score an
    evaluation item)."""

    def __init__(self, params: Any) -> None:
        self.params = params

    def keep(self, sample: Sample, ctx: TransformContext) -> bool | str:
        """True to keep; False (or a reason string) to drop. Per-sample filters override this."""
        raise NotImplementedError

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        kept: list[Sample] = []
        removed: Removed = {}
        for s in samples:
            verdict = self.keep(s, ctx)
            if verdict is True:
                kept.append(s)
            else:
                reason = verdict if isinstance(verdict, str) else self.reason
                removed[reason] = removed.get(reason, 0) + 1
        return kept, removed


# ----------------------------------------------------------------------------- text helpers

_WORD = re.compile(r"\w+")


def sample_text(sample: Sample, on: str = "all") -> str:
    """Text of a sample's turns: ``all`` | ``prompt`` (non-assistant) | ``response`` (assistant)."""
    parts = []
    for m in sample.messages:
        is_response = m["role"] == "assistant"
        if on == "all" or (on == "response") == is_response:
            parts.append(str(m["content"]))
    return "\n".join(parts)


def normalize(text: str) -> str:
    """Lowercase with runs of whitespace collapsed (for exact matching)."""
    return " ".join(text.lower().split())


def words(text: str) -> list[str]:
    """Lowercased word tokens (letters, digits, underscore), punctuation dropped."""
    return _WORD.findall(text.lower())


# ----------------------------------------------------------------------------- pipeline


def build_transform(spec: dict[str, Any], where: str = "data.transforms") -> Any:
    """Instantiate one ``{name: ..., **params}`` spec.

    Raises:
        RegistryError: Unknown name (the message lists the valid ones).
        ConfigError: Unknown or ill-typed parameter (the message lists the valid keys).
    """
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {spec!r}")
    cls = TRANSFORMS.get(spec["name"])
    return cls(parse_params(cls.Params, spec, f"{where} ({spec['name']})"))


def build_transforms(specs: list[dict[str, Any]]) -> list[Any]:
    """Instantiate a recipe's ``data.transforms`` list (validates all before any work)."""
    return [build_transform(spec, f"data.transforms[{i}]") for i, spec in enumerate(specs)]


def apply_transforms(
    samples: list[Sample], specs: list[dict[str, Any]] | list[Any], ctx: TransformContext
) -> tuple[list[Sample], Removed]:
    """Run transforms in order on one source's samples.

    Args:
        samples: The source's samples.
        specs: ``{name: ..., **params}`` dicts, or transforms already built with
            :func:`build_transforms` (to read attributes such as ``last_overlaps`` after).
        ctx: Token counter, evaluation texts, seed.

    Returns:
        The kept samples and removed counts by reason, summed over transforms.
    """
    transforms = [build_transform(s, f"data.transforms[{i}]") if isinstance(s, dict) else s
                  for i, s in enumerate(specs)]
    removed: Removed = {}
    for t in transforms:
        samples, dropped = t(samples, ctx)
        for reason, n in dropped.items():
            removed[reason] = removed.get(reason, 0) + n
    return samples, removed
