"""Find the decoder layers of any Hugging Face decoder, generically.

LISA, partial fine-tuning and bottleneck adapters all act per decoder layer. Rather than
hard-coding ``model.model.layers`` (Llama) or ``transformer.h`` (GPT-2), we look for the
``nn.ModuleList`` whose blocks own ``self_attn`` / ``mlp`` children.
"""

from __future__ import annotations

import re

from torch import nn

from tunelab.models.heads import is_head_param

BLOCK_PARTS = ("self_attn", "mlp")


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, module list) of the decoder layers.

    Raises:
        ValueError: no ``nn.ModuleList`` of blocks with ``self_attn`` / ``mlp`` children.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and all(
            any(hasattr(block, part) for part in BLOCK_PARTS) for block in module
        ):
            return name, module
    raise ValueError(f"no decoder layer list (blocks with {' / '.join(BLOCK_PARTS)}) in {type(model).__name__}")


def layer_index(param_name: str, prefix: str) -> int | None:
    """The decoder layer a parameter belongs to (``model.layers.3.mlp...`` -> 3), else None."""
    m = re.match(re.escape(prefix) + r"\.(\d+)\.", param_name)
    return int(m.group(1)) if m else None


def params_by_layer(model: nn.Module) -> tuple[dict[int, list[str]], list[str]]:
    """Parameter names grouped by decoder layer, and the names outside every layer.

    Tied tensors appear once (``named_parameters`` drops duplicates), so a tied LM head
    is the embedding's name.
    """
    prefix, layers = decoder_layers(model)
    per_layer: dict[int, list[str]] = {i: [] for i in range(len(layers))}
    outside: list[str] = []
    for name, _ in model.named_parameters():
        i = layer_index(name, prefix)
        (per_layer[i] if i is not None else outside).append(name)
    return per_layer, outside


def set_trainable(model: nn.Module, names: set[str]) -> None:
    """``requires_grad`` True exactly for the parameters named in ``names`` (and an objective's head,
    which always trains: :mod:`tunelab.models.heads`)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in names or is_head_param(name))
