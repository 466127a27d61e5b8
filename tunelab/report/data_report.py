"""How ``tunelab data inspect`` shows a recipe's data: the mixture, samples with their loss mask, text
histograms of lengths, what decontamination indexed and removed.

The data is built exactly as a run builds it (:func:`tunelab.runner.data.prepare_data`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tunelab.config import load_recipe
from tunelab.data.tokenize import IGNORE, Encoded
from tunelab.models.load import load_tokenizer
from tunelab.runner.data import prepare_data
from tunelab.runner.validate import validate


def render_mask(e: Encoded, tok, width: int = 2000) -> str:
    """The sample's text with trained spans wrapped in [[ ]] (what the loss sees)."""
    out, trained_prev = [], False
    labels = {t + 1 for t, y in enumerate(e.targets) if y != IGNORE}  # positions whose token is a label
    for pos, tid in enumerate(e.input_ids):
        trained = pos in labels
        if trained != trained_prev:
            out.append("[[" if trained else "]]")
            trained_prev = trained
        out.append(tok.decode([tid]))
    if trained_prev:
        out.append("]]")
    text = "".join(out)
    return text if len(text) <= width else text[:width] + " ..."


def histogram(lengths: list[int], bins: int = 8, bar: int = 40) -> list[str]:
    """A text histogram of token lengths."""
    if not lengths:
        return ["  (empty)"]
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, (n - lo) // step)] += 1
    top = max(counts)
    return [f"  {lo + i * step:5d}-{lo + (i + 1) * step - 1:<5d} {'#' * round(bar * c / top):{bar}s} {c}"
            for i, c in enumerate(counts) if c]


def inspect_recipe(recipe: str | Path, overrides: list[str] | None = None, as_json: bool = False,
                   n_samples: int = 3) -> int:
    """Build the recipe's data exactly as ``run`` does (:func:`prepare_data`) and show it.

    With ``as_json`` stdout carries the mixture report alone: the same JSON as the run's
    ``data/mixture.json``.
    """
    cfg = load_recipe(recipe, overrides)
    validate(cfg, raise_errors=True)
    tok = load_tokenizer(cfg.model)
    data = prepare_data(cfg, tok)
    if as_json:
        print(json.dumps(data.report, indent=2, default=str))
        return 0
    r = data.report
    print(f"mixture: strategy={r['strategy']} unit={r['unit']} seed={r['seed']}  "
          f"{len(data.samples)} examples, {r['tokens']} tokens in {r['rows']} rows (fill {r['fill']})")
    print(f"{'source':14s} {'target':>7s} {'examples':>9s} {'tokens':>9s} {'realized':>9s} {'tok.frac':>9s}  removed")
    for s in r["sources"]:
        tf = s.get("realized_token_fraction")
        print(f"{s['name']:14s} {s['target_fraction']:7.3f} {s['examples']:9d} {s.get('tokens') or 0:9d} "
              f"{s['realized_fraction']:9.3f} {(tf if tf is not None else float('nan')):9.3f}  {s['removed'] or '-'}")
    for name in data.sources:
        lengths = [len(e.input_ids) for s in data.samples if s.source == name
                   and (e := data.encoded.get(id(s))) is not None]
        print(f"\ntoken lengths, {name}:")
        print("\n".join(histogram(lengths)))
    print(f"\n{n_samples} samples (loss on [[...]]):")
    for s in data.samples[:n_samples]:
        e = data.encoded.get(id(s))
        if e is not None:
            print(f"--- {s.source} / {s.meta.get('id')}\n{render_mask(e, tok)}")
    dec = r.get("decontamination")
    if dec:
        sets = ", ".join(f"{t} ({v['items']} items)" for t, v in dec["tasks"].items()) or "none"
        print(f"\ndecontamination: indexed {dec['texts_indexed']} texts of {sets} ({dec['n']}-grams)")
        if dec["items_too_short_to_check"]:
            print(f"  {len(dec['items_too_short_to_check'])} item(s) shorter than {dec['n']} words cannot be "
                  f"checked: {', '.join(dec['items_too_short_to_check'][:10])}")
        for hit in r.get("transform_stats", {}).get("contaminated", []):
            print(f"  removed {hit['source']}/{hit['id']}: overlaps {hit.get('eval_item') or hit['eval_index']} "
                  f"on {hit['ngram']!r}")
    return 0
