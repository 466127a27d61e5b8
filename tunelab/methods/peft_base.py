"""Shared plumbing for methods that are a ``peft`` config (LoRA, IA3, prefix and prompt tuning).

``apply`` wraps the model with ``get_peft_model``; the result is saved as a standard peft
adapter folder and loaded with ``PeftModel.from_pretrained``. Checkpoints hold the
trainable tensors by name (the Method default), which covers every peft tuner exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peft import PeftModel, get_peft_model
from torch import nn

from tunelab.methods.base import Method


class PeftMethod(Method):
    """A method defined by a peft config; subclasses implement ``peft_config``."""

    def peft_config(self, model: nn.Module) -> Any:
        """The ``peft.PeftConfig`` for ``model``."""
        raise NotImplementedError

    def apply(self, model: nn.Module) -> nn.Module:
        """Wrap ``model`` with ``peft_config``; only the peft tensors train."""
        return self.install(get_peft_model(model, self.peft_config(model)))

    @classmethod
    def install(cls, model: nn.Module) -> nn.Module:
        """Hooks a method adds to a peft model (after ``apply`` and ``load_final``)."""
        return model

    @classmethod
    def load_final(cls, base: nn.Module, path: Path) -> nn.Module:
        """``base`` with the saved peft adapter folder attached, hooks installed."""
        return cls.install(PeftModel.from_pretrained(base, path))

    def merge(self, model: nn.Module) -> nn.Module:
        """The peft tensors folded into the base weights (``mergeable`` methods only)."""
        if not self.mergeable:
            raise NotImplementedError(f"method {self.name!r} cannot be merged")
        return model.merge_and_unload()
