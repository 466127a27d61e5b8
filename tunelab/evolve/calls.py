"""Model calls of an Evol-Instruct run: an item-level cache, concurrency, and a token and cost ledger.

Every completion is stored the moment it arrives, under a key of what decides it (the role, the
model's fingerprint, the template version, the parent text, the item seed, the sampling
settings) and nothing else: a rerun with another batch size or concurrency, or a killed run
started again, asks for nothing twice. Servers get one request per item, ``concurrency`` in
flight (the shared HTTP backend retries each); a local model gets a chunk's prompts in one call
and batches them itself.
A request that fails for good stops new requests: what arrived is kept, and
:class:`GenerationFailed` names the role and the error.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Any

from tunelab.generate.base import GenerationConfig, Generator, Prompt, encode_prompt
from tunelab.io import SqliteCache, digest


class GenerationFailed(RuntimeError):
    """A request failed after the backend's retries; completions that arrived before it are cached."""


class ItemCache(SqliteCache):
    """A sqlite table ``items: key -> completion`` (safe across threads and processes); the shared
    :class:`tunelab.io.SqliteCache` under the table name item caches have always used.

    Args:
        path: The database file (its folder is created).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, "items")


def item_key(**parts: Any) -> str:
    """The cache key of one completion: a hash of the named parts (sorted)."""
    return digest(parts, 32)


class Ledger:
    """Requests, cache hits, tokens and cost per round and role, kept across resumed runs.

    Tokens are counted with the model's tokenizer where the generator has one (local models), else
    estimated as characters / 4 (servers: the shared backend does not return usage). Prices are per
    million tokens, looked up by role, then by model spec.
    """

    def __init__(self, state: dict[str, Any] | None = None, prices: dict[str, dict[str, float]] | None = None) -> None:
        self.rounds: dict[str, dict[str, dict[str, float]]] = (state or {}).get("rounds", {})
        self.counted_by: dict[str, str] = (state or {}).get("tokens_counted_by", {})
        self.prices = prices or {}
        self._lock = threading.Lock()

    def add(self, round_: int, role: str, spec: str, *, cached: int = 0, requests: int = 0,
            prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Count ``requests`` new completions (their tokens) and ``cached`` cache hits."""
        price = self.prices.get(role) or self.prices.get(spec) or {}
        cost = (prompt_tokens * price.get("input", 0.0) + completion_tokens * price.get("output", 0.0)) / 1e6
        with self._lock:
            row = self.rounds.setdefault(str(round_), {}).setdefault(role, {
                "requests": 0, "cached": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0})
            row["requests"] += requests
            row["cached"] += cached
            row["prompt_tokens"] += prompt_tokens
            row["completion_tokens"] += completion_tokens
            row["cost"] = round(row["cost"] + cost, 8)

    def state(self) -> dict[str, Any]:
        """JSON-able totals: per round and role, per role, and overall."""
        totals: dict[str, dict[str, float]] = {}
        for roles in self.rounds.values():
            for role, row in roles.items():
                acc = totals.setdefault(role, dict.fromkeys(row, 0))
                for k, v in row.items():
                    acc[k] = round(acc[k] + v, 8)
        overall = {k: round(sum(r[k] for r in totals.values()), 8) for k in
                   ("requests", "cached", "prompt_tokens", "completion_tokens", "cost")}
        return {"rounds": self.rounds, "by_role": totals, "total": overall,
                "tokens_counted_by": self.counted_by, "prices_per_million": self.prices}


def _is_server(gen: Any) -> bool:
    return hasattr(gen, "api_root")


class Caller:
    """Completions for one role (evolver, judge or answerer) through the cache and the ledger.

    Args:
        role: ``evolver`` | ``judge`` | ``answerer`` (ledger rows, price lookup).
        spec: The model spec as given (price lookup, messages).
        generator: The Generator.
        cache: The item cache.
        ledger: The ledger.
        concurrency: Requests in flight (servers) / rows per call (local models).
    """

    def __init__(self, role: str, spec: str, generator: Generator, cache: ItemCache, ledger: Ledger,
                 concurrency: int = 8) -> None:
        self.role, self.spec, self.gen = role, spec, generator
        self.cache, self.ledger, self.concurrency = cache, ledger, max(1, concurrency)
        tok = getattr(generator, "tok", None)
        self._tok = tok
        ledger.counted_by[role] = "tokenizer" if tok is not None else "estimate (4 characters per token)"

    @property
    def fingerprint(self) -> str:
        """The generator's fingerprint (what the cache keys and the rows record)."""
        return str(getattr(self.gen, "fingerprint", type(self.gen).__name__))

    def _tokens(self, prompt: Prompt | None, text: str) -> tuple[int, int]:
        if self._tok is not None:
            n_in = len(encode_prompt(self._tok, prompt)) if prompt is not None else 0
            return n_in, len(self._tok(text, add_special_tokens=False)["input_ids"])
        chars = len(prompt) if isinstance(prompt, str) else sum(len(str(m.get("content", ""))) for m in prompt or [])
        return math.ceil(chars / 4), math.ceil(len(text) / 4)

    def complete(self, round_: int, prompts: list[Prompt], keys: list[str], cfg: GenerationConfig,
                 seeds: list[int] | None = None) -> list[str]:
        """One completion per prompt, cached under ``keys``; ``seeds`` (one per prompt) seed server
        requests item by item.

        Raises:
            GenerationFailed: A request failed for good (what arrived before is cached).
        """
        found = self.cache.get_many(sorted(set(keys)))
        missing: dict[str, tuple[Prompt, int]] = {}
        for i, (k, p) in enumerate(zip(keys, prompts)):
            if k not in found:
                missing.setdefault(k, (p, seeds[i] if seeds else cfg.seed))
        self.ledger.add(round_, self.role, self.spec, cached=len(keys) - len(missing))
        if missing:
            run = self._concurrent if _is_server(self.gen) else self._batched
            found.update(run(round_, missing, cfg))
        return [found[k] for k in keys]

    def _store(self, round_: int, done: dict[str, str], prompts: dict[str, tuple[Prompt, int]]) -> None:
        self.cache.put_many(done)
        for k, text in done.items():
            n_in, n_out = self._tokens(prompts[k][0], text)
            self.ledger.add(round_, self.role, self.spec, requests=1, prompt_tokens=n_in, completion_tokens=n_out)

    def _batched(self, round_: int, missing: dict[str, tuple[Prompt, int]], cfg: GenerationConfig) -> dict[str, str]:
        """All missing prompts in one call: a local model batches them itself (continuous batching)."""
        keys = list(missing)
        try:
            texts = self.gen.generate([missing[k][0] for k in keys], cfg)
        except Exception as e:  # noqa: BLE001 - any backend failure ends the round cleanly
            raise GenerationFailed(f"{self.role} {self.spec}: {type(e).__name__}: {e}") from e
        done = {k: (t[0] if t else "") for k, t in zip(keys, texts)}
        self._store(round_, done, missing)
        return done

    def _concurrent(self, round_: int, missing: dict[str, tuple[Prompt, int]], cfg: GenerationConfig) -> dict[str, str]:
        """One request per item, ``concurrency`` in flight, each stored the moment it arrives."""
        out: dict[str, str] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def one(key: str) -> None:
            if stop.is_set():
                return
            prompt, seed = missing[key]
            texts = self.gen.generate([prompt], replace(cfg, seed=seed))
            done = {key: texts[0][0] if texts and texts[0] else ""}
            self._store(round_, done, missing)
            with lock:
                out.update(done)

        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(missing))) as pool:
            futures = [pool.submit(one, k) for k in missing]
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in finished if f.exception() is not None), None)
            if failed is not None:
                stop.set()  # queued items return at once; requests in flight finish and are kept
                wait(futures)
                e = failed.exception()
                raise GenerationFailed(f"{self.role} {self.spec}: {type(e).__name__}: {e}") from e
        return out

