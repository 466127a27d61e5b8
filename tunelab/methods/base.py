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
  tuning), which the loss drops;
- ``trains`` / ``may_change(name, model)``: the parameters training may change (the
  contract tests hold every method to it).

Adding a method is one file in this package (``tunelab/methods/<name>.py``) and, to run it,
a recipe naming it:

- ``@METHODS.register("<name>")`` on the class registers it and sets its ``name``; the
  name is written nowhere else;
- ``METHODS`` imports every module of ``tunelab.methods`` on first use, so no list of
  modules needs the new file (third-party packages use the ``tunelab.methods`` entry-point
  group);
- ``Params`` (a dataclass) gives the recipe keys, ``trains`` (or an overridden
  ``may_change``) the parameters it may change; ``tests/methods/test_contract.py`` iterates
  the registry and checks the new method like every other one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tunelab.config import DEFAULT_METHOD, parse_params
from tunelab.registry import Registry


@dataclass
class NoParams:
    """A method without recipe keys (``method: {name: full}``)."""


class Method:
    """Base class of training methods; subclasses implement ``apply`` and ``load_final``."""

    name: ClassVar[str]
    """The registry name, as written in recipes (set by ``@METHODS.register``)."""
    Params: ClassVar[type] = NoParams
    """Dataclass of the recipe keys (``method: {name: ..., **keys}``) with defaults and docstrings."""
    mergeable: ClassVar[bool] = False
    """``merge`` folds the method into a plain transformers model (LoRA, IA3)."""
    trains: ClassVar[tuple[str, ...] | None] = None
    """Substrings of the names of the parameters training may change (None: any parameter);
    ``may_change`` reads it, and the contract tests check it."""
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
        """Prepare ``model`` for training: set ``requires_grad``, wrap it or add modules.

        Returns:
            The model to train (may be a wrapper, e.g. a peft model).
        """
        raise NotImplementedError

    def may_change(self, param_name: str, model: nn.Module) -> bool:
        """Whether training may change parameter ``param_name`` of ``model`` (after ``apply``).

        The default reads ``trains``; override it where the answer depends on the params or
        the model (e.g. which decoder layers a partial method selects).
        """
        return self.trains is None or any(k in param_name for k in self.trains)

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer groups of the trainable parameters: ``{"params": [...], "lr_mult": m}``."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_mult": 1.0}]

    def on_step(self, step: int, model: nn.Module) -> bool:
        """Called before each optimizer step.

        Returns:
            True when the trainable set changed; the loop then rebuilds the optimizer.
        """
        return False

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint holds: every parameter training may have changed, by name."""
        return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Copy a checkpoint's ``trainable_state`` into ``model`` (already ``apply``-ed)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t)

    def state(self) -> dict[str, Any]:
        """The method's own JSON-serialisable state for checkpoints (e.g. LISA's active layers)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore ``state()`` from a checkpoint; runs before ``load_trainable_state``."""

    def save_final(self, model: nn.Module, tok, path: Path) -> None:
        """Write the trained result to ``path`` as a standard artefact, with the tokenizer."""
        model.save_pretrained(path)
        tok.save_pretrained(path)

    @classmethod
    def load_final(cls, base: nn.Module, path: Path) -> nn.Module:
        """Rebuild the trained model from ``save_final``'s folder on top of ``base``."""
        raise NotImplementedError

    def merge(self, model: nn.Module) -> nn.Module:
        """A plain transformers model with the method folded in (where ``mergeable``).

        Raises:
            NotImplementedError: The method cannot be merged.
        """
        raise NotImplementedError(f"method {self.name!r} cannot be merged")


METHODS: Registry[type[Method]] = Registry("method", package="tunelab.methods", entry_points="tunelab.methods")


def build_method(spec: dict[str, Any] | None = None) -> Method:
    """``{name: lora, r: 8}`` -> a configured Method (params validated, defaults filled).

    An empty or missing spec gives ``DEFAULT_METHOD`` with its defaults.

    Raises:
        ValueError: A spec with keys but no ``name``.
        RegistryError: An unknown method (the message lists the valid ones).
        ConfigError: An unknown or ill-typed key (the message lists the valid keys).
    """
    spec = dict(spec or {"name": DEFAULT_METHOD})
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
