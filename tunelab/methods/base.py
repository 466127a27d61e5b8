"""The method protocol and registry.

A method decides which parameters train and how the result is saved. The training loop
knows nothing else about it:

- ``apply(model) -> model``: freeze/unfreeze, wrap (peft), add modules;
- ``param_groups(model)``: the trainable parameters, optionally with ``lr_mult``;
- ``on_step(step, model) -> bool``: True when the trainable set changed (the loop then
  rebuilds the optimizer, keeping the state of parameters that stay trainable);
- ``trainable_state(model)`` / ``load_trainable_state(model, state)``: what a checkpoint holds;
- ``state()`` / ``load_state(d)``: the method's own JSON state (e.g. LISA's active layers);
- ``save_final(model, tok, path)`` and ``load_final(base_model, path)``: standard artefacts;
- ``frozen_cast_ok``: whether frozen linear weights may be stored in bf16 for the whole run;
- ``virtual_tokens``: positions the wrapped model prepends to its hidden states (prompt
  tuning), which the loss drops.

Adding a method touches its own file and a recipe; the contract tests iterate the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tunelab.config import parse_params
from tunelab.registry import Registry


@dataclass
class NoParams:
    pass


class Method:
    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    mergeable: ClassVar[bool] = False
    virtual_tokens: int = 0
    """Positions prepended to the hidden states (B, virtual + T, C); the loss skips them."""
    frozen_cast_ok: bool = True
    """Frozen linear weights may be stored in bf16 for the whole run under bf16 autocast (they never
    train later, are not saved, and only feed matmuls that autocast runs in bf16 anyway): False for
    full/partial/LISA (they save every weight; LISA trains a frozen layer later) and DoRA (it takes
    the base weight's norm in fp32)."""

    def __init__(self, params: Any = None) -> None:
        self.params = params if params is not None else self.Params()

    def apply(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_mult": 1.0}]

    def on_step(self, step: int, model: nn.Module) -> bool:
        return False

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass

    def save_final(self, model: nn.Module, tok, path: Path) -> None:
        model.save_pretrained(path)
        tok.save_pretrained(path)

    @classmethod
    def load_final(cls, base: nn.Module, path: Path) -> nn.Module:
        raise NotImplementedError

    def merge(self, model: nn.Module) -> nn.Module:
        """A plain transformers model with the method folded in (where that applies)."""
        raise NotImplementedError(f"method {self.name!r} cannot be merged")


METHODS: Registry[type[Method]] = Registry("method")


def build_method(spec: dict[str, Any]) -> Method:
    """``{name: lora, r: 8}`` -> a configured Method (params validated, defaults filled)."""
    spec = dict(spec or {"name": "full"})
    name = spec.get("name")
    if not name:
        raise ValueError("method: missing 'name'; valid choices: " + ", ".join(METHODS.names()))
    cls = METHODS.get(name)
    return cls(parse_params(cls.Params, spec, "method"))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied tensors counted once."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    return sum(p.numel() for p in seen.values() if p.requires_grad), total
