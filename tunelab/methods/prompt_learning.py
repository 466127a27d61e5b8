"""Prefix and prompt tuning plumbing: packed training rows, and generation with a KV cache.

Training rows carry no attention mask: ``position_ids`` restart at each packed sample and
transformers turns the restarts into a block-diagonal mask. peft's prompt learning breaks
that, and its generation path predates transformers 5 (which renamed ``past_key_values``
to ``cache``), so we own both places:

- training: prefix tuning passes the prefix as a KV cache, and transformers only looks for
  packed samples without a cache, so samples in a row would see each other; prompt tuning
  drops ``position_ids`` (positions run on across samples). A pre-hook on the transformers
  model rebuilds the row's meaning: every real token sees all virtual tokens and the earlier
  tokens of its own sample, at position ``n_virtual + p``, exactly as in training unpacked.
- generation: ``prepare_inputs_for_generation`` injects the prefix cache or the prompt
  embeddings once, at prefill, extends the (left-padded) attention mask by the virtual
  tokens and shifts positions by ``n_virtual``, matching training.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any

import torch
from torch import nn

from tunelab.models.load import cache_kwarg


def packed_segments(position_ids: torch.Tensor) -> torch.Tensor | None:
    """Sample index of each position (B, T), or None when no row restarts its positions."""
    restart = position_ids[:, 1:] != position_ids[:, :-1] + 1  # (B, T-1)
    if not bool(restart.any()):
        return None
    zero = torch.zeros_like(restart[:, :1])
    return torch.cat([zero, restart], dim=1).long().cumsum(dim=1)


def virtual_token_mask(segments: torch.Tensor, n_virtual: int, virtual_queries: bool,
                       eager: bool, dtype: torch.dtype) -> torch.Tensor:
    """A 4D mask (B, 1, Q, n_virtual + T): causal, within a sample, virtual tokens always visible.

    Args:
        segments: (B, T) sample index of each real token.
        n_virtual: virtual tokens in front of the row (prompt embeddings or prefix keys).
        virtual_queries: True when the virtual tokens are also queries (prompt tuning,
            Q = n_virtual + T); False when they only exist as keys (prefix tuning, Q = T).
        eager: an additive float mask (eager attention) instead of a boolean one (sdpa).
        dtype: dtype of the additive mask.
    """
    b = segments.shape[0]
    full = torch.cat([segments.new_full((b, n_virtual), -1), segments], dim=1)  # (B, n)
    idx = torch.arange(full.shape[1], device=segments.device)
    causal = idx[:, None] >= idx[None, :]  # (n, n)
    allowed = causal & ((full[:, :, None] == full[:, None, :]) | (idx < n_virtual))  # (B, n, n)
    if not virtual_queries:
        allowed = allowed[:, n_virtual:]
    allowed = allowed[:, None]  # (B, 1, Q, n)
    if not eager:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _is_eager(model: nn.Module) -> bool:
    """Whether the model runs eager attention (it takes additive float masks)."""
    return getattr(model.config, "_attn_implementation", "sdpa") == "eager"


def _prefix_pre_hook(n_virtual: int, key: str) -> Callable:
    """A forward pre-hook giving a packed training row (prefix as KV cache) its per-sample mask."""
    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        if key == "cache" and "past_key_values" in kwargs and kwargs.get("cache") is None:
            kwargs["cache"] = kwargs.pop("past_key_values")  # peft's name for it, deprecated by transformers 5
        cache, pos = kwargs.get(key), kwargs.get("position_ids")
        if kwargs.get("attention_mask") is not None or cache is None or pos is None:
            return args, kwargs
        if cache.get_seq_length() != n_virtual:  # decoding with a filled cache: not a training row
            return args, kwargs
        seg = packed_segments(pos)
        if seg is not None:  # else one sample per row: the default causal mask with the offset is right
            kwargs["attention_mask"] = virtual_token_mask(seg, n_virtual, False, _is_eager(module), module.dtype)
        return args, kwargs

    return hook


def _generation_inputs(n_virtual: int, kind: str) -> Callable:
    """``prepare_inputs_for_generation`` for prefix (``kind='prefix'``) or prompt tuning.

    Bound to the peft model as a method, so a deep copy (e.g. a bf16 copy for decoding)
    rebinds it to the copy's own weights.
    """

    def prepare(self: nn.Module, *args: Any, **kwargs: Any) -> dict[str, Any]:
        mk = self.base_model_prepare_inputs_for_generation(*args, **kwargs)
        ids, mask, cache = mk["input_ids"], mk.get("attention_mask"), mk.get("cache")
        b, t = ids.shape
        # without use_cache the model still hands back the cache it was given: start afresh each step
        prefill = cache is None or cache.get_seq_length() == 0 or mk.get("use_cache") is False
        pos = mk.get("position_ids")
        if pos is None:  # contiguous after the real tokens already cached
            past = 0 if prefill else cache.get_seq_length() - n_virtual
            pos = torch.arange(past, past + t, device=ids.device).expand(b, t)
        if mask is not None:
            if mask.ndim != 2:
                raise NotImplementedError("prefix/prompt tuning generation needs a 2D mask (a dynamic cache)")
            mk["attention_mask"] = torch.cat([mask.new_ones(b, n_virtual), mask], dim=1)
        mk["position_ids"] = pos + n_virtual
        if not prefill:
            return mk
        if kind == "prefix":
            mk["cache"] = self.get_prompt(batch_size=b)  # the model returns it grown; generate keeps it
        else:
            embeds = self.word_embeddings(ids)  # (B, T, C)
            prompts = self.get_prompt(batch_size=b).to(embeds.dtype)  # (B, n_virtual, C)
            mk["inputs_embeds"], mk["input_ids"] = torch.cat([prompts, embeds], dim=1), None
            virtual = torch.arange(n_virtual, device=ids.device).expand(b, n_virtual)
            mk["position_ids"] = torch.cat([virtual, pos + n_virtual], dim=1)
        return mk

    return prepare


def install_prefix(peft_model: nn.Module, n_virtual: int) -> None:
    """Packed rows and generation for a peft prefix-tuning model (see the module docstring)."""
    kw = cache_kwarg(peft_model)  # transformers 5 calls the KV cache ``cache``; peft predates that
    peft_model.base_model.register_forward_pre_hook(_prefix_pre_hook(n_virtual, kw), with_kwargs=True)
    if kw == "cache":  # transformers 5; with older ones peft's own generation path fits
        peft_model.prepare_inputs_for_generation = MethodType(_generation_inputs(n_virtual, "prefix"), peft_model)


def install_prompt(peft_model: nn.Module, n_virtual: int) -> None:
    """Packed rows and generation for a peft prompt-tuning model (see the module docstring).

    The outer hook takes ``position_ids`` before peft drops them; the inner one, on the
    transformers model, receives the prompt-prefixed embeddings and gets positions
    ``0..n_virtual-1`` for the virtual tokens, ``n_virtual + p`` for a real token at ``p``.
    """
    held: dict[str, torch.Tensor | None] = {}

    def outer(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        held["pos"] = kwargs.pop("position_ids", None)
        return args, kwargs

    def inner(module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        pos = held.pop("pos", None)
        if pos is None or kwargs.get("inputs_embeds") is None:
            return None
        b = pos.shape[0]
        virtual = torch.arange(n_virtual, device=pos.device).expand(b, n_virtual)
        kwargs["position_ids"] = torch.cat([virtual, pos + n_virtual], dim=1)  # (B, n_virtual + T)
        seg = packed_segments(pos)
        if seg is not None and kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = virtual_token_mask(seg, n_virtual, True, _is_eager(module), module.dtype)
        return args, kwargs

    peft_model.register_forward_pre_hook(outer, with_kwargs=True)
    peft_model.base_model.register_forward_pre_hook(inner, with_kwargs=True)
    if cache_kwarg(peft_model) == "cache":  # transformers 5; else peft's own path fits
        peft_model.prepare_inputs_for_generation = MethodType(_generation_inputs(n_virtual, "prompt"), peft_model)
