"""PromptIntern's template compression: drop a template's units (sentences or words) ranked by a score.

The score is named and reproducible: ``surprisal`` (mean token surprisal -log p under a causal LM, the
Selective Context score of Li et al. 2023, arXiv 2310.06201: predictable text goes first), ``position``
(earlier units first) or ``random`` (seeded). A fraction ``keep`` keeps the best-ranked units whose words
fit in ``keep`` x the template's words, in their original order, so a smaller fraction keeps a subset of
the units of a larger one.

Surprisal needs a scorer passed in (``text -> [(character offset, surprisal)]``,
:func:`tunelab.models.surprisal.model_scorer`): the caller (the runner, an eval task) builds it, so
nothing here loads a model.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tunelab.models.surprisal import Scorer

UNITS = ("sentence", "word")
SCORES = ("surprisal", "position", "random")

_SENTENCE = re.compile(r".+?(?:[.!?](?=\s)|\n|$)\s*", re.S)
_WORD = re.compile(r"\S+\s*")


def split_units(text: str, unit: str) -> list[str]:
    """``text`` (stripped) cut into sentences (also at line ends) or words, each with its trailing
    whitespace, so the units joined give the stripped text back."""
    if unit not in UNITS:
        raise ValueError(f"compression unit must be one of {', '.join(UNITS)}, got {unit!r}")
    pattern = _WORD if unit == "word" else _SENTENCE
    return [m.group(0) for m in pattern.finditer(text.strip()) if m.group(0)]


_RANKINGS: dict[tuple, list[int]] = {}  # (unit, score, model, seed, template) -> unit order; per process


@dataclass
class Compressor:
    """Template compression by unit dropping (see the module docstring); rankings are memoised per process.

    ``score: surprisal`` ranks with the scorer passed to :meth:`scores`, :meth:`ranking` or
    :meth:`compress` (a ValueError without one).
    """

    unit: str = "sentence"
    """``sentence`` | ``word``."""
    score: str = "surprisal"
    """``surprisal`` (drop the most predictable units first) | ``position`` | ``random``."""
    model: str | None = None
    """The name of the model whose surprisal the scorer gives (``score: surprisal``; keys the memoised rankings)."""
    seed: int = 0
    """Seed of ``score: random``."""

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")

    def _scorer(self, scorer: Scorer | None) -> Scorer:
        """``scorer``, required by surprisal scores."""
        if scorer is None:
            raise ValueError("surprisal compression needs a scorer passed in "
                             "(tunelab.models.surprisal.model_scorer of the scoring model)")
        return scorer

    def _key(self, template: str) -> tuple:
        model = self.model if self.score == "surprisal" else None
        return (self.unit, self.score, model, self.seed if self.score == "random" else None, template.strip())

    def scores(self, template: str, scorer: Scorer | None = None) -> list[float]:
        """One score per unit of ``template`` (higher: kept longer)."""
        units = split_units(template, self.unit)
        if self.score == "position":
            return [-float(i) for i in range(len(units))]
        if self.score == "random":
            rng = random.Random(f"compress/{self.seed}/{hashlib.sha1(template.strip().encode()).hexdigest()}")
            return [rng.random() for _ in units]
        per_token = self._scorer(scorer)("".join(units))
        out, pos, j = [], 0, 0
        for u in units:  # mean surprisal of the tokens starting inside the unit
            end, vals = pos + len(u), []
            while j < len(per_token) and per_token[j][0] < end:
                vals.append(per_token[j][1])
                j += 1
            out.append(sum(vals) / len(vals) if vals else 0.0)
            pos = end
        return out

    def ranking(self, template: str, scorer: Scorer | None = None) -> list[int]:
        """Unit indices, the best first (ties: the earlier unit first); memoised per process."""
        if self.score == "surprisal":
            self._scorer(scorer)
        key = self._key(template)
        if key not in _RANKINGS:
            s = self.scores(template, scorer)
            _RANKINGS[key] = sorted(range(len(s)), key=lambda i: (-s[i], i))
        return _RANKINGS[key]

    def compress(self, template: str, keep: float, scorer: Scorer | None = None) -> str:
        """``template`` with the best units whose words fit in ``keep`` x its words, in their order."""
        if keep >= 1:
            return template.strip()
        units = split_units(template, self.unit)
        if keep <= 0 or not units:
            return ""
        budget = keep * sum(len(u.split()) for u in units) + 1e-9
        kept, used = set(), 0
        for i in self.ranking(template, scorer):
            n = len(units[i].split())
            if used + n <= budget:
                kept.add(i)
                used += n
        return "".join(units[i] for i in sorted(kept)).strip()
