"""Builders of preference data from trajectory pools (``tunelab sample`` output).

- ``pairs``: a success against a failure of the same task, for DPO and ORPO;
- ``kto_labels``: each trajectory labelled desirable (success) or undesirable (failure), for KTO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tunelab.config import bound
from tunelab.data.preference import pair_samples
from tunelab.data.transforms.base import TRANSFORMS, BaseTransform, Removed, TransformContext
from tunelab.io import DataError
from tunelab.types import Sample


def _outcome(s: Sample) -> bool:
    """A trajectory's success flag; a sample without one is bad input for these builders."""
    ok = s.meta.get("outcome", {}).get("success") if isinstance(s.meta.get("outcome"), dict) else None
    if not isinstance(ok, bool):
        raise DataError(f"source {s.source!r}, example {s.meta.get('id')!r}: field 'outcome.success' missing; "
                        "preference builders read trajectories (format: trajectory)")
    return ok


@TRANSFORMS.register("pairs")
class Pairs(BaseTransform):
    """Preference pairs (success chosen, failure rejected) of the same task from trajectories."""

    @dataclass
    class Params:
        """Recipe keys of ``{name: pairs}``."""

        mode: Literal["all", "one"] = "all"
        """``all``: every success x failure of a task; ``one``: one seeded pair per task."""
        max_per_task: int = field(default=0, metadata=bound(ge=0))
        """With ``all``: at most this many pairs per task, picked with the data seed (0: no cap)."""

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        for s in samples:
            _outcome(s)
        pairs, counts = pair_samples(samples, self.params.mode, ctx.seed, self.params.max_per_task)
        ctx.stats.setdefault("pairs", {})[samples[0].source if samples else ""] = {
            "trajectories": len(samples), "pairs": len(pairs), **counts}
        return pairs, counts


@TRANSFORMS.register("kto_labels")
class KTOLabels(BaseTransform):
    """KTO labels from trajectories: success is desirable, failure undesirable."""

    @dataclass
    class Params:
        """Recipe keys of ``{name: kto_labels}`` (none)."""

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        return [Sample(s.messages, {**s.meta, "label": _outcome(s)}) for s in samples], {}
