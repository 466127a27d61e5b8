"""sources -> transforms -> mixture (with provenance) -> tokenize -> pack.

The one place that composes the data layer. The runner calls :func:`build_data` for both
``tunelab run`` and ``tunelab data inspect`` (``tunelab.runner.data.prepare_data``), with the
same context (tokenizer, evaluation texts, seed), so what is inspected is what is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunelab.config import RunConfig
from tunelab.data.choices import build_choice_rows
from tunelab.data.mixing import mix
from tunelab.data.preference import build_pref_rows
from tunelab.data.sources import load_source
from tunelab.data.tokenize import Encoded, Row, encode, pack
from tunelab.data.transforms.base import TransformContext, apply_transforms, build_transforms
from tunelab.io import DataError
from tunelab.types import Sample


@dataclass
class DataBundle:
    sources: list[str]
    samples: list[Sample]  # the realised mixture, in training order
    rows: list[Row]  # packed training rows
    heldout_rows: list[Row]
    report: dict[str, Any]
    encoded: dict[int, Encoded | None] = field(default_factory=dict, repr=False)


class Encoder:
    """Tokenize samples once (cached by object identity) for filters, mixing and packing."""

    def __init__(self, tok, max_length: int, truncation: str) -> None:
        self.tok, self.max_length, self.truncation = tok, max_length, truncation
        self.cache: dict[int, Encoded | None] = {}
        self._keep: list[Sample] = []  # keep samples alive so ids stay unique

    def __call__(self, sample: Sample) -> Encoded | None:
        key = id(sample)
        if key not in self.cache:
            self._keep.append(sample)
            self.cache[key] = encode(sample, self.tok, self.max_length, self.truncation)
        return self.cache[key]

    def count_tokens(self, sample: Sample) -> int:
        e = self(sample)
        return len(e.input_ids) if e is not None else self.max_length + 1


def _check_kind(samples: list[Sample], kind: str) -> None:
    """Preference objectives need pairs (``meta["rejected"]``) or labelled examples (``meta["label"]``)."""
    need, how = {"pairs": ("rejected", "format: preference, or the pairs transform over trajectories"),
                 "unpaired": ("label", "format: unpaired, or the kto_labels transform over trajectories")}[kind]
    for s in samples:
        if need not in s.meta:
            raise DataError(f"source {s.source!r}, example {s.meta.get('id')!r}: field {need!r} missing; "
                            f"a {kind} objective needs {how}")


def build_data(cfg: RunConfig, tok, eval_texts: list[str] | None = None,
               eval_ids: list[str] | None = None, kind: str = "tokens") -> DataBundle:
    """Realise the recipe's data: per-source loading and curation, mixing, tokenising, packing.

    Args:
        cfg: The recipe.
        tok: The run's tokenizer.
        eval_texts: Texts of the evaluation sets (decontamination).
        eval_ids: ``task/item id`` of each evaluation text, for the report.
        kind: What the objective trains on: ``tokens`` (packed token rows), ``pairs`` /
            ``unpaired`` (one :class:`~tunelab.data.preference.SeqRow` per example, unpacked; the
            held-out rows are token rows: the chosen or labelled completions' loss) or ``choices``
            (one SeqRow of (prompt, choice) sequences per example, :mod:`tunelab.data.choices`; the
            held-out rows are such rows too).

    Transforms marked ``heldout_too`` (decontamination) also filter the held-out examples;
    what they removed there is reported per source as ``heldout_removed``.
    """
    d = cfg.data
    enc = Encoder(tok, d.max_length, d.truncation)
    ctx = TransformContext(count_tokens=enc.count_tokens, eval_texts=list(eval_texts or []),
                           eval_ids=list(eval_ids or []), seed=d.seed)
    transforms = build_transforms(d.transforms)
    pools: dict[str, list[Sample]] = {}
    heldout: list[Sample] = []
    removed: dict[str, dict[str, int]] = {}
    heldout_removed: dict[str, dict[str, int]] = {}
    origins: dict[str, str] = {}
    for src in d.sources:
        loaded = load_source(src, cfg.recipe_dir, d.seed, d.heldout)
        if not loaded.train and not loaded.heldout and not loaded.removed:
            raise DataError(f"source {src.name!r}: {loaded.origin} has no rows")
        kept, rem = apply_transforms(loaded.train, transforms, ctx)
        held, heldout_removed[src.name] = apply_transforms(
            loaded.heldout, [t for t in transforms if getattr(t, "heldout_too", False)], ctx)
        pools[src.name], heldout = kept, heldout + held
        removed[src.name] = {**loaded.removed, **rem}
        origins[src.name] = loaded.origin
    names = [s.name for s in d.sources]
    samples, report = mix(pools, d, {s.name: s.weight for s in d.sources},
                          {s.name: s.count for s in d.sources}, enc.count_tokens)
    encoded = [enc(s) for s in samples]
    too_long = {n: 0 for n in names}
    for s, e in zip(samples, encoded):
        if e is None:
            too_long[s.source] += 1
    for entry in report["sources"]:
        entry["removed"] = {**removed[entry["name"]], **({"too_long": too_long[entry["name"]]}
                                                         if too_long[entry["name"]] else {})}
        entry["origin"] = origins[entry["name"]]
        if heldout_removed[entry["name"]]:
            entry["heldout_removed"] = heldout_removed[entry["name"]]
    if kind == "tokens":
        rows = pack([e for e in encoded if e is not None], names, d.max_length, d.packing)
    elif kind == "choices":
        rows, dropped = build_choice_rows([s for s, e in zip(samples, encoded) if e is not None], tok, names,
                                          d.max_length)
        report["choices"] = {"examples": len(rows), "dropped_too_long": dropped}
    else:
        _check_kind(samples, kind)
        rows, dropped = build_pref_rows([s for s, e in zip(samples, encoded) if e is not None], kind, tok,
                                        names, d.max_length, d.truncation, d.seed)
        report["preference"] = {"kind": kind, "examples": len(rows), "dropped_too_long": dropped}
    held = [e for e in (enc(s) for s in heldout) if e is not None]
    if kind == "choices":
        heldout_rows = build_choice_rows([s for s in heldout if enc(s) is not None], tok, names, d.max_length)[0]
    else:
        heldout_rows = pack(held, names, d.max_length, d.packing)
    n_tok = sum(r.tokens for r in rows)
    report.update({
        "rows": len(rows), "tokens": n_tok,
        "target_tokens": sum(e.n_targets for e in encoded if e is not None),
        "packing": d.packing and kind == "tokens", "max_length": d.max_length,
        "fill": round(n_tok / max(1, len(rows) * d.max_length), 4) if d.packing and kind == "tokens" else None,
        "heldout_examples": len(held), "transforms": d.transforms,
    })
    if ctx.stats:
        report["transform_stats"] = ctx.stats
    return DataBundle(names, samples, rows, heldout_rows, report, enc.cache)
