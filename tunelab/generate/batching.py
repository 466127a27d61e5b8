"""The decoding thread of servers: one :class:`~tunelab.generate.engine.DecodeEngine` fed from any thread.

Requests submitted together decode together (continuous batching); a generator without an engine
(the OpenAI and vLLM backends, prompt-learning peft models) gets the requests that arrived together in
one ``generate`` call per generation setting (the seed counts only when sampling: a sampled request's
draws must not depend on what else arrived), so a backend that batches (vLLM) or sends concurrently
(OpenAI) does so. A failed step fails its batch's requests, not the loop; closing fails the requests
not done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections import deque
from collections.abc import Iterator
from typing import Any

from tunelab.generate.base import GenerationConfig, Prompt, encode_prompt
from tunelab.generate.engine import DecodeEngine, DoneCallback, Request, RequestError, TextCallback, call_back

log = logging.getLogger(__name__)


def _same_call(a: GenerationConfig, b: GenerationConfig) -> bool:
    """Whether requests with settings ``a`` and ``b`` may share one ``generate`` call: equal settings, the
    seed ignored for greedy decoding (it draws nothing)."""
    if a.temperature <= 0 and b.temperature <= 0:
        return dataclasses.replace(a, seed=0) == dataclasses.replace(b, seed=0)
    return a == b


class BatchingLoop:
    """One decoding thread fed from any thread: requests that arrive together decode together.

    Args:
        generator: A generator whose ``decode_engine()`` returns a :class:`DecodeEngine` (an
            ``HFGenerator`` over a model with plain KV caches: continuous batching), or any Generator
            (called once for the requests that arrived together with the same settings).
        max_prompt_tokens: The model's context: longer prompts are rejected, completions end at it
            (default: the model's ``max_position_embeddings``).
    """

    def __init__(self, generator: Any, max_prompt_tokens: int | None = None) -> None:
        self.generator = generator
        make = getattr(generator, "decode_engine", None)
        self.engine: DecodeEngine | None = make() if callable(make) else None
        config = getattr(getattr(generator, "model", None), "config", None)
        self.max_prompt_tokens = max_prompt_tokens or getattr(config, "max_position_embeddings", None)
        self.served = 0
        """Requests answered through ``generate`` calls (generators without an engine)."""
        self.max_group = 0
        """Most requests answered by one ``generate`` call so far (generators without an engine)."""
        self._inbox: deque[Request] = deque()
        self._cv = threading.Condition()
        self._paused, self._closed = 0, False
        self._thread = threading.Thread(target=self._run, name="tunelab-decode", daemon=True)
        self._thread.start()

    @property
    def batching(self) -> bool:
        """Whether requests decode together (continuous batching) rather than one at a time."""
        return self.engine is not None

    @property
    def queued(self) -> int:
        """Requests submitted and not yet taken by the decoding thread."""
        return len(self._inbox)

    @property
    def running(self) -> int:
        """Rows decoding now (0 without an engine)."""
        return len(self.engine.rows) if self.engine is not None else 0

    @property
    def max_rows(self) -> int:
        """Most rows decoded together in one step so far (without an engine: most requests in one call)."""
        return self.engine.max_rows if self.engine is not None else self.max_group

    def submit(
        self,
        prompt: Prompt,
        cfg: GenerationConfig,
        on_text: TextCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> Request:
        """Queue ``prompt`` (thread-safe); returns its :class:`Request` (``wait()`` on it, or use callbacks).

        Raises:
            RuntimeError: The loop is closed.
        """
        req = Request(cfg, prompt=prompt, on_text=on_text, on_done=on_done)
        with self._cv:
            if self._closed:
                raise RuntimeError("the decoding loop is closed")
            self._inbox.append(req)
            self._cv.notify()
        return req

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold decoding for the block: submitted requests queue up, then start together."""
        with self._cv:
            self._paused += 1
        try:
            yield
        finally:
            with self._cv:
                self._paused -= 1
                self._cv.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread; requests not done fail with ``RuntimeError``."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout)

    def _has_work(self) -> bool:
        """Whether the decoding thread should wake: closing, or (not paused) requests to take or rows to decode."""
        busy = self._inbox or (self.engine is not None and self.engine.busy)
        return self._closed or (not self._paused and bool(busy))

    def _run(self) -> None:
        """The decoding thread: take new requests, then run one engine step; repeat."""
        while True:
            with self._cv:
                self._cv.wait_for(self._has_work)
                if self._closed:
                    break
                incoming = list(self._inbox)
                self._inbox.clear()
            if self.engine is None:
                self._answer_together(incoming)
            else:
                for req in incoming:
                    self._accept(req)
            if self.engine is not None and self.engine.busy:
                self._step()
        gone = RuntimeError("the server is shutting down")
        for req in self._inbox:
            req.fail(gone)
        if self.engine is not None:
            self.engine.fail_all(gone)

    def _step(self) -> None:
        """One engine step; a failure fails the batch's requests, not the loop."""
        try:
            self.engine.step()
        except Exception as e:  # noqa: BLE001 - fail this batch's requests, keep serving
            log.exception("decoding step failed")
            self.engine.fail_all(e)

    def _accept(self, req: Request) -> None:
        """Encode a new request into the engine."""
        try:
            req.ids = encode_prompt(self.engine.tok, req.prompt)
        except Exception as e:  # noqa: BLE001 - a chat template that rejects the messages
            return req.fail(RequestError(f"cannot encode the prompt: {e}"))
        limit = self.max_prompt_tokens
        if limit and len(req.ids) >= limit:
            return req.fail(RequestError(f"the prompt has {len(req.ids)} tokens; the model's context is {limit}"))
        if limit and len(req.ids) + req.cfg.max_new_tokens > limit:  # stop at the context's end ("length")
            req.cfg = dataclasses.replace(req.cfg, max_new_tokens=limit - len(req.ids))
        self.engine.add(req)

    def _answer_together(self, requests: list[Request]) -> None:
        """No engine: one ``generate`` call per distinct generation setting among ``requests`` (those that
        arrived together), each request settled from its own completions (usage counted with the
        generator's ``tok``, if any); a failed call fails its requests."""
        groups: list[tuple[GenerationConfig, list[Request]]] = []
        for req in requests:
            if req.cancelled:
                req.abort()
                continue
            same = next((g for g in groups if _same_call(g[0], req.cfg)), None)
            if same is None:
                groups.append((req.cfg, [req]))
            else:
                same[1].append(req)
        for cfg, reqs in groups:
            try:
                texts = self.generator.generate([r.prompt for r in reqs], cfg)
            except Exception as e:  # noqa: BLE001 - reported to the requests' callers
                for r in reqs:
                    r.fail(e)
                continue
            self.served += len(reqs)
            self.max_group = max(self.max_group, len(reqs))
            for req, got in zip(reqs, texts):
                self._settle(req, got)

    def _settle(self, req: Request, texts: list[str]) -> None:
        """Finish ``req``'s samples with ``texts`` (its completions from a ``generate`` call)."""
        tok = getattr(self.generator, "tok", None)
        req.ids = encode_prompt(tok, req.prompt) if tok is not None else []
        for i in range(req.cfg.n):
            text = texts[i] if i < len(texts) else ""
            used = len(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else 0
            reason = "length" if tok is not None and used >= req.cfg.max_new_tokens else "stop"
            call_back(req.on_text, i, text, reason)
            req.finish_sample(i, text, reason, used)
