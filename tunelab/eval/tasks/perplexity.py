"""Held-out loss and perplexity of reference answers, per source.

Each item is one example: the turns before its last assistant turn are the prompt (rendered with
the chat template and its generation prompt, as at inference), the last assistant turn is scored.
``loss`` is the mean negative log-likelihood per answer token (summed over items, divided by their
answer tokens: long answers weigh more, as in training); ``perplexity = exp(loss)``. Both come
with a percentile-bootstrap CI that resamples items, overall and per source (``loss/<source>``).
The answer text is scored without its end-of-turn token, so the figure sits slightly apart
from the training loss (which also covers that token); compare runs with this task, not with
``metrics.jsonl``.
Like ``nlp_mc`` it needs a model behind a log-likelihood scorer (``kind = "loglik"``).

Sources are the recipe's source entries (``{name, task | path | hub, split, format, fields}``)
or a comma-separated list of built-in families (their ``split``, ``test`` by default)::

    tunelab eval RUN --tasks perplexity --task-option perplexity.sources=arith,code
    tunelab eval RUN --tasks perplexity --task-option 'perplexity.sources=[{name: mine, path: held.jsonl}]'
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from typing import Any, ClassVar

from tunelab.config import SourceConfig, from_dict
from tunelab.data.sources import load_source
from tunelab.eval.stats import ratio_of_sums
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask

DEFAULT_ITEMS = 200


@EVAL_TASKS.register("perplexity")
class Perplexity(EvalTask):
    """Loss / perplexity of the reference answers of one or more sources (per source and overall).

    Options:
        sources: Built-in family names (``"arith,code"``) or a list of recipe source entries.
        split: The families' split (``test`` or ``ood``); file sources use all their rows.
    """

    kind: ClassVar[str] = "loglik"
    primary = "loss"
    needs_token_counts: ClassVar[bool] = True

    def __init__(self, sources: str | list[Any] = "arith", split: str = "test") -> None:
        entries = (
            [s.strip() for s in sources.split(",") if s.strip()] if isinstance(sources, str) else sources
        )
        self.sources: list[SourceConfig] = []
        for e in entries:
            spec = {"name": e, "task": e, "split": split} if isinstance(e, str) else dict(e)
            spec.setdefault("name", spec.get("task") or spec.get("path") or spec.get("hub"))
            self.sources.append(from_dict(SourceConfig, spec, "perplexity.sources"))
        if not self.sources:
            raise ValueError("perplexity: no sources given")

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        """Up to ``limit`` examples per source (default 200), those with an assistant answer."""
        n = limit or DEFAULT_ITEMS
        items = []
        for src in self.sources:
            loaded = load_source(replace(src, count=n) if src.task else src, None, seed, heldout=0)
            for s in [s for s in loaded.train if s.response()][:n]:
                meta = {"source": src.name, "choices": [s.response()]}
                items.append(EvalItem(f"{src.name}/{s.meta.get('id')}", s.prompt_messages(), meta))
        return items

    def score_choices(self, item: EvalItem, logliks: list[float], tokens: list[int]) -> dict[str, Any]:
        nll, n = -logliks[0], tokens[0]
        return {
            "source": item.meta["source"],
            "nll": round(nll, 4),
            "tokens": n,
            "loss": round(nll / max(1, n), 4),
        }

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        def scores(rs: list[dict[str, Any]], suffix: str = "") -> dict[str, dict]:
            loss = ratio_of_sums([r["nll"] for r in rs], [r["tokens"] for r in rs])
            ppl = {"value": math.exp(loss["value"]), "ci": [math.exp(c) for c in loss["ci"]], "n": loss["n"]}
            return {f"loss{suffix}": loss, f"perplexity{suffix}": ppl}

        out = scores(rows)
        by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_source[r["source"]].append(r)
        if len(by_source) > 1:
            for name, rs in sorted(by_source.items()):
                out.update(scores(rs, f"/{name}"))
        return out
