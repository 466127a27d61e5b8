"""Continuous-batching decoder: requests with their own settings share one forward pass per step.

A :class:`Request` is one prompt with its :class:`GenerationConfig`; it becomes ``cfg.n`` rows of
the running batch. Between steps, rows leave (end-of-sequence, a stop string, ``max_new_tokens``)
and waiting requests join: they are prefilled together, their shared beginning once (a kept prefix
serves the prompts after it: :class:`~tunelab.generate.kv_cache.PrefixReuse`), and their KV rows are
merged into the batch's cache, left-padded to the batch's width (:meth:`DecodeEngine._admit`); columns that
hold only padding are trimmed as rows leave (:meth:`DecodeEngine._retire`). The cache operations are
:mod:`tunelab.generate.kv_cache`'s.

Every row samples with its own temperature, top_p and ``torch.Generator`` (seeded from the request's
seed, its prompt and the sample's index), so a request's tokens do not depend on what else shares
the batch (greedy rows exactly, sampled rows up to the rounding of the batched logits), and two
prompts with the same seed do not draw the same random numbers (:mod:`tunelab.generate.sampling`).

:class:`~tunelab.generate.batching.BatchingLoop` runs one engine in a background thread for servers:
any thread submits, and requests that arrive together decode together. A generator without an engine
(other backends, sliding-window caches, prompt-learning peft models) is called once per request, in
turn.

Shapes in comments: B rows in the batch, T cache columns, V vocabulary, H KV heads, D head size.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from tunelab.generate.base import GenerationConfig, Prompt, cut_at_stop
from tunelab.generate.kv_cache import (
    Part,
    PrefixReuse,
    decode_step,
    merge,
    prefill,
    prefill_group,
    select_rows,
)
from tunelab.generate.sampling import row_seed, sample_rows

log = logging.getLogger(__name__)

TextCallback = Callable[[int, str, "str | None"], None]
"""``on_text(sample, delta, finish_reason)``: new text of one sample. The sample's last call has its
``finish_reason`` (``stop`` or ``length``) and the rest of its text (maybe ``""``). Runs on the
decoding thread: keep it short."""
DoneCallback = Callable[["Request"], None]
"""``on_done(request)``: the request finished or failed (see ``Request.error``); decoding thread."""


PREFILL_TOKENS = 16384
"""Most padded prompt tokens (requests x longest prompt) one grouped prefill takes."""


class RequestError(ValueError):
    """A request the engine cannot decode (empty or too long prompt, a chat template that fails)."""


# ----------------------------------------------------------------------------- streaming and callbacks


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could begin a stop string (held back from streams)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def call_back(fn: Callable[..., Any] | None, *args: Any) -> None:
    """Run a caller's callback; its failure is logged, never allowed to stop decoding."""
    if fn is None:
        return
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - a broken listener must not kill the batch
        log.exception("generation callback failed")


# ----------------------------------------------------------------------------- requests and rows


class Request:
    """One prompt decoded into ``cfg.n`` samples: the engine fills it in, callers read it.

    Attributes:
        cfg: Its settings.
        prompt: The prompt as submitted to a :class:`~tunelab.generate.batching.BatchingLoop` (None
            when given as ids).
        ids: Prompt token ids (set once encoded).
        texts: The ``n`` completions, each cut at its first stop string (final once ``done``).
        finish_reasons: Per sample: ``stop`` (end-of-sequence or stop string), ``length``, or
            ``abort`` (cancelled).
        completion_tokens: Tokens generated over all samples (end-of-sequence tokens included).
        error: Why the request failed, if it did.
    """

    def __init__(
        self,
        cfg: GenerationConfig,
        ids: list[int] | None = None,
        prompt: Prompt | None = None,
        on_text: TextCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> None:
        self.cfg, self.ids, self.prompt = cfg, ids, prompt
        self.on_text, self.on_done = on_text, on_done
        self.texts: list[str] = [""] * cfg.n
        self.finish_reasons: list[str | None] = [None] * cfg.n
        self.completion_tokens = 0
        self.error: BaseException | None = None
        self.cancelled = False
        self._left = cfg.n
        self._event = threading.Event()

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt (0 until encoded)."""
        return len(self.ids or ())

    @property
    def done(self) -> bool:
        """Whether the request finished or failed."""
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> Request:
        """Block until done and return self.

        Raises:
            TimeoutError: Not done within ``timeout`` seconds.
            Exception: The request's own error, if it failed.
        """
        if not self._event.wait(timeout):
            raise TimeoutError(f"generation not done after {timeout}s")
        if self.error is not None:
            raise self.error
        return self

    def cancel(self) -> None:
        """Stop decoding at the next step (e.g. its client went away); samples end as ``abort``."""
        self.cancelled = True

    def finish_sample(self, index: int, text: str, reason: str, tokens: int) -> bool:
        """Record sample ``index`` as finished; whether that was the request's last sample."""
        self.texts[index], self.finish_reasons[index] = text, reason
        self.completion_tokens += tokens
        self._left -= 1
        if self._left == 0:
            self._complete()
        return self._left == 0

    def abort(self) -> None:
        """Finish every sample as ``abort`` with no text (a cancelled request that never ran)."""
        for i in range(self.cfg.n):
            self.finish_reasons[i] = self.finish_reasons[i] or "abort"
        self._left = 0
        self._complete()

    def fail(self, error: BaseException) -> None:
        """Finish the request with ``error`` (no-op if it is already done)."""
        if not self.done:
            self.error = error
            self._complete()

    def _complete(self) -> None:
        """Mark done and tell the listener."""
        self._event.set()
        call_back(self.on_done, self)


class _Row:
    """One sample of a request in the batch: its tokens, its sampler and its text so far."""

    def __init__(self, req: Request, index: int, eos: set[int], device: torch.device) -> None:
        self.req, self.index, self.cfg, self.eos = req, index, req.cfg, eos
        self.tokens: list[int] = []
        self.sampled = 0
        """Tokens drawn (``tokens`` plus a final end-of-sequence token)."""
        self.gen = None
        if self.cfg.temperature > 0:
            seed = row_seed(self.cfg.seed, req.ids, index)
            self.gen = torch.Generator(device=device).manual_seed(seed)
        self.stops = [s for s in self.cfg.stop if s]
        self.text = ""
        """Decoded so far, kept only with stop strings or a text callback."""
        self.sent = 0
        """Characters of ``text`` streamed to ``on_text``."""
        self._prefix = self._read = 0  # incremental detokenizer window into ``tokens``

    def push(self, t: int, tok) -> str | None:
        """Take token ``t``; the finish reason (``stop``/``length``) if the row ends with it, else None."""
        self.sampled += 1
        if t in self.eos:
            return "stop"
        self.tokens.append(t)
        if self.stops or self.req.on_text is not None:
            seen = len(self.text)
            self.text += self._detok(tok)
            if any(s in self.text[max(0, seen - len(s) + 1) :] for s in self.stops):
                return "stop"
        return "length" if len(self.tokens) >= self.cfg.max_new_tokens else None

    def _detok(self, tok) -> str:
        """The text the newest token completes: decode a short window, keep only whole characters."""
        before = tok.decode(self.tokens[self._prefix : self._read], skip_special_tokens=True)
        after = tok.decode(self.tokens[self._prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or after.endswith("\ufffd"):  # nothing new, or a partial character
            return ""
        self._prefix, self._read = self._read, len(self.tokens)
        return after[len(before) :]

    def stream_delta(self) -> str:
        """New text safe to stream: all but an end that could begin a stop string."""
        end = len(self.text) - _stop_prefix_len(self.text, self.stops)
        delta = self.text[self.sent : end]
        self.sent = max(self.sent, end)
        return delta

    def final_text(self, tok) -> str:
        """The whole completion decoded at once, cut at the first stop string."""
        return cut_at_stop(tok.decode(self.tokens, skip_special_tokens=True), self.stops)


# ----------------------------------------------------------------------------- the engine


class DecodeEngine:
    """Continuous batching over one model; single-threaded (:class:`~tunelab.generate.batching.BatchingLoop`
    adds a thread).

    Usage: ``submit`` requests, then call ``step`` while ``busy``.

    Args:
        owner: The ``HFGenerator`` whose ``model``, ``tok``, ``batch_size``, ``eos_ids`` and cache
            keyword (``_cache_kw``) it uses, and whose ``generated_tokens`` it counts up.
    """

    def __init__(self, owner: Any) -> None:
        self.owner = owner
        self.model, self.tok, self.cache_kw = owner.model, owner.tok, owner._cache_kw
        self.device = next(self.model.parameters()).device
        self.waiting: deque[Request] = deque()
        self.rows: list[_Row] = []  # batch order
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # (B, T) long, 0 = left padding
        self.next_pos: torch.Tensor | None = None  # (B,) position of each row's next token
        self.logits: torch.Tensor | None = None  # (B, V) fp32, for each row's next token
        self.max_rows = 0
        """Most rows decoded together in one step (a server's batching, for tests and logs)."""
        self.reuse = PrefixReuse() if owner._plain_cache() else None
        """Shared prompt beginnings prefilled once (plain caches only: a sliding layer may evict)."""

    @property
    def busy(self) -> bool:
        """Whether requests are waiting or decoding."""
        return bool(self.waiting or self.rows)

    def submit(
        self,
        ids: list[int],
        cfg: GenerationConfig,
        on_text: TextCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> Request:
        """Queue prompt ``ids`` for decoding with ``cfg``; the request's handle (see :meth:`add`)."""
        return self.add(Request(cfg, ids=ids, on_text=on_text, on_done=on_done))

    def add(self, req: Request) -> Request:
        """Queue an encoded request (``req.ids`` set); it joins the batch at a coming step.

        A request for no tokens (``max_new_tokens <= 0``) is done at once; an empty prompt fails.
        """
        if not req.ids:
            req.fail(RequestError("the prompt is empty"))
        elif req.cfg.max_new_tokens <= 0:
            for i in range(req.cfg.n):
                req.finish_sample(i, "", "length", 0)
        else:
            self.waiting.append(req)
        return req

    @torch.no_grad()
    def step(self) -> list[Request]:
        """Admit waiting requests, pick a token for every row, retire finished rows, run the model once.

        Returns:
            The requests that finished during this step.
        """
        self._admit()
        if not self.rows:
            return []
        picked = sample_rows(self.logits, self.rows)  # (B,)
        self.owner.generated_tokens += len(self.rows)
        finished, keep = self._advance(picked.tolist())
        picked = self._retire(keep, picked)
        if self.rows:
            self._forward(picked)
        return finished

    def fail_all(self, error: BaseException) -> None:
        """Fail every waiting and running request with ``error`` and empty the batch."""
        for req in [*self.waiting, *{id(r.req): r.req for r in self.rows}.values()]:
            req.fail(error)
        self.waiting.clear()
        self.rows, self.cache, self.mask, self.next_pos, self.logits = [], None, None, None, None

    def _admit(self) -> None:
        """Prefill waiting requests and merge their KV rows into the running batch.

        Requests join once at most half the rows are taken (a merge copies the whole cache), while
        their ``n`` rows fit in ``batch_size``; a request wider than the batch runs alone.
        """
        cap = max(1, self.owner.batch_size)
        if not self.waiting or len(self.rows) > cap // 2:
            return
        admitted, rows = [], len(self.rows)
        while self.waiting and (not rows or rows + self.waiting[0].cfg.n <= cap):
            req = self.waiting.popleft()
            if req.cancelled:
                req.abort()
                continue
            admitted.append(req)
            rows += req.cfg.n
        if admitted:
            parts = [] if self.cache is None else [(self.cache, self.mask, self.next_pos, self.logits)]
            self._merge(parts + self._prefill(admitted))

    def _prefill(self, reqs: list[Request]) -> list[Part]:
        """Prefill the admitted requests; their ``n`` rows each join ``self.rows``.

        With a plain cache, requests go through :func:`prefill_group` in groups of at most
        :data:`PREFILL_TOKENS` padded prompt tokens (their shared beginning computed once); otherwise
        each prompt is prefilled alone.

        Returns:
            (cache, mask (rows, L), next_pos (rows,), logits (rows, V)) parts for :meth:`_merge`.
        """
        eos = set(self.owner.eos_ids)
        parts = []
        for group in self._groups(reqs):
            if self.reuse is None:
                cache, logits = prefill(self.model, group[0].ids, self.cache_kw)  # logits (1, V)
                length = len(group[0].ids)
                part = (cache, torch.ones(1, length, dtype=torch.long, device=self.device),
                        torch.full((1,), length, device=self.device), logits)
            else:
                part = prefill_group(self.model, [r.ids for r in group], self.cache_kw, self.reuse)
            ns = [r.cfg.n for r in group]
            if any(n > 1 for n in ns):  # n samples share one prefill (selecting rows copies them)
                idx = torch.repeat_interleave(torch.arange(len(group), device=self.device),
                                              torch.tensor(ns, device=self.device))
                part[0].batch_select_indices(idx)
                part = (part[0], part[1][idx], part[2][idx], part[3][idx])
            self.rows += [_Row(r, s, eos, self.device) for r in group for s in range(r.cfg.n)]
            parts.append(part)
        return parts

    def _groups(self, reqs: list[Request]) -> list[list[Request]]:
        """Consecutive requests prefilled together: one each without a plain cache, else as many as
        keep (requests x longest prompt) within :data:`PREFILL_TOKENS`."""
        if self.reuse is None:
            return [[r] for r in reqs]
        groups: list[list[Request]] = []
        longest = 0  # of the last group
        for r in reqs:
            if groups and (len(groups[-1]) + 1) * max(longest, len(r.ids)) <= PREFILL_TOKENS:
                groups[-1].append(r)
                longest = max(longest, len(r.ids))
            else:
                groups.append([r])
                longest = len(r.ids)
        return groups

    def _merge(self, parts: list[Part]) -> None:
        """One batch from (cache, mask, next_pos, logits) parts, KV left-padded to the widest part."""
        self.cache, self.mask, self.next_pos, self.logits = merge(self.model, parts)

    def _advance(self, picked: list[int]) -> tuple[list[Request], list[int]]:
        """Give each row its token and stream new text; (requests finished, indices of rows that go on)."""
        finished, keep = [], []
        for j, (row, t) in enumerate(zip(self.rows, picked)):
            reason = "abort" if row.req.cancelled else row.push(t, self.tok)
            if reason is None:
                keep.append(j)
                if row.req.on_text is not None and (delta := row.stream_delta()):
                    call_back(row.req.on_text, row.index, delta, None)
            elif self._finish(row, reason):
                finished.append(row.req)
        return finished, keep

    def _finish(self, row: _Row, reason: str) -> bool:
        """Settle a finished row (final text, the rest of its stream); whether its request is done."""
        text = "" if reason == "abort" else row.final_text(self.tok)
        if row.req.on_text is not None:
            streamed = row.text[: row.sent]
            call_back(row.req.on_text, row.index, text[row.sent :] if text.startswith(streamed) else "", reason)
        return row.req.finish_sample(row.index, text, reason, row.sampled)

    def _retire(self, keep: list[int], picked: torch.Tensor) -> torch.Tensor:
        """Drop finished rows and the columns that then hold only padding; the kept rows' tokens (B',)."""
        if len(keep) == len(self.rows):
            return picked
        self.rows = [self.rows[j] for j in keep]
        if not self.rows:
            self.cache = self.mask = self.next_pos = self.logits = None
            return picked[:0]
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.mask, self.next_pos = select_rows(self.cache, self.mask, self.next_pos, idx)
        return picked[idx]

    def _forward(self, picked: torch.Tensor) -> None:
        """Run the model on every row's newest token (B,); the next logits (B, V) replace the old."""
        self.max_rows = max(self.max_rows, len(self.rows))
        self.logits, self.mask, self.next_pos = decode_step(
            self.model, picked, self.mask, self.next_pos, self.cache, self.cache_kw
        )
