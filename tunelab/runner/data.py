"""The data a run trains on, built once for ``tunelab run`` and ``tunelab data inspect`` alike
(:func:`tunelab.report.data_report.inspect_recipe` shows it).

:func:`prepare_data` gives the data pipeline its whole context: the run's tokenizer, the seed, and
the texts of every evaluation set the recipe names (test split, every item, not only the
``eval.limit`` items of this run: a later evaluation may use more), so decontamination finds the
same overlaps in both, and the report says which sets were indexed and how many items.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tunelab.config import RunConfig
from tunelab.data.pipeline import DataBundle, build_data
from tunelab.data.transforms.base import words
from tunelab.data.transforms.filters import Decontaminate
from tunelab.eval.tasks.base import get_task
from tunelab.runner.generated import resolve_generated
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
        wanted = cfg.eval.items_for(name)
        if wanted and wanted > len(items):  # a family's default set is smaller than what this run evaluates
            seen = {item.id for item in items}
            items = items + [item for item in task.items(wanted, cfg.eval.seed) if item.id not in seen]
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
