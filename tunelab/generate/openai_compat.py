"""A Generator over any OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp, ``tunelab serve``).

Standard library only (``urllib``). Chat prompts go to ``/v1/chat/completions``, string prompts to
``/v1/completions``. Requests run concurrently in a thread pool; 429, 5xx, connection errors and
timeouts are retried with exponential backoff plus jitter (``Retry-After`` is honoured).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tunelab.generate.base import GenerationConfig, Prompt, cut_at_stop

log = logging.getLogger(__name__)

MAX_API_STOPS = 4  # the OpenAI API accepts at most four stop strings; the rest are cut locally
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIError(RuntimeError):
    """A request failed for good (a non-retryable status, or retries exhausted)."""


def _reason(error: BaseException) -> str:
    """A short retry reason for the counts in ``OpenAIGenerator.retries``."""
    if isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError):
        return "timeout"
    if isinstance(error, (http.client.HTTPException, ConnectionError)):
        return "connection dropped"
    if isinstance(error, ValueError):
        return "truncated or invalid response"
    return "connection failed"


def _api_root(base_url: str) -> str:
    """``http://h:p``, ``http://h:p/`` and ``http://h:p/v1`` all become ``http://h:p/v1``."""
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else root + "/v1"


class OpenAIGenerator:
    """Completions from an OpenAI-compatible endpoint.

    Args:
        base_url: Server root, with or without the trailing ``/v1``.
        model: Model name sent with every request.
        api_key: Bearer token (default: ``$OPENAI_API_KEY`` if set; local servers need none).
        concurrency: Requests in flight at once.
        timeout: Seconds per request.
        max_retries: Retries per request after the first try.
        backoff: First retry delay in seconds (doubled each retry, plus up to 100% jitter, capped at 60).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 60,
        max_retries: int = 5,
        backoff: float = 1.0,
    ) -> None:
        self.base_url, self.model = base_url.rstrip("/"), model
        self.api_root = _api_root(base_url)
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.concurrency, self.timeout = max(1, concurrency), float(timeout)
        self.max_retries, self.backoff = max(0, max_retries), float(backoff)
        self.fingerprint = f"openai:{self.api_root}|{model}"
        self.retries: dict[str, int] = {}
        """Retries so far, by reason (``HTTP 429``, ``timeout``, ``truncated response`` ...)."""
        self._retry_lock = threading.Lock()

    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        """``cfg.n`` completions per prompt, in order."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._complete(p, cfg), prompts))

    def _complete(self, prompt: Prompt, cfg: GenerationConfig) -> list[str]:
        """All n completions of one prompt (more requests if the server returns fewer choices)."""
        texts: list[str] = []
        attempt = 0
        while len(texts) < cfg.n and attempt < cfg.n:
            body = self._body(prompt, cfg, cfg.n - len(texts), cfg.seed + attempt)
            texts += self._texts(prompt, self.post(self._path(prompt), body))
            attempt += 1
        if len(texts) < cfg.n:
            raise OpenAIError(f"{self.api_root}: asked for {cfg.n} completions, got {len(texts)}")
        return [cut_at_stop(t, cfg.stop) for t in texts[: cfg.n]]

    @staticmethod
    def _path(prompt: Prompt) -> str:
        return "/completions" if isinstance(prompt, str) else "/chat/completions"

    def _body(self, prompt: Prompt, cfg: GenerationConfig, n: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": n,
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_tokens": cfg.max_new_tokens,
            "seed": seed,
        }
        body["prompt" if isinstance(prompt, str) else "messages"] = prompt
        if cfg.stop:
            body["stop"] = list(cfg.stop[:MAX_API_STOPS])
        return body

    @staticmethod
    def _texts(prompt: Prompt, response: dict[str, Any]) -> list[str]:
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if isinstance(prompt, str):
            return [c.get("text") or "" for c in choices]
        return [(c.get("message") or {}).get("content") or "" for c in choices]

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to ``<api_root><path>`` with retries; the decoded JSON response."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(self.api_root + path, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                if not isinstance(payload, dict) or "choices" not in payload:
                    raise ValueError(f"no 'choices' in the response: {str(payload)[:200]}")
                return payload
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:500]
                if e.code not in RETRY_STATUS or attempt == self.max_retries:
                    raise OpenAIError(f"{self.api_root}{path}: HTTP {e.code}: {detail}") from e
                self._sleep(attempt, e.headers.get("Retry-After"), f"HTTP {e.code}")
            except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException,
                    ValueError) as e:  # refused, timed out, dropped mid-response, truncated or not JSON
                if attempt == self.max_retries:
                    raise OpenAIError(f"{self.api_root}{path}: {e!r} after {attempt + 1} tries") from e
                self._sleep(attempt, None, _reason(e))
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, retry_after: str | None, why: str) -> None:
        """Wait before retry ``attempt + 1`` (exponential backoff with jitter, at least ``Retry-After``)."""
        with self._retry_lock:
            self.retries[why] = self.retries.get(why, 0) + 1
        delay = min(60.0, self.backoff * 2**attempt) * (1 + random.random())
        if retry_after:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        log.warning("%s: %s; retry %d/%d in %.2fs", self.api_root, why, attempt + 1, self.max_retries, delay)
        time.sleep(delay)

    def models(self) -> list[str]:
        """Model ids the server lists at ``GET /v1/models``."""
        req = urllib.request.Request(self.api_root + "/models", method="GET")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return [m["id"] for m in json.loads(resp.read().decode("utf-8")).get("data", [])]
