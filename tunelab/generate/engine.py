"""Continuous-batching decoder: requests with their own settings share one forward pass per step.

A :class:`Request` is one prompt with its :class:`GenerationConfig`; it becomes ``cfg.n`` rows of
the running batch. Between steps, rows leave (end-of-sequence, a stop string, ``max_new_tokens``)
and waiting requests join: each prompt is prefilled alone (no padding) and its KV rows are merged
into the batch's cache, left-padded to the batch's width (:meth:`DecodeEngine._admit`); columns that
hold only padding are trimmed as rows leave (:meth:`DecodeEngine._retire`).

Every row samples with its own temperature, top_p and ``torch.Generator`` (seeded from the request's
seed, its prompt and the sample's index), so a request's tokens do not depend on what else shares
the batch (greedy rows exactly, sampled rows up to the rounding of the batched logits), and two
prompts with the same seed do not draw the same random numbers.

:class:`BatchingLoop` runs one engine in a background thread for servers: any thread submits, and
requests that arrive together decode together. A generator without an engine (other backends,
sliding-window caches, prompt-learning peft models) is called once per request, in turn.

Shapes in comments: B rows in the batch, T cache columns, V vocabulary, H KV heads, D head size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import threading
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

from tunelab.generate.base import GenerationConfig, Prompt, cut_at_stop, encode_prompt

log = logging.getLogger(__name__)

TextCallback = Callable[[int, str, "str | None"], None]
"""``on_text(sample, delta, finish_reason)``: new text of one sample. The sample's last call has its
``finish_reason`` (``stop`` or ``length``) and the rest of its text (maybe ``""``). Runs on the
decoding thread: keep it short."""
DoneCallback = Callable[["Request"], None]
"""``on_done(request)``: the request finished or failed (see ``Request.error``); decoding thread."""



class RequestError(ValueError):
    """A request the engine cannot decode (empty or too long prompt, a chat template that fails)."""


# ----------------------------------------------------------------------------- KV cache and forward


class GrowingLayer(DynamicLayer):
    """A KV cache layer that appends into spare columns and hands attention a view.

    transformers' ``DynamicLayer`` concatenates at every step, copying the whole cache each time
    (on CPU that copy costs more than the attention that reads it).
    """

    def hold(self, k: torch.Tensor, v: torch.Tensor, spare: int = 128) -> GrowingLayer:
        """Take keys/values (B, H, T, D) into fresh storage with ``spare`` free columns; returns self."""
        b, h, t, d = k.shape
        self._k, self._v = k.new_empty(b, h, t + spare, d), v.new_empty(b, h, t + spare, v.shape[3])
        self._k[:, :, :t], self._v[:, :, :t] = k, v
        self.keys, self.values = self._k[:, :, :t], self._v[:, :, :t]
        self.device, self.is_initialized = k.device, True
        return self

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Append (B, H, new, D) states; the keys and values so far (views of the storage)."""
        t, new = self.keys.shape[2], key_states.shape[2]
        if t + new > self._k.shape[2]:
            self.hold(self.keys, self.values, spare=max(128, t // 4, new))
        self._k[:, :, t : t + new], self._v[:, :, t : t + new] = key_states, value_states
        self.keys, self.values = self._k[:, :, : t + new], self._v[:, :, : t + new]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` (B',) of the batch."""
        t = self.keys.shape[2]
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[:, :, :t], self._v[:, :, :t]

    def crop(self, tokens_to_remove: int) -> None:
        """Not supported (the decoder never crops)."""
        raise NotImplementedError("GrowingLayer: crop is not supported")

    def drop_front(self, n: int) -> None:
        """Forget the first ``n`` columns (padding in every row)."""
        self._k, self._v = self._k[:, :, n:], self._v[:, :, n:]
        self.keys, self.values = self.keys[:, :, n:], self.values[:, :, n:]


def _left_pad_kv(t: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, width, D), zeros in front."""
    return nn.functional.pad(t, (0, 0, width - t.shape[2], 0)) if t.shape[2] < width else t


def prefill(model: nn.Module, ids: list[int], cache_kw: str) -> tuple[DynamicCache, torch.Tensor]:
    """KV cache and last-position logits (1, V) fp32 of one prompt, alone (no padding, no mask).

    Args:
        model: The causal LM.
        ids: Prompt token ids.
        cache_kw: The model's cache keyword (``tunelab.models.load.cache_kwarg``).
    """
    cache = DynamicCache(config=model.config)
    device = next(model.parameters()).device
    out = model(
        input_ids=torch.tensor([ids], device=device),
        use_cache=True,
        logits_to_keep=1,
        **{cache_kw: cache},
    )
    return cache, out.logits[:, -1].float()


def decode_step(
    model: nn.Module,
    picked: torch.Tensor,
    mask: torch.Tensor,
    next_pos: torch.Tensor,
    cache: DynamicCache,
    cache_kw: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Feed one token per row: picked (B,), mask (B, T), next_pos (B,) -> logits (B, V) fp32, mask
    (B, T + 1), next_pos + 1 (the cache grows in place)."""
    mask = torch.cat([mask, mask.new_ones(len(picked), 1)], dim=1)
    out = model(
        input_ids=picked[:, None],
        attention_mask=mask,
        position_ids=next_pos[:, None],
        use_cache=True,
        **{cache_kw: cache},
    )
    return out.logits[:, -1].float(), mask, next_pos + 1


# ----------------------------------------------------------------------------- sampling


def row_seed(seed: int, ids: list[int], sample: int) -> int:
    """The generator seed of sample ``sample`` of prompt ``ids`` in a request seeded ``seed``."""
    h = hashlib.blake2b(f"{seed}|{sample}|".encode(), digest_size=8)
    h.update(array("q", ids).tobytes())
    return int.from_bytes(h.digest(), "little") >> 1  # 63 bits


def sample_rows(logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
    """Next token per row, each with its own settings: logits (B, V) fp32 -> tokens (B,).

    Greedy rows take the argmax; the others draw with their own generator. Rows with and without
    top_p are drawn apart, so that no row's draw depends on the other rows' settings.
    """
    picked = logits.argmax(-1)  # (B,)
    hot = [j for j, r in enumerate(rows) if r.cfg.temperature > 0]
    for nucleus in (False, True):
        group = [j for j in hot if (rows[j].cfg.top_p < 1.0) == nucleus]
        if group:
            idx = torch.tensor(group, device=logits.device)
            picked[idx] = _draw(logits[idx], [rows[j] for j in group], nucleus)
    return picked


def _draw(logits: torch.Tensor, rows: list[_Row], nucleus: bool) -> torch.Tensor:
    """Inverse-CDF draws, one uniform from each row's generator: logits (k, V) -> tokens (k,)."""
    dev = logits.device
    temps = torch.tensor([r.cfg.temperature for r in rows], device=dev)[:, None]  # (k, 1)
    probs = torch.softmax(logits / temps, dim=-1)  # (k, V)
    order = None
    if nucleus:
        probs, order = probs.sort(dim=-1, descending=True)
        top_p = torch.tensor([r.cfg.top_p for r in rows], device=dev)[:, None]
        probs = probs.masked_fill(probs.cumsum(-1) - probs > top_p, 0.0)  # mass before it already > top_p
    cdf = probs.cumsum(-1)  # (k, V)
    u = torch.cat([torch.rand(1, generator=r.gen, device=dev) for r in rows])  # (k,)
    pos = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_(max=cdf.shape[1] - 1)
    return (pos if order is None else order.gather(-1, pos)).squeeze(-1)


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest end of ``text`` that could begin a stop string (held back from streams)."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


def _call(fn: Callable[..., Any] | None, *args: Any) -> None:
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
        prompt: The prompt as submitted to a :class:`BatchingLoop` (None when given as ids).
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
        _call(self.on_done, self)


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
    """Continuous batching over one model; single-threaded (:class:`BatchingLoop` adds a thread).

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
        parts = [] if self.cache is None else [(self.cache, self.mask, self.next_pos, self.logits)]
        joined = False
        while self.waiting and (not self.rows or len(self.rows) + self.waiting[0].cfg.n <= cap):
            req = self.waiting.popleft()
            if req.cancelled:
                req.abort()
                continue
            parts.append(self._prefill(req))
            joined = True
        if joined:
            self._merge(parts)

    def _prefill(self, req: Request) -> tuple:
        """Prefill one prompt alone; its ``n`` rows join ``self.rows``.

        Returns:
            (cache, mask (n, L), next_pos (n,), logits (n, V)): a part for :meth:`_merge`.
        """
        cache, logits = prefill(self.model, req.ids, self.cache_kw)  # logits (1, V)
        n, length = req.cfg.n, len(req.ids)
        if n > 1:  # n samples share one prefill
            cache.batch_repeat_interleave(n)
        eos = set(self.owner.eos_ids)
        self.rows += [_Row(req, s, eos, self.device) for s in range(n)]
        mask = torch.ones(n, length, dtype=torch.long, device=self.device)
        return cache, mask, torch.full((n,), length, device=self.device), logits.expand(n, -1)

    def _merge(self, parts: list[tuple]) -> None:
        """One batch from (cache, mask, next_pos, logits) parts, KV left-padded to the widest part."""
        width = max(part[1].shape[1] for part in parts)
        self.cache = DynamicCache(config=self.model.config)
        for i in range(len(self.cache.layers)):
            olds = [part[0].layers[i] for part in parts]
            self.cache.layers[i] = GrowingLayer().hold(
                torch.cat([_left_pad_kv(o.keys, width) for o in olds]),  # (B, H, width, D)
                torch.cat([_left_pad_kv(o.values, width) for o in olds]),
            )
        self.mask = torch.cat([nn.functional.pad(p[1], (width - p[1].shape[1], 0)) for p in parts])
        self.next_pos = torch.cat([part[2] for part in parts])
        self.logits = torch.cat([part[3] for part in parts])

    def _advance(self, picked: list[int]) -> tuple[list[Request], list[int]]:
        """Give each row its token and stream new text; (requests finished, indices of rows that go on)."""
        finished, keep = [], []
        for j, (row, t) in enumerate(zip(self.rows, picked)):
            reason = "abort" if row.req.cancelled else row.push(t, self.tok)
            if reason is None:
                keep.append(j)
                if row.req.on_text is not None and (delta := row.stream_delta()):
                    _call(row.req.on_text, row.index, delta, None)
            elif self._finish(row, reason):
                finished.append(row.req)
        return finished, keep

    def _finish(self, row: _Row, reason: str) -> bool:
        """Settle a finished row (final text, the rest of its stream); whether its request is done."""
        text = "" if reason == "abort" else row.final_text(self.tok)
        if row.req.on_text is not None:
            streamed = row.text[: row.sent]
            _call(row.req.on_text, row.index, text[row.sent :] if text.startswith(streamed) else "", reason)
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
        self.cache.batch_select_indices(idx)
        self.mask, self.next_pos = self.mask[idx], self.next_pos[idx]
        lead = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # columns of padding only
        if lead:
            for layer in self.cache.layers:
                layer.drop_front(lead)
            self.mask = self.mask[:, lead:]
        return picked[idx]

    def _forward(self, picked: torch.Tensor) -> None:
        """Run the model on every row's newest token (B,); the next logits (B, V) replace the old."""
        self.max_rows = max(self.max_rows, len(self.rows))
        self.logits, self.mask, self.next_pos = decode_step(
            self.model, picked, self.mask, self.next_pos, self.cache, self.cache_kw
        )


# ----------------------------------------------------------------------------- the loop thread


class BatchingLoop:
    """One decoding thread fed from any thread: requests that arrive together decode together.

    Args:
        generator: A generator whose ``decode_engine()`` returns a :class:`DecodeEngine` (an
            ``HFGenerator`` over a model with plain KV caches: continuous batching), or any Generator
            (called once per request, one request at a time).
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
        """Requests answered one at a time (generators without an engine)."""
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
        """Most rows decoded together in one step so far (1 without an engine, once it served)."""
        return self.engine.max_rows if self.engine is not None else min(1, self.served)

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
        """Encode a new request into the engine, or (no engine) answer it now."""
        if self.engine is None:
            return self._answer(req)
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

    def _answer(self, req: Request) -> None:
        """Serve a request with one ``generate`` call (usage counted with the generator's ``tok``, if any)."""
        if req.cancelled:
            return req.abort()
        try:
            texts = self.generator.generate([req.prompt], req.cfg)[0]
        except Exception as e:  # noqa: BLE001 - reported to the request's caller
            return req.fail(e)
        self.served += 1
        tok = getattr(self.generator, "tok", None)
        req.ids = encode_prompt(tok, req.prompt) if tok is not None else []
        for i in range(req.cfg.n):
            text = texts[i] if i < len(texts) else ""
            used = len(tok(text, add_special_tokens=False)["input_ids"]) if tok is not None else 0
            reason = "length" if tok is not None and used >= req.cfg.max_new_tokens else "stop"
            _call(req.on_text, i, text, reason)
            req.finish_sample(i, text, reason, used)
