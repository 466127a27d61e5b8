"""The KV cache of the continuous-batching decoder (:mod:`tunelab.generate.engine`) and the model calls on it.

A prompt is prefilled alone (:func:`prefill`: no padding, no mask); prefilled parts are merged into one
batch cache, each left-padded to the widest (:func:`merge`); every step feeds one token per row
(:func:`decode_step`: the cache grows in place, :class:`GrowingLayer`); finished rows leave and the
columns that then hold only padding are dropped (:func:`select_rows`).

Prompts that begin alike (an agent's instructions and example, a chat's system prompt) share their
prefill: :class:`PrefixReuse` keeps the last prompt's keys and values, and a prompt that begins with
at least ``min_tokens`` of the same tokens is prefilled from a copy of those columns, computing only
its own tail (the keys of a token do not depend on the tokens after it, so the cache is the same up to
the rounding of differently shaped matrix products).

Shapes in comments: B rows in the batch, T cache columns, V vocabulary, H KV heads, D head size.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

from tunelab.models.load import keep_last

Part = tuple[DynamicCache, torch.Tensor, torch.Tensor, torch.Tensor]
"""(cache, mask (B, T) long with 0 for left padding, next_pos (B,), logits (B, V) fp32): a batch, or
one prefilled prompt's rows, that :func:`merge` joins."""


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


def left_pad_kv(t: torch.Tensor, width: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, width, D), zeros in front."""
    return nn.functional.pad(t, (0, 0, width - t.shape[2], 0)) if t.shape[2] < width else t


class PrefixReuse:
    """A shared prompt beginning's keys and values, kept for the prompts after it that begin alike.

    Only for plain caches (every layer keeps every column: no sliding window evicting any), and only
    while the weights do not change: an engine holds one for its life (one ``generate`` call, or a
    server's model).

    Args:
        min_tokens: The shortest shared beginning worth keeping (shorter ones are prefilled whole).
    """

    def __init__(self, min_tokens: int = 16) -> None:
        self.min_tokens = min_tokens
        self.ids: list[int] = []
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # per layer (1, H, len(ids), D)
        self.reused_tokens = 0
        """Prompt tokens taken from a kept prefix instead of computed (a profile or a test reads it
        off an engine's ``reuse``)."""

    def shared(self, ids: list[int]) -> int:
        """How many leading tokens of ``ids`` the kept prefix serves (0: below ``min_tokens``). The
        last prompt token is never served (its logits pick the first new token)."""
        n = _common(self.ids, ids[:-1])
        return n if n >= self.min_tokens else 0

    def rows(self, model: nn.Module, n: int, rows: int, served: bool = True) -> DynamicCache:
        """A fresh cache of ``rows`` rows, each holding the kept prefix's first ``n`` columns
        (``served``: counted in :attr:`reused_tokens`; not when the prefix was computed just now)."""
        cache = DynamicCache(config=model.config)
        for layer, (k, v) in zip(cache.layers, self.layers):
            b, h, _, d = k.shape
            layer.update(k[:, :, :n].expand(rows, h, n, d), v[:, :, :n].expand(rows, h, n, v.shape[3]))  # copies
        self.reused_tokens += n * rows if served else 0
        return cache

    def keep(self, ids: list[int], cache: DynamicCache) -> None:
        """Remember ``ids`` and the first row of ``cache``, which holds them (the tensors are shared:
        nothing may change them in place; :func:`merge` and :meth:`rows` copy)."""
        self.ids = list(ids)
        self.layers = [(layer.keys[:1, :, : len(ids)], layer.values[:1, :, : len(ids)]) for layer in cache.layers]


def _common(a: list[int], b: list[int]) -> int:
    """Length of the common beginning of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def prefill(model: nn.Module, ids: list[int], cache_kw: str) -> tuple[DynamicCache, torch.Tensor]:
    """KV cache and last-position logits (1, V) fp32 of one prompt, alone (no padding, no mask).

    Args:
        model: The causal LM.
        ids: Prompt token ids.
        cache_kw: The model's cache keyword (``tunelab.models.load.cache_kwarg``).
    """
    device = next(model.parameters()).device
    cache = DynamicCache(config=model.config)
    out = model(
        input_ids=torch.tensor([ids], device=device),
        use_cache=True,
        logits_to_keep=keep_last(device=device),
        **{cache_kw: cache},
    )
    return cache, out.logits[:, -1].float()


def prefill_group(model: nn.Module, prompts: list[list[int]], cache_kw: str, reuse: PrefixReuse) -> Part:
    """Prefill several prompts in one forward pass: one row each (a :data:`Part`).

    Their common beginning is computed once (or served by ``reuse``, which then keeps it) and only
    the rest of each prompt runs, left-padded to the longest rest: a row's columns are the shared
    prefix, then padding (mask 0), then its own tokens, so every row's last token sits in the last
    column and its positions run on from the prefix as if there were no padding.
    """
    device = next(model.parameters()).device
    shortest = min(len(p) for p in prompts)
    common = min([shortest - 1, *(_common(prompts[0], p) for p in prompts[1:])])  # the last token always runs
    n = reuse.shared(prompts[0][: common + 1])
    served = bool(n)
    if not n and common >= reuse.min_tokens:  # a new shared beginning: compute it once and keep it
        head, _ = prefill(model, prompts[0][: common + 1], cache_kw)
        reuse.keep(prompts[0][:common], head)
        n = common
    rests = [p[n:] for p in prompts]
    width = max(map(len, rests))
    cache = reuse.rows(model, n, len(prompts), served) if n else DynamicCache(config=model.config)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rests], device=device)
    cols = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rests], device=device)
    mask = torch.cat([cols.new_ones(len(prompts), n), cols], dim=1)  # (B, n + width)
    lengths = torch.tensor([len(r) for r in rests], device=device)
    positions = (n + (cols.cumsum(-1) - 1)).clamp(min=n)  # (B, width): n, n+1, ... over each row's own tokens
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                logits_to_keep=keep_last(device=device), **{cache_kw: cache})
    return cache, mask, n + lengths, out.logits[:, -1].float()


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


def merge(model: nn.Module, parts: list[Part]) -> Part:
    """One batch from (cache, mask, next_pos, logits) parts, KV left-padded to the widest part."""
    width = max(part[1].shape[1] for part in parts)
    cache = DynamicCache(config=model.config)
    for i in range(len(cache.layers)):
        olds = [part[0].layers[i] for part in parts]
        cache.layers[i] = GrowingLayer().hold(
            torch.cat([left_pad_kv(o.keys, width) for o in olds]),  # (B, H, width, D)
            torch.cat([left_pad_kv(o.values, width) for o in olds]),
        )
    mask = torch.cat([nn.functional.pad(p[1], (width - p[1].shape[1], 0)) for p in parts])
    return cache, mask, torch.cat([part[2] for part in parts]), torch.cat([part[3] for part in parts])


def select_rows(
    cache: DynamicCache, mask: torch.Tensor, next_pos: torch.Tensor, idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the rows ``idx`` (B',) of the batch, then drop the leading columns that hold only padding
    (the cache changes in place); the kept rows' mask (B', T') and next_pos (B',)."""
    cache.batch_select_indices(idx)
    mask, next_pos = mask[idx], next_pos[idx]
    lead = int((mask.sum(0) == 0).long().cumprod(0).sum())  # columns of padding only
    if lead:
        for layer in cache.layers:
            layer.drop_front(lead)
        mask = mask[:, lead:]
    return mask, next_pos
