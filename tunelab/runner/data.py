"""The data a run trains on, built once for ``tunelab run`` and ``tunelab data inspect`` alike.

:func:`prepare_data` gives the data pipeline its whole context: the run's tokenizer, the seed, and
the texts of every evaluation set the recipe names (test split, every item, not only the
``eval.limit`` items of this run: a later evaluation may use more), so decontamination finds the
same overlaps in both, and the report says which sets were indexed and how many items.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.config import RunConfig, load_recipe
from tunelab.data.pipeline import DataBundle, build_data
from tunelab.data.report import histogram, render_mask
from tunelab.data.transforms.base import words
from tunelab.data.transforms.filters import Decontaminate
from tunelab.eval.tasks.base import get_task
from tunelab.models.load import load_tokenizer
from tunelab.runner.generated import resolve_generated
from tunelab.runner.validate import validate
from tunelab.train.objectives import build_objective


def evaluation_texts(cfg: RunConfig) -> tuple[list[str], list[str], dict[str, Any]]:
    """(texts, ``task/item id`` of each, summary) of every item of the recipe's evaluation sets.

    Read only when a transform asks for them (``decontaminate``); the summary says which sets
    were indexed and how many items each had.
    """
    texts: list[str] = []
    ids: list[str] = []
    summary: dict[str, Any] = {}
    for name in cfg.eval.tasks:
        task = get_task(name, **cfg.eval.task_options.get(name, {}))
        items = task.items(None, cfg.eval.seed)
        for item in items:
            for text in task.contamination_texts(item):
                texts.append(text)
                ids.append(f"{name}/{item.id}")
        summary[name] = {"items": len(items)}
    return texts, ids, summary


def _stderr(msg: str) -> None:
    print(f"[tunelab] {msg}", file=sys.stderr)


def prepare_data(cfg: RunConfig, tok, say: Callable[[str], None] = _stderr) -> DataBundle:
    """The recipe's data with the run's context (see the module docstring); the report says what
    decontamination indexed under ``decontamination``, and which generated sources were built or
    reused under ``generated`` (:mod:`tunelab.runner.generated`; ``say`` tells it as it happens)."""
    cfg, built = resolve_generated(cfg, say)
    texts: list[str] = []
    ids: list[str] = []
    specs = [t for t in cfg.data.transforms if t.get("name") == "decontaminate"]
    if specs:
        texts, ids, summary = evaluation_texts(cfg)
    data = build_data(cfg, tok, texts, ids, kind=build_objective(cfg.objective).kind)
    if specs:
        # texts shorter than the n-gram cannot match anything: say how many, so none go unaccounted
        n = min(int(t.get("n", Decontaminate.Params.n)) for t in specs)
        checkable = {ids[i] for i, text in enumerate(texts) if len(words(text)) >= n}
        short = sorted(set(ids) - checkable)
        data.report["decontamination"] = {"tasks": summary, "texts_indexed": len(texts), "n": n,
                                          "items_too_short_to_check": short}
    if built:
        data.report["generated"] = {name: {"file": b.path.name, "key": b.key, "reused": b.reused}
                                    for name, b in built.items()}
        for entry in data.report["sources"]:  # the cache's path differs between machines; the key does not
            if entry["name"] in built:
                entry["origin"] = built[entry["name"]].origin
    return data


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
