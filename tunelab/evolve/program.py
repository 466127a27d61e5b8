"""Programmatic evolution over the built-in ``instruct`` family: no model needed, effects exact.

Each operator changes an item's checkable constraints and renders the new instruction and its
reference answer with the family's own phrasings and word bank (train topics and train phrasings
only; a rendering whose prompt falls in the family's test split is drawn again), so that the
effect of evolved data on constraint following can be measured with the exact verifier:

- ``add_constraint``: one more modifier compatible with the item's format;
- ``combine_constraints``: the item's constraints joined with those of another seed (the compatible ones);
- ``change_format``: another output format (word count, bullets, JSON, sentences), keeping the
  modifiers it allows.

An operator that cannot change the item (nothing compatible is left) returns it unchanged, and
the eliminator drops it for no information gain, exactly as a judge would.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tunelab.data.tasks.base import get_family
from tunelab.data.tasks.instruct import (
    COMPATIBLE,
    END_PHRASES,
    FORMATS,
    MODIFIERS,
    WORDS,
    _body,
    _cap,
    _prompt,
    holds_out,
)

PROGRAM_VERSION = 1
FINGERPRINT = f"programmatic:instruct@{PROGRAM_VERSION}"
"""The fingerprint of the programmatic evolver, judge and answerer."""


@dataclass
class Spec:
    """An ``instruct`` item as its parts: topic, format constraint and modifier constraints."""

    topic: str
    fmt: str
    mods: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, topic: str, constraints: list[dict[str, Any]]) -> Spec:
        """The spec of an item's ``topic`` and ``constraints``."""
        fmt = next((c["type"] for c in constraints if c["type"] in FORMATS), "plain")
        return cls(topic, fmt, {c["type"]: dict(c) for c in constraints if c["type"] in MODIFIERS})

    def types(self) -> frozenset[str]:
        """The constraint types (what "no information gain" compares)."""
        return frozenset(self.mods) | ({self.fmt} - {"plain"})


def _add(rng: random.Random, spec: Spec, partner: Spec) -> Spec:
    """One more modifier compatible with the item's format."""
    free = [m for m in COMPATIBLE[spec.fmt] if m not in spec.mods]
    if not free:
        return spec
    return Spec(spec.topic, spec.fmt, {**spec.mods, (m := rng.choice(free)): {"type": m}})


def _combine(rng: random.Random, spec: Spec, partner: Spec) -> Spec:
    """The item's constraints joined with another seed's (those its format allows)."""
    fmt = spec.fmt if spec.fmt != "plain" else partner.fmt
    mods = {**partner.mods, **spec.mods}
    return Spec(spec.topic, fmt, {m: c for m, c in mods.items() if m in COMPATIBLE[fmt]})


def _change_format(rng: random.Random, spec: Spec, partner: Spec) -> Spec:
    """Another output format, keeping the modifiers it allows."""
    fmt = rng.choice([f for f in FORMATS[1:] if f != spec.fmt])
    return Spec(spec.topic, fmt, {m: c for m, c in spec.mods.items() if m in COMPATIBLE[fmt]})


PROGRAM_OPERATORS: dict[str, Callable[[random.Random, Spec, Spec], Spec]] = {
    "add_constraint": _add,
    "combine_constraints": _combine,
    "change_format": _change_format,
}
"""The programmatic operators by name: ``(rng, item, partner seed) -> new spec``."""


def render(rng: random.Random, spec: Spec) -> tuple[str, str, list[dict[str, Any]]]:
    """(instruction, reference answer, constraints) of ``spec``; modifiers keep their parameters."""
    mods = {m: dict(c) for m, c in spec.mods.items()}
    words = mods["include_words"].get("words") or rng.sample(WORDS, 2) if "include_words" in mods else None
    fmt_c: dict[str, Any] = {"type": spec.fmt}
    text = _body(rng, spec.fmt, spec.topic, fmt_c, words)
    if "title" in mods:
        text = f"<<{_cap(spec.topic)} in brief>>\n{text}"
    if "end_with" in mods:
        mods["end_with"]["phrase"] = mods["end_with"].get("phrase") or rng.choice(END_PHRASES)
        text = f"{text}\n{mods['end_with']['phrase']}"
    if words:
        mods["include_words"]["words"] = words
    if "lowercase" in mods:
        text = text.lower()
    constraints = ([fmt_c] if spec.fmt != "plain" else []) + list(mods.values())
    return _prompt(rng, spec.fmt, spec.topic, constraints, ood=False), text, constraints


def evolve_item(name: str, seed_key: str, parent: dict[str, Any], partner: dict[str, Any],
                hold_out: bool = False) -> dict[str, Any]:
    """Apply programmatic operator ``name`` to ``parent`` (a row with ``topic`` and ``constraints``).

    Returns ``{"instruction", "response", "constraints", "topic", "equal"}``; ``equal`` is True when
    the constraint types did not change (no information gain). With ``hold_out`` an evolution that would
    combine one of :data:`~tunelab.data.tasks.instruct.HELD_OUT_PAIRS` is not made (the item comes back
    unchanged, so the eliminator drops it).
    """
    family = get_family("instruct")
    rng = random.Random(f"evolve-program/{seed_key}")
    old = Spec.of(parent["topic"], parent["constraints"])
    new = PROGRAM_OPERATORS[name](rng, old, Spec.of(partner["topic"], partner["constraints"]))
    if hold_out and holds_out(new.types()):
        new = old
    for _ in range(20):  # never train on a prompt of the family's test split
        instruction, response, constraints = render(rng, new)
        if not family.in_test(instruction):
            break
    return {"instruction": instruction, "response": response, "constraints": constraints, "topic": new.topic,
            "equal": new.types() == old.types()}


def instruct_seeds(limit: int | None, seed: int) -> list[dict[str, Any]]:
    """Seed rows from the family's train split (``limit`` items, default 200), as
    :func:`tunelab.data.sources.load_source` would load ``{task: instruct, count: limit}`` with this seed."""
    samples = get_family("instruct").samples("train", limit or 200, seed)
    return [{"id": s.meta["id"], "instruction": s.messages[0]["content"], "response": s.response(),
             "constraints": s.meta["constraints"], "topic": s.meta["topic"]} for s in samples]
