"""The KV cache of the continuous-batching decoder (:mod:`tunelab.generate.engine`) and the model calls on it.

A prompt is prefilled alone (:func:`prefill`: no padding, no mask); prefilled parts are merged into one
batch cache, each left-padded to the widest (:func:`merge`); every step feeds one token per row
(:func:`decode_step`: the cache grows in place, :class:`GrowingLayer`); finished rows leave and the
columns that then hold only padding are dropped (:func:`select_rows`).

Shapes in comments: B rows in the batch, T cache columns, V vocabulary, H KV heads, D head size.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

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
