"""An on-disk response cache in front of any Generator (sqlite3, safe across threads and processes).

The key is sha256 of (the inner generator's fingerprint, the prompt as JSON, ``GenerationConfig.key()``),
so a changed model, adapter, template or sampling setting never reuses stale answers. Only prompts
missing from the cache are sent to the inner generator, in one call.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from tunelab.generate.base import GenerationConfig, Generator, Prompt
from tunelab.io import SqliteCache

DB_NAME = "generations.sqlite"


def cache_key(fingerprint: str, prompt: Prompt, cfg: GenerationConfig) -> str:
    """sha256 hex of (fingerprint, prompt, generation config), JSON with sorted keys."""
    blob = json.dumps([fingerprint, prompt, cfg.key()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CachedGenerator:
    """Wraps a Generator with a persistent cache of its completions.

    Args:
        inner: The generator whose answers are cached.
        cache_dir: Folder of the sqlite database (created if missing).

    Attributes:
        hits: Prompts answered from the cache so far.
        misses: Prompts sent to the inner generator so far.
    """

    def __init__(self, inner: Generator, cache_dir: str | Path) -> None:
        self.inner = inner
        self.path = Path(cache_dir) / DB_NAME
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._db = SqliteCache(self.path, "completions")

    @property
    def retries(self) -> dict[str, int]:
        """The inner generator's retry counts (a cache hit needs no request)."""
        return getattr(self.inner, "retries", None) or {}

    @property
    def fingerprint(self) -> str:
        """The inner generator's fingerprint (the cache changes no answer)."""
        return self.inner.fingerprint


    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        """Cached completions; missing prompts (deduplicated) go to the inner generator in one call."""
        fp = self.inner.fingerprint
        keys = [cache_key(fp, p, cfg) for p in prompts]
        found = self._db.get_many(sorted(set(keys)))
        missing: dict[str, Prompt] = {}
        for key, prompt in zip(keys, prompts):
            if key not in found:
                missing.setdefault(key, prompt)
        if missing:
            fresh = self.inner.generate(list(missing.values()), cfg)
            new = dict(zip(missing.keys(), fresh))
            self._db.put_many(new)
            found.update(new)
        with self._lock:
            self.misses += len(missing)
            self.hits += len(prompts) - len(missing)
        return [list(found[k]) for k in keys]
