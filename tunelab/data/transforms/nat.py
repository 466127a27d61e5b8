"""Negative-Aware Training (Wang et al. 2024, "Learning From Failure", arXiv 2402.11651) and its baselines.

Applied to trajectories (the ``trajectory`` format: ``outcome.success`` / ``outcome.score``):

* ``mode: nat``: every trajectory is kept and its question turn says whether the trajectory that
  follows succeeded (the paper appends "... solve the problem correctly." or "... But incorrectly
  solve the problem." to the user turn holding the question); loss stays on the assistant turns of
  both kinds. At inference the prompt asks for the successful kind.
* ``mode: nut``: the same data with no signal (negatives mixed in unmarked).
* ``mode: positives``: the successful trajectories only.

Controls: ``signal: meaningless`` (``[A]`` / ``[B]``), ``signal: swapped`` (the wordings exchanged).
``classes: graded`` uses four classes by score (0 / (0, 0.4) / [0.4, 1) / 1, the paper's HotpotQA
F1 grading). ``placement``: the question turn (as the paper) or a system prompt. ``negatives_per_positive``
subsamples the negatives to a ratio (seeded), ``max_positives`` caps the positives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from tunelab.data.transforms.base import TRANSFORMS, BaseTransform, Removed, TransformContext
from tunelab.io import DataError
from tunelab.types import Sample

BINARY = {"semantic": ("Please solve the problem correctly.", "But incorrectly solve the problem."),
          "meaningless": ("[A]", "[B]")}
GRADED = {"semantic": ("Please answer fully correctly.", "Please answer mostly correctly.",
                       "Please answer partly correctly.", "But answer incorrectly."),
          "meaningless": ("[A]", "[B]", "[C]", "[D]")}


def grade(score: float) -> int:
    """The paper's four classes by score: 1 -> 0, [0.4, 1) -> 1, (0, 0.4) -> 2, 0 -> 3."""
    return 0 if score >= 1 else 1 if score >= 0.4 else 2 if score > 0 else 3


@TRANSFORMS.register("nat")
class NAT(BaseTransform):
    """Negative-aware training on trajectories: a success/failure signal in the prompt (or NUT, or positives only)."""

    @dataclass
    class Params:
        mode: Literal["nat", "nut", "positives"] = "nat"
        """``nat`` (signal), ``nut`` (no signal), ``positives`` (successes only)."""
        signal: Literal["semantic", "meaningless", "swapped"] = "semantic"
        """The wording: the paper's sentences, meaningless tags, or the sentences swapped (controls)."""
        classes: Literal["binary", "graded"] = "binary"
        """Success/failure, or four classes by ``outcome.score``."""
        placement: Literal["question", "system"] = "question"
        """Append to the user turn holding the question (the paper), or put in a system prompt."""
        negatives_per_positive: float | None = None
        """Keep at most this many negatives per positive (seeded choice); None: all."""
        max_positives: int | None = None
        """Keep at most this many positives (seeded choice); None: all."""

    def wording(self, cls: int) -> str:
        """The signal text of class ``cls`` (0 = success)."""
        table = (GRADED if self.params.classes == "graded" else BINARY)
        words = table["semantic" if self.params.signal == "swapped" else self.params.signal]
        return words[len(words) - 1 - cls] if self.params.signal == "swapped" else words[cls]

    def success_signal(self) -> str:
        """What inference asks for: the successful class's wording."""
        return self.wording(0)

    def _class(self, s: Sample) -> int:
        outcome = s.meta.get("outcome")
        if not isinstance(outcome, dict):
            raise DataError(f"source {s.source!r}, sample {s.meta.get('id')!r}: the nat transform needs trajectories "
                            "with an outcome (format: trajectory)")
        if self.params.classes == "graded":
            return grade(float(outcome.get("score", float(outcome["success"]))))
        return 0 if outcome["success"] else 1

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        classes = [self._class(s) for s in samples]
        rng = random.Random(ctx.seed)
        pos = [i for i, c in enumerate(classes) if c == 0]
        neg = [i for i, c in enumerate(classes) if c != 0]
        removed: Removed = {}
        if self.params.max_positives is not None and len(pos) > self.params.max_positives:
            removed["positives_capped"] = len(pos) - self.params.max_positives
            pos = sorted(rng.sample(pos, self.params.max_positives))
        if self.params.mode == "positives":
            removed["negatives"] = len(neg)
            neg = []
        elif self.params.negatives_per_positive is not None:
            keep = min(len(neg), int(round(self.params.negatives_per_positive * len(pos))))
            if keep < len(neg):
                removed["negatives_over_ratio"] = len(neg) - keep
                neg = sorted(rng.sample(neg, keep))
        kept = sorted(pos + neg)
        if self.params.mode != "nat":
            return [samples[i] for i in kept], removed
        return [self._signal(samples[i], classes[i]) for i in kept], removed

    def _signal(self, s: Sample, cls: int) -> Sample:
        """A copy of ``s`` whose prompt carries its class's signal."""
        words = self.wording(cls)
        messages = [dict(m) for m in s.messages]
        if self.params.placement == "system":
            messages.insert(0, {"role": "system", "content": words})
        else:
            first = next(i for i, m in enumerate(messages) if m["role"] == "user")
            messages[first]["content"] = f"{messages[first]['content']} {words}"
        return Sample(messages, {**s.meta, "nat_class": cls, "nat_signal": words})


def conditioned(params: dict[str, Any]) -> str:
    """The success signal a run trained with ``params`` (a ``nat`` transform spec) asks for at inference."""
    return NAT(NAT.Params(**{k: v for k, v in params.items() if k != "name"})).success_signal()


def nat_spec(transforms: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``nat`` transform spec of a recipe's data transforms when it trains with a signal (mode nat)."""
    return next((t for t in transforms if t.get("name") == "nat" and t.get("mode", "nat") == "nat"), None)


def signal_for(spec: dict[str, Any] | None, which: str) -> str:
    """The prompt signal for ``which`` (``success``, ``failure`` or ``none``) of a run trained with ``spec``."""
    if spec is None or which == "none":
        return ""
    t = NAT(NAT.Params(**{k: v for k, v in spec.items() if k != "name"}))
    if which == "success":
        return t.wording(0)
    if which == "failure":
        return t.wording(3 if t.params.classes == "graded" else 1)
    raise ValueError(f"signal must be success, failure or none, got {which!r}")
