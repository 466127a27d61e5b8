"""Filters: exact and near deduplication, length, empty/degenerate and refusal responses,
decontamination against evaluation sets, and a per-source cap.

Each is registered by the name used in recipes (``data.transforms: [{name: dedup}]``) and
reports what it removed by reason.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from datasketch import MinHash, MinHashLSH

from tunelab.data.transforms.base import (
    TRANSFORMS,
    BaseTransform,
    Removed,
    TransformContext,
    normalize,
    sample_text,
    words,
)
from tunelab.types import Sample

Part = Literal["all", "prompt", "response"]


@TRANSFORMS.register("dedup")
class Dedup(BaseTransform):
    """Exact deduplication on the normalised text (lowercase, collapsed spaces) of the turns."""

    @dataclass
    class Params:
        on: Part = "all"
        """Which turns to compare: ``all`` | ``prompt`` | ``response``."""

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        seen: set[str] = set()
        kept = []
        for s in samples:
            key = normalize(sample_text(s, self.params.on))
            if key not in seen:
                seen.add(key)
                kept.append(s)
        return kept, _count("duplicate", len(samples) - len(kept))


@TRANSFORMS.register("near_dedup")
class NearDedup(BaseTransform):
    """Near-duplicate removal with MinHash LSH (Broder, 1997) on word n-gram shingles.

    A sample is dropped when its estimated Jaccard similarity to an earlier kept sample is
    at least ``threshold``. Hashing is seeded with ``ctx.seed``.
    """

    @dataclass
    class Params:
        threshold: float = 0.8
        """Jaccard similarity at or above which two samples count as near duplicates."""
        num_perm: int = 128
        """MinHash permutations (more: slower, more accurate)."""
        ngram: int = 5
        """Words per shingle."""
        on: Part = "all"
        """Which turns to compare: ``all`` | ``prompt`` | ``response``."""

    def _minhash(self, text: str, seed: int) -> Any:
        toks = words(text)
        n = self.params.ngram
        shingles = {" ".join(toks[i:i + n]) for i in range(max(1, len(toks) - n + 1))}
        m = MinHash(num_perm=self.params.num_perm, seed=seed)
        m.update_batch([s.encode() for s in shingles])
        return m

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        p = self.params
        lsh = MinHashLSH(threshold=p.threshold, num_perm=p.num_perm)
        hashes: dict[str, Any] = {}
        kept = []
        for i, s in enumerate(samples):
            m = self._minhash(sample_text(s, p.on), ctx.seed)
            if any(m.jaccard(hashes[k]) >= p.threshold for k in lsh.query(m)):
                continue
            key = str(i)
            lsh.insert(key, m)
            hashes[key] = m
            kept.append(s)
        return kept, _count("near_duplicate", len(samples) - len(kept))


@TRANSFORMS.register("length")
class Length(BaseTransform):
    """Drop samples that are too short or too long.

    Token limits use the run's tokenizer (``ctx.count_tokens``); without one, tokens are
    estimated as characters / ``chars_per_token``. Character limits apply as well.
    """

    @dataclass
    class Params:
        min_tokens: int | None = None
        """Fewest tokens a sample may have (all turns)."""
        max_tokens: int | None = None
        """Most tokens a sample may have (all turns)."""
        min_chars: int | None = None
        """Fewest characters a sample may have (all turns)."""
        max_chars: int | None = None
        """Most characters a sample may have (all turns)."""
        chars_per_token: float = 4.0
        """Estimate used for the token limits when no tokenizer is at hand."""

    def keep(self, sample: Sample, ctx: TransformContext) -> bool | str:
        p = self.params
        chars = len(sample_text(sample))
        if ctx.count_tokens is not None:
            tokens = ctx.count_tokens(sample)
        else:
            tokens = math.ceil(chars / p.chars_per_token)
        if (p.min_tokens is not None and tokens < p.min_tokens) or (p.min_chars is not None and chars < p.min_chars):
            return "too_short"
        if (p.max_tokens is not None and tokens > p.max_tokens) or (p.max_chars is not None and chars > p.max_chars):
            return "too_long"
        return True


_ALNUM = re.compile(r"\w")


@TRANSFORMS.register("empty_response")
class EmptyResponse(BaseTransform):
    """Drop samples with an empty or degenerate assistant turn.

    Degenerate: no letter or digit at all (only punctuation), or one word repeated
    ``min_repeats`` times or more ("ha ha ha").
    """

    @dataclass
    class Params:
        min_repeats: int = 3
        """A response made of one word repeated this many times or more is degenerate."""

    def keep(self, sample: Sample, ctx: TransformContext) -> bool | str:
        responses = [str(m["content"]) for m in sample.messages if m["role"] == "assistant"]
        if not responses or any(not r.strip() for r in responses):
            return "empty_response"
        for r in responses:
            toks = r.lower().split()
            if not _ALNUM.search(r) or (len(toks) >= self.params.min_repeats and len(set(toks)) == 1):
                return "degenerate_response"
        return True


DEFAULT_REFUSALS = [
    "as an ai language model", "as a language model", "as an ai model", "as an ai assistant",
    "i'm sorry", "i am sorry", "i apologize", "i cannot", "i can't", "i'm not able to",
    "i am not able to", "i'm unable to", "i am unable to", "i won't be able to",
    "i don't have the ability", "i do not have the ability", "against my programming",
    "openai's content policy", "it is not appropriate for me",
]


@TRANSFORMS.register("refusal")
class Refusal(BaseTransform):
    """Drop samples whose assistant turns read like refusals ("As an AI language model ...").

    Matching is case-insensitive, with typographic apostrophes read as ``'``.
    """

    reason = "refusal"

    @dataclass
    class Params:
        phrases: list[str] = field(default_factory=lambda: list(DEFAULT_REFUSALS))
        """Refusal phrases (lowercase matching)."""
        where: Literal["anywhere", "start"] = "anywhere"
        """Match anywhere in a response, or only within its first ``start_chars`` characters."""
        start_chars: int = 200
        """With ``where: start``: how far into a response a phrase may begin."""

    def keep(self, sample: Sample, ctx: TransformContext) -> bool | str:
        p = self.params
        phrases = [ph.lower() for ph in p.phrases]
        for m in sample.messages:
            if m["role"] != "assistant":
                continue
            text = str(m["content"]).lower().replace("\u2019", "'")
            if p.where == "start":
                text = text[: p.start_chars]
            if any(ph in text for ph in phrases):
                return False
        return True


@TRANSFORMS.register("decontaminate")
class Decontaminate(BaseTransform):
    """Drop training samples sharing any word n-gram with an evaluation text.

    The GPT-3 style check (Brown et al., 2020, appendix C): lowercase word n-grams, n=13 by
    default. Evaluation texts shorter than n words are not checked. The overlaps found are
    kept in ``last_overlaps`` (and appended to ``ctx.stats["contaminated"]``) as
    ``{"id", "source", "eval_index", "eval_item", "ngram"}`` (``eval_item``: ``task/item id``
    where the context names it). Applied to the held-out examples too.
    """

    heldout_too = True

    @dataclass
    class Params:
        n: int = 13
        """Words per n-gram."""
        on: Part = "all"
        """Which turns of a training sample to check: ``all`` | ``prompt`` | ``response``."""

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.last_overlaps: list[dict[str, Any]] = []
        self._index_key: tuple[int, int] | None = None
        self._index: dict[tuple[str, ...], int] = {}

    def _ngrams(self, text: str) -> list[tuple[str, ...]]:
        toks, n = words(text), self.params.n
        return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]

    def _eval_index(self, texts: list[str]) -> dict[tuple[str, ...], int]:
        key = (hash(tuple(texts)), self.params.n)
        if key != self._index_key:
            self._index = {}
            for i, text in enumerate(texts):
                for g in self._ngrams(text):
                    self._index.setdefault(g, i)
            self._index_key = key
        return self._index

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        index = self._eval_index(ctx.eval_texts)
        kept, self.last_overlaps = [], []
        for s in samples:
            hit = next((g for g in self._ngrams(sample_text(s, self.params.on)) if g in index), None)
            if hit is None:
                kept.append(s)
                continue
            i = index[hit]
            self.last_overlaps.append({
                "id": s.meta.get("id"), "source": s.source, "eval_index": i,
                "eval_item": ctx.eval_ids[i] if i < len(ctx.eval_ids) else None, "ngram": " ".join(hit),
            })
        ctx.stats.setdefault("contaminated", []).extend(self.last_overlaps)
        return kept, _count("contaminated", len(self.last_overlaps))


@TRANSFORMS.register("cap")
class Cap(BaseTransform):
    """Keep at most ``max_examples`` samples of the source (a seeded choice, order kept)."""

    @dataclass
    class Params:
        max_examples: int
        """Most samples kept per source."""

    def __call__(self, samples: list[Sample], ctx: TransformContext) -> tuple[list[Sample], Removed]:
        k = self.params.max_examples
        if len(samples) <= k:
            return list(samples), {}
        keep = sorted(random.Random(f"cap/{ctx.seed}").sample(range(len(samples)), k))
        return [samples[i] for i in keep], _count("capped", len(samples) - k)


def _count(reason: str, n: int) -> Removed:
    return {reason: n} if n else {}
