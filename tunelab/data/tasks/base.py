"""Built-in task families: examples generated in code, each with an exact verifier.

A family produces disjoint ``train`` / ``test`` splits and an out-of-distribution ``ood``
split (harder or differently phrased items of the same skill). Every Sample carries in
``meta``: ``id`` (stable), ``task``, ``split``, ``answer`` and whatever ``verify`` needs.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, ClassVar

from tunelab.registry import Registry
from tunelab.types import Sample

SPLITS = ("train", "test", "ood")


class TaskFamily:
    """Base class: subclasses implement ``make_item`` and ``verify``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    test_fraction: ClassVar[int] = 10  # one item key in N goes to the test split
    system: ClassVar[str | None] = None

    def __init__(self, **options: Any) -> None:
        self.options = options

    # -- to implement -------------------------------------------------------------------
    def make_item(self, rng: random.Random, ood: bool) -> tuple[str, str, dict[str, Any]]:
        """Return (prompt, reference response, meta) for one random item."""
        raise NotImplementedError

    def verify(self, meta: dict[str, Any], completion: str) -> dict[str, Any]:
        """Score a model completion: at least ``{"correct": bool, "extracted": ...}``."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------
    def in_test(self, prompt: str) -> bool:
        """Train/test membership is a hash of the prompt, so the splits never overlap."""
        h = int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16)
        return h % self.test_fraction == 0

    def samples(self, split: str, n: int, seed: int = 0) -> list[Sample]:
        """``n`` distinct examples of ``split`` (train | test | ood), deterministic in ``seed``."""
        if split not in SPLITS:
            raise ValueError(f"task {self.name!r}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        seen: set[str] = set()
        out: list[Sample] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 50 * n + 1000:
                raise RuntimeError(f"task {self.name!r}: could not make {n} distinct {split} items")
            prompt, response, meta = self.make_item(rng, ood=split == "ood")
            if prompt in seen or (split != "ood" and self.in_test(prompt) != (split == "test")):
                continue
            seen.add(prompt)
            msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            if self.system:
                msgs.insert(0, {"role": "system", "content": self.system})
            item_id = hashlib.sha1(prompt.encode()).hexdigest()[:12]
            out.append(Sample(msgs, {"task": self.name, "split": split, "id": f"{self.name}-{split}-{item_id}", **meta}))
        return out


TASK_FAMILIES: Registry[type[TaskFamily]] = Registry(
    "task family", package="tunelab.data.tasks", entry_points="tunelab.task_families"
)


def get_family(name: str, **options: Any) -> TaskFamily:
    """A new instance of the task family registered as ``name``, built with ``options``."""
    return TASK_FAMILIES.get(name)(**options)
