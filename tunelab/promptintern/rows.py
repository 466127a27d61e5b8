"""PromptIntern's rows per training step: every level of the schedule tokenised once.

:func:`stage_rows` gives the runner ``TrainJob.rows_at``: the rows of every distinct level of the
schedule (:mod:`tunelab.promptintern.schedule`), row ``i`` always made of the same samples (packed rows
keep the full prompt's grouping), so batches and resume stay exact. Held-out loss stays on the sources'
own samples: the bare query. Surprisal compression scores with the scorer the caller passes in (the
runner's, of the run's base model or the transform's ``score_model``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tunelab.config import RunConfig
from tunelab.data.prompt_parts import PARTS_KEY, PromptParts, render, with_user_text
from tunelab.data.tokenize import Row, encode, pack
from tunelab.io import DataError
from tunelab.promptintern.compress import Compressor
from tunelab.promptintern.schedule import PromptIntern, recipe_transform
from tunelab.types import Sample

if TYPE_CHECKING:
    from tunelab.models.surprisal import Scorer


def rendered(sample: Sample, keep: float, shots: int, compressor: Compressor,
             scorer: Scorer | None = None) -> Sample:
    """``sample`` (with prompt parts) at one level: the template compressed to ``keep``, the first ``shots``
    examples; a sample without parts is returned as it is."""
    if PARTS_KEY not in sample.meta:
        return sample
    pt = PromptParts.from_meta(sample.meta[PARTS_KEY])
    template = compressor.compress(pt.template, keep, scorer) if pt.template else ""
    return Sample(with_user_text(sample.messages, render(template, pt.examples[:shots], pt.query)), sample.meta)



class StageRows:
    """``TrainJob.rows_at`` of a PromptIntern run: the rows of each step's level (tokenised once per level)."""

    def __init__(self, plan: list[tuple[float, int]], rows: dict[tuple[float, int], list[Row]],
                 report: dict[str, Any]) -> None:
        self.plan, self.rows, self.report = plan, rows, report

    def __call__(self, step: int) -> list[Row]:
        """The rows of 0-based ``step`` (steps past the plan keep its last level)."""
        return self.rows[self.plan[min(step, len(self.plan) - 1)]]



def _groups(samples: list[Sample], tok, cfg: RunConfig, sources: list[str], rows: list[Row]) -> list[list[int]]:
    """Which samples (indices) make each training row, found by packing the full prompts again exactly as
    the data pipeline did (checked against its rows)."""
    d = cfg.data
    encoded = []
    for i, s in enumerate(samples):
        e = encode(s, tok, d.max_length, d.truncation)
        if e is not None:
            encoded.append(replace(e, id=str(i)))
    packed = pack(encoded, sources, d.max_length, d.packing)
    if len(packed) != len(rows) or any(a.input_ids != b.input_ids for a, b in zip(packed, rows)):
        raise DataError("promptintern: the training rows do not match the samples they were built from")
    return [[int(i) for i in r.ids] for r in packed]


def stage_rows(cfg: RunConfig, tok, samples: list[Sample], rows: list[Row], sources: list[str],
               scorer: Scorer | None = None) -> StageRows | None:
    """The per-step rows of a recipe with a ``promptintern`` transform (None without one).

    Args:
        cfg: The recipe (``train.max_steps``, ``data.max_length`` / ``packing``, ``model.name``).
        tok: The run's tokenizer.
        samples: The realised mixture (``DataBundle.samples``), full prompts with parts.
        rows: Their training rows (``DataBundle.rows``).
        sources: Source names (``DataBundle.sources``).
        scorer: The surprisal scorer of the transform's ``score_model``, else of the run's base model
            (needed by ``score: surprisal`` when a template is compressed).
    """
    t = recipe_transform(cfg)
    if t is None:
        return None
    compressor = t.compressor(cfg.model.name)
    plan = t.plan(cfg.train.max_steps)
    groups = _groups(samples, tok, cfg, sources, rows)
    index = {s: i for i, s in enumerate(sources)}
    by_level: dict[tuple[float, int], list[Row]] = {}
    for lv in dict.fromkeys(plan):
        encoded = {}
        for i in sorted({i for g in groups for i in g}):
            e = encode(rendered(samples[i], lv[0], lv[1], compressor, scorer), tok, cfg.data.max_length, "right")
            encoded[i] = e
        by_level[lv] = []
        for g in groups:
            row = Row()
            for i in g:
                row.add(encoded[i], index[encoded[i].source])
            by_level[lv].append(row)
    return StageRows(plan, by_level, _report(t, plan, by_level, compressor))


def _report(t: PromptIntern, plan: list[tuple[float, int]], by_level: dict[tuple[float, int], list[Row]],
            compressor: Compressor) -> dict[str, Any]:
    """What each level trains on: its steps, template fraction, examples, prompt and target tokens."""
    levels = []
    for lv, rows in by_level.items():
        steps = [k for k, x in enumerate(plan) if x == lv]
        tokens = sum(len(r.input_ids) for r in rows)
        targets = sum(sum(x != -100 for x in r.targets) for r in rows)
        levels.append({"keep": lv[0], "shots": lv[1], "first_step": steps[0], "last_step": steps[-1],
                       "steps": len(steps), "tokens_per_row": round(tokens / max(1, len(rows)), 1),
                       "prompt_tokens_per_row": round((tokens - targets) / max(1, len(rows)), 1)})
    p = t.params
    return {"schedule": p.schedule, "shots": t.shots, "examples": t.pool_kind, "select": p.select,
            "compression": {"unit": compressor.unit, "score": compressor.score,
                            "model": compressor.model if compressor.score == "surprisal" else None,
                            "seed": compressor.seed},
            "levels": levels}
