"""PromptIntern's schedule: the ``promptintern`` data transform and the level of every training step.

Every training sample is split into template, examples and query (:mod:`tunelab.data.prompt_parts`).
The transform attaches the parts (the template of a built-in prompt set, :mod:`tunelab.promptintern.prompt_sets`,
or the recipe's own, the ``shots`` examples chosen for the sample by :mod:`tunelab.promptintern.examples`,
its query and answer) and renders the *full* prompt; the schedule is applied per training step, not per
dataset: at progress ``p = step / train.max_steps`` the template keeps a fraction ``keep(p)`` (compressed by
:class:`~tunelab.promptintern.compress.Compressor`) and the prompt shows the first ``shots(p)`` of the
sample's examples, so the model ends on the bare query (the rows of each step: :mod:`tunelab.promptintern.rows`).

Schedules (the paper ships data at 100 %, 60 % and 30 % of the template, no schedule):

* ``stages``: ``[{until: p, keep: f, shots: k}, ...]``; default 4 quarters: (1.0, S), (0.6, S/2),
  (0.3, S/4), (0.0, 0) with ``S = shots`` (fractions of ``S`` rounded up);
* ``linear`` / ``cosine``: from (``keep_start``, ``shots_start``) to (``keep_end``, ``shots_end``),
  quantised to ``levels`` levels (cosine: ``(1 - cos(pi p)) / 2``), so tokenising stays cheap;
* ``constant``: (``keep_start``, ``shots_start``) throughout (``keep_start: 1`` is "fine-tune with the full
  prompt", ``keep_start: 0, shots_start: 0`` "fine-tune with the query only").

The transform lives here, above the data layer, so the data layer's registry cannot find it by itself:
:func:`register_transform` adds it to :data:`~tunelab.data.transforms.TRANSFORMS` (the runner calls it,
as it registers the environments' eval tasks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from tunelab.config import ConfigError, RunConfig
from tunelab.data.prompt_parts import PARTS_KEY, Example, PromptParts, query_turn, render, with_user_text
from tunelab.data.transforms.base import TRANSFORMS, BaseTransform, Removed, TransformContext, build_transform
from tunelab.promptintern.compress import Compressor
from tunelab.promptintern.examples import rank_examples
from tunelab.promptintern.prompt_sets import get_prompt_set
from tunelab.types import Sample

DEFAULT_SHOTS = 4
"""Examples of a full prompt when neither ``shots`` nor a prompt set says."""


class PromptIntern(BaseTransform):
    """PromptIntern: the template is compressed and the examples absorbed as training goes (per step)."""

    @dataclass
    class Params:
        """The transform's recipe keys."""

        prompt: str | None = None
        """A built-in prompt set (``gsm8k_cot``, ``mbpp_long``, ``arith_rules``): its template and examples."""
        template: str | None = None
        """The template text (overrides the prompt set's; none: the set's, else the samples' own)."""
        examples: Literal["auto", "prompt", "source", "own"] = "auto"
        """Example pool: the prompt set's, the other samples of the same source, or the samples' own
        (``prompt_structure`` rows); ``auto``: the set's when ``prompt`` is given, else their own."""
        shots: int | None = None
        """Examples in the full prompt (default: the prompt set's, else 4)."""
        select: Literal["similarity", "random"] = "similarity"
        """Examples most similar to the query (word-count cosine) or a seeded random choice."""
        schedule: Literal["stages", "linear", "cosine", "constant"] = "stages"
        """How the kept template fraction and the number of examples fall with training progress."""
        stages: list[dict[str, float]] = field(default_factory=list)
        """``[{until: progress, keep: fraction, shots: k}, ...]`` (``schedule: stages``; default: quarters)."""
        keep_start: float = 1.0
        """Template fraction at the start (``linear`` / ``cosine`` / ``constant``)."""
        keep_end: float = 0.0
        """Template fraction at the end (``linear`` / ``cosine``)."""
        shots_start: int | None = None
        """Examples at the start (default: ``shots``)."""
        shots_end: int = 0
        """Examples at the end (``linear`` / ``cosine``)."""
        levels: int = 5
        """Distinct levels a ``linear`` / ``cosine`` schedule is quantised to (>= 2)."""
        unit: Literal["sentence", "word"] = "sentence"
        """What template compression drops: sentences (and lines) or words."""
        score: Literal["surprisal", "position", "random"] = "surprisal"
        """How units are ranked: mean token surprisal under ``score_model`` (predictable units go first),
        position (earlier units first) or seeded random."""
        score_model: str | None = None
        """The model that scores surprisal (None: the run's base model)."""
        seed: int = 0
        """Seed of random example choice and random scores."""

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        p = params
        self.prompt_set = None
        if p.prompt is not None:
            try:
                self.prompt_set = get_prompt_set(p.prompt)
            except ValueError as e:
                raise ConfigError(f"promptintern.prompt: {e}") from None
        if p.examples == "prompt" and self.prompt_set is None:
            raise ConfigError("promptintern.examples: 'prompt' needs a prompt set (prompt: <name>)")
        self.shots = p.shots if p.shots is not None else (self.prompt_set.shots if self.prompt_set else DEFAULT_SHOTS)
        if self.shots < 0 or p.shots_end < 0 or (p.shots_start or 0) < 0:
            raise ConfigError("promptintern: shots, shots_start and shots_end must be >= 0")
        for key in ("keep_start", "keep_end"):
            if not 0 <= getattr(p, key) <= 1:
                raise ConfigError(f"promptintern.{key}: must be in [0, 1], got {getattr(p, key)}")
        if p.levels < 2:
            raise ConfigError(f"promptintern.levels: must be >= 2, got {p.levels}")
        self.stages = self._stages()

    @property
    def pool_kind(self) -> str:
        """The example pool in use: ``prompt`` | ``source`` | ``own``."""
        if self.params.examples != "auto":
            return self.params.examples
        return "prompt" if self.prompt_set is not None else "own"

    def _stages(self) -> list[tuple[float, float, int]]:
        """``(until, keep, shots)`` of a stages schedule, checked."""
        s = self.shots
        specs = self.params.stages or [{"until": 0.25, "keep": 1.0, "shots": s},
                                       {"until": 0.5, "keep": 0.6, "shots": math.ceil(s / 2)},
                                       {"until": 0.75, "keep": 0.3, "shots": math.ceil(s / 4)},
                                       {"until": 1.0, "keep": 0.0, "shots": 0}]
        out, last = [], 0.0
        for i, st in enumerate(specs):
            where = f"promptintern.stages[{i}]"
            unknown = set(st) - {"until", "keep", "shots"}
            if unknown or "until" not in st:
                raise ConfigError(f"{where}: keys are until, keep, shots (until required), got {sorted(st)}")
            until, keep, shots = float(st["until"]), float(st.get("keep", 1.0)), st.get("shots", s)
            if not last < until <= 1 or not 0 <= keep <= 1 or int(shots) != shots or shots < 0:
                raise ConfigError(f"{where}: need {last} < until <= 1, keep in [0, 1], shots a count >= 0; got {st}")
            out.append((until, keep, int(shots)))
            last = until
        return out

    def level(self, progress: float) -> tuple[float, int]:
        """(template kept fraction, examples) at training progress in [0, 1]."""
        p = self.params
        start_shots = self.shots if p.shots_start is None else p.shots_start
        if p.schedule == "constant":
            return p.keep_start, start_shots
        if p.schedule == "stages":
            return next(((k, n) for until, k, n in self.stages if progress < until), self.stages[-1][1:])
        g = min(max(progress, 0.0), 1.0)
        if p.schedule == "cosine":
            g = (1 - math.cos(math.pi * g)) / 2
        j = round(g * (p.levels - 1)) / (p.levels - 1)  # quantised: at most ``levels`` distinct levels
        return (round(p.keep_start + (p.keep_end - p.keep_start) * j, 6),
                round(start_shots + (p.shots_end - start_shots) * j))

    def plan(self, max_steps: int) -> list[tuple[float, int]]:
        """The level of every training step (0-based ``step``, progress ``step / max_steps``)."""
        return [self.level(step / max_steps) for step in range(max_steps)]

    def compressor(self, default_model: str) -> Compressor:
        """The template compressor of these params (surprisal under ``score_model``, else ``default_model``)."""
        p = self.params
        return Compressor(p.unit, p.score, p.score_model or default_model, p.seed)

    # -- the transform: attach parts, render the full prompt ------------------------------------------------

    def _parts(self, s: Sample) -> PromptParts:
        own = PromptParts.from_meta(s.meta[PARTS_KEY]) if PARTS_KEY in s.meta else None
        query = own.query if own else str(s.messages[query_turn(s.messages)]["content"])
        template = self.params.template
        if template is None:
            template = self.prompt_set.template if self.prompt_set else (own.template if own else "")
        return PromptParts(template, own.examples if own else [], query, s.response())

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        parts = [self._parts(s) for s in samples]
        kind = self.pool_kind
        if kind == "own":
            for pt in parts:
                pt.examples = [pt.examples[i] for i in rank_examples(
                    [pt.query], pt.examples, self.params.select, self.shots, seed=self.params.seed)[0]]
        else:
            pool = (self.prompt_set.examples() if kind == "prompt"
                    else [Example(pt.query, pt.answer) for pt in parts])
            keys = [str(s.meta.get("id", i)) for i, s in enumerate(samples)]
            chosen = rank_examples([pt.query for pt in parts], pool, self.params.select, self.shots,
                                   seed=self.params.seed, keys=keys, exclude_same=kind == "source")
            for pt, idx in zip(parts, chosen):
                pt.examples = [pool[i] for i in idx]
        out = []
        for s, pt in zip(samples, parts):
            messages = with_user_text(s.messages, render(pt.template, pt.examples, pt.query))
            out.append(Sample(messages, {**s.meta, PARTS_KEY: pt.to_meta()}))
        return out, {}


def promptintern_spec(transforms: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The recipe's ``promptintern`` transform spec, or None (more than one is an error)."""
    specs = [t for t in transforms if isinstance(t, dict) and t.get("name") == "promptintern"]
    if len(specs) > 1:
        raise ConfigError("data.transforms: at most one promptintern transform")
    return specs[0] if specs else None


def recipe_transform(cfg: RunConfig) -> PromptIntern | None:
    """The recipe's ``promptintern`` transform, built from its spec (None without one)."""
    spec = promptintern_spec(cfg.data.transforms)
    return None if spec is None else build_transform(spec, "data.transforms (promptintern)")


def register_transform() -> None:
    """Register the ``promptintern`` data transform (again: the same definition replaces itself).

    Registering does not import the transforms package (only looking a transform up does).
    """
    TRANSFORMS.register("promptintern")(PromptIntern)
