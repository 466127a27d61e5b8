"""PromptIntern's example selection: which few-shot examples each query gets, in which order.

:func:`rank_examples` orders a pool by similarity to the query (cosine of lowercased word counts) or in
a seeded random order; taking a prefix of the order gives the ``k`` examples, so fewer examples are
always a subset of more.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from tunelab.data.prompt_parts import Example

SELECTIONS = ("similarity", "random")

_WORDS = re.compile(r"\w+")


def _bags(texts: Sequence[str], vocab: dict[str, int]) -> sparse.csr_matrix:
    """L2-normalised word-count rows of ``texts`` (lowercased words; new words join ``vocab``)."""
    indptr, cols, vals = [0], [], []
    for text in texts:
        counts = Counter(_WORDS.findall(text.lower()))
        norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
        for w, v in counts.items():
            cols.append(vocab.setdefault(w, len(vocab)))
            vals.append(v / norm)
        indptr.append(len(cols))
    return sparse.csr_matrix((vals, cols, indptr), shape=(len(texts), max(len(vocab), 1)))


def rank_examples(queries: Sequence[str], pool: Sequence[Example], how: str = "similarity", k: int | None = None,
                  *, seed: int = 0, keys: Sequence[str] | None = None, exclude_same: bool = False) -> list[list[int]]:
    """For each query, the indices of the ``k`` examples of ``pool`` it gets, in the order they are taken.

    Args:
        queries: The items' queries.
        pool: The candidate examples.
        how: ``similarity`` (cosine of lowercased word counts, most similar first; ties: pool order) or
            ``random`` (a seeded order, a function of ``seed`` and the item's key).
        k: Examples per query (None: the whole pool).
        seed: Seed of the random order.
        keys: Stable item ids (the random order of each item; default: the query text).
        exclude_same: Never give a query an example with the same query (the pool is its own source).
    """
    if how not in SELECTIONS:
        raise ValueError(f"example selection must be one of {', '.join(SELECTIONS)}, got {how!r}")
    k = len(pool) if k is None else min(k, len(pool))
    if not queries or not pool or k == 0:
        return [[] for _ in queries]
    keys = list(keys) if keys is not None else list(queries)
    if how == "random":
        out = []
        for q, key in zip(queries, keys):
            idx = [i for i, e in enumerate(pool) if not (exclude_same and e.query == q)]
            out.append(random.Random(f"examples/{seed}/{key}").sample(idx, min(k, len(idx))))
        return out
    vocab: dict[str, int] = {}
    p = _bags([e.query for e in pool], vocab)
    q = _bags(queries, vocab)
    width = max(len(vocab), 1)  # the pool's matrix was built before the queries' words joined
    p = sparse.csr_matrix((p.data, p.indices, p.indptr), shape=(p.shape[0], width))
    q = sparse.csr_matrix((q.data, q.indices, q.indptr), shape=(q.shape[0], width))
    sims = (q @ p.T).toarray()  # (queries, pool)
    if exclude_same:
        where: dict[str, list[int]] = {}
        for i, e in enumerate(pool):
            where.setdefault(e.query, []).append(i)
        for r, text in enumerate(queries):
            sims[r, where.get(text, [])] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")
    return [[int(i) for i in row if np.isfinite(sims[r, i])][:k] for r, row in enumerate(order)]
