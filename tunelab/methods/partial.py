"""Partial fine-tuning (Shen et al. 2021, "Partial Is Better Than All: Revisiting Fine-tuning
Strategy for Few-shot Learning", arXiv 2102.03983).

Only chosen decoder layers train, each at its own learning rate: lr_i = lr * m_i. The paper
finds the layers and the m_i by evolutionary search; here they are given: the top and/or
bottom k layers, regexes on parameter names, a per-layer decay m_i = decay^(L-1-i) (top
layer 1, lower layers slower), and explicit multipliers per regex. ``final/`` is a full HF
checkpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.full import Full
from tunelab.methods.layers import decoder_layers, layer_index, params_by_layer, set_trainable


@dataclass
class PartialParams:
    """Recipe keys of ``method: {name: partial}``."""

    top_k: int | None = 4
    """Train the last k decoder layers (None or 0: none by this rule)."""
    bottom_k: int | None = None
    """Train the first k decoder layers."""
    patterns: list[str] = field(default_factory=list)
    """Also train parameters whose name matches one of these regexes (``re.search``)."""
    include_embeddings: bool = False
    """Train the input embeddings (tied with the LM head on e.g. SmolLM2: one tensor)."""
    include_head: bool = False
    """Train the final norm and the LM head."""
    layer_lr_decay: float = 1.0
    """lr multiplier of layer i = decay^(L-1-i): 1 is flat, below 1 slows lower layers."""
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    """Regex -> extra lr multiplier (first match wins), e.g. ``{"layers\\.0\\.": 0.1}``."""


@METHODS.register("partial")
class Partial(Full):
    """Train chosen decoder layers (top/bottom k, regexes) with per-layer lr multipliers."""

    Params = PartialParams

    def selected(self, model: nn.Module) -> set[str]:
        """Names of the parameters that train."""
        p = self.params
        per_layer, outside = params_by_layer(model)
        n = len(per_layer)
        layers = set(range(max(0, n - (p.top_k or 0)), n)) | set(range(min(n, p.bottom_k or 0)))
        names = {name for i in layers for name in per_layer[i]}
        names |= {name for name, _ in model.named_parameters() if any(re.search(r, name) for r in p.patterns)}
        ids = {id(prm): name for name, prm in model.named_parameters()}
        embed = {ids[id(prm)] for prm in model.get_input_embeddings().parameters()}
        head = {ids[id(prm)] for prm in model.get_output_embeddings().parameters()}
        if p.include_embeddings:
            names |= embed
        if p.include_head:
            names |= head | (set(outside) - embed)  # the final norm sits outside the layers
        return names

    def may_change(self, param_name: str, model: nn.Module) -> bool:
        """Exactly the ``selected`` parameters (e.g. ``top_k: 1``: the last decoder layer)."""
        return param_name in self.selected(model)

    def apply(self, model: nn.Module) -> nn.Module:
        """Train the ``selected`` parameters only.

        Raises:
            ValueError: The params select nothing.
        """
        names = self.selected(model)
        if not names:
            raise ValueError("method partial selects no parameters: set top_k, bottom_k, patterns or include_*")
        set_trainable(model, names)
        return model

    def lr_mult(self, name: str, prefix: str, n_layers: int) -> float:
        """The lr multiplier of one parameter: the layer decay times the first matching regex's."""
        i = layer_index(name, prefix)
        mult = 1.0 if i is None else self.params.layer_lr_decay ** (n_layers - 1 - i)
        for pattern, m in self.params.lr_multipliers.items():
            if re.search(pattern, name):
                return mult * m
        return mult

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """One optimizer group per distinct lr multiplier."""
        prefix, layers = decoder_layers(model)
        groups: dict[float, list[nn.Parameter]] = {}
        for name, prm in model.named_parameters():
            if prm.requires_grad:
                groups.setdefault(self.lr_mult(name, prefix, len(layers)), []).append(prm)
        return [{"params": ps, "lr_mult": m} for m, ps in groups.items()]
