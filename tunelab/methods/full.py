"""Full fine-tuning: every parameter trains; the result is a standard HF checkpoint."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoModelForCausalLM

from tunelab.methods.base import METHODS, Method


@METHODS.register("full")
class Full(Method):
    """Full fine-tuning (all parameters)."""

    # the saved model holds every weight, and LISA/partial unfreeze frozen layers later: keep fp32
    frozen_cast_ok = False

    def apply(self, model: nn.Module) -> nn.Module:
        """Unfreeze every parameter."""
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    @classmethod
    def load_final(cls, base: nn.Module, path: Path) -> nn.Module:
        """The saved full checkpoint, in ``base``'s dtype (``base`` itself is not needed)."""
        return AutoModelForCausalLM.from_pretrained(path, dtype=base.dtype)

    def merge(self, model: nn.Module) -> nn.Module:
        """The model itself: it already is a plain transformers model."""
        return model
