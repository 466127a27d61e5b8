"""Shared-prefix forward for groups of sequences that begin alike: the G episodes of one prompt (GRPO, RLOO).

The plain training forward runs each episode whole, so a group of G episodes runs its prompt G times (on
the calculator environment about half of a step's positions). Here the group's common beginning up to
the first position that carries a loss (at least the prompt) runs once, with its KV cache kept and
gradients on, and each episode's rest runs against that cache expanded to the group's rows: ``expand`` is
a view, so in backward the G rows' gradients add up in the shared positions, exactly as the G separate
copies' would. The hidden states are mathematically those of the plain forward (fp32 products of other
shapes differ in rounding only: a test matches losses and every gradient within 1e-5). With dropout active
(LoRA's ``dropout``), the shared positions draw one mask for the group instead of one per row: each
row's loss keeps its distribution, so the gradient is still unbiased, but the G rows' noise is correlated.

Where it does not apply the plain forward runs (:func:`applies`): a model whose KV cache is not a plain
growing one (sliding-window layers, Gemma 3), prompt-learning methods (virtual tokens), gradient checkpointing
(it turns the cache off in training), NEFTune, length-dependent rotary scaling, several processes; and groups
of one row or with fewer than two shared positions.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, DynamicLayer

from tunelab.data.rollouts import shared_tokens
from tunelab.models.load import base_model, cache_kwarg, final_hidden_states

MIN_SHARED = 2
"""Fewer shared positions than this run the plain forward (nothing to gain)."""


def applies(model: nn.Module) -> bool:
    """Whether ``model`` can run a group against a shared cache (see the module docstring): one process
    (several would each run a data-dependent number of forwards), a plain growing KV cache, no
    activation checkpointing (it drops the cache in training), no prompt learning, no hook on the input
    embeddings (NEFTune scales its noise by the length of the forward it runs in), rotary frequencies that
    do not depend on the forward's length (``dynamic`` / ``longrope`` scaling do)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        return False
    model = getattr(model, "module", model)  # a DDP wrapper
    inner = base_model(model)
    if any(getattr(m, "gradient_checkpointing", False) for m in inner.modules()):
        return False
    if any(getattr(c, "is_prompt_learning", False) for c in (getattr(model, "peft_config", None) or {}).values()):
        return False
    if inner.get_input_embeddings()._forward_hooks or inner.get_input_embeddings()._forward_pre_hooks:
        return False
    rope = getattr(inner.config, "rope_parameters", None) or getattr(inner.config, "rope_scaling", None) or {}
    if isinstance(rope, dict) and (rope.get("rope_type") or rope.get("type")) in ("dynamic", "longrope"):
        return False
    layers = getattr(DynamicCache(config=inner.config), "layers", None)
    return bool(layers) and all(type(x) is DynamicLayer for x in layers)


def shared_length(ids: torch.Tensor, targets: torch.Tensor) -> int:
    """:func:`~tunelab.data.rollouts.shared_tokens` of a collated group (``ids``, ``targets``: (G, T)): the
    common beginning, cut at the first position of any row that carries a loss, one position left to run."""
    return shared_tokens(ids.tolist(), targets.tolist())


def shared_prefix_hidden(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The decoder's final hidden states (B, T, C) of a right-padded batch with a ``group`` index per row,
    each group's shared beginning computed once; positions before a group's split hold zeros (they carry
    no loss). None where it does not apply (the caller runs the plain forward) or gains nothing."""
    groups = batch.get("group")
    if groups is None or not applies(model):
        return None
    ids, targets = batch["input_ids"], batch["targets"]
    n, width = ids.shape
    order: dict[int, list[int]] = {}
    for i, g in enumerate(groups.tolist()):
        order.setdefault(g, []).append(i)
    plan = [(rows, shared_length(ids[rows], targets[rows]) if len(rows) > 1 else 0) for rows in order.values()]
    if all(s < MIN_SHARED for _, s in plan):
        return None
    kw = cache_kwarg(model)
    inner = base_model(model)
    out: list[torch.Tensor | None] = [None] * n
    for rows, s in plan:
        sub = ids[rows]
        if s < MIN_SHARED:
            pos = torch.arange(width, device=ids.device).expand(len(rows), -1)
            h = final_hidden_states(model, input_ids=sub, position_ids=pos)
        else:
            cache = DynamicCache(config=inner.config)
            final_hidden_states(model, input_ids=sub[:1, :s], position_ids=torch.arange(s, device=ids.device)[None],
                                use_cache=True, **{kw: cache})
            for layer in cache.layers:  # one row -> the group's rows, a view (gradients add up in backward)
                layer.keys = layer.keys.expand(len(rows), -1, -1, -1)
                layer.values = layer.values.expand(len(rows), -1, -1, -1)
            pos = torch.arange(s, width, device=ids.device).expand(len(rows), -1)
            rest = final_hidden_states(model, input_ids=sub[:, s:], position_ids=pos, use_cache=True, **{kw: cache})
            h = torch.cat([rest.new_zeros(len(rows), s, rest.shape[-1]), rest], dim=1)
        for j, i in enumerate(rows):
            out[i] = h[j]
    return torch.stack(out)  # type: ignore[arg-type]
