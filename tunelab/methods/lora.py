"""LoRA (Hu et al. 2021, arXiv 2106.09685) through ``peft``.

h = W0 x + (alpha / r) * B A x, with A random and B zero at init, so training starts
from the base model. DoRA (``use_dora``) and rsLoRA (``use_rslora``: scale alpha/sqrt(r))
are peft switches. The result is a standard peft adapter folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch import nn

from tunelab.config import bound
from tunelab.methods.base import METHODS, Method
from tunelab.models.heads import head_state, is_head_param


@dataclass
class LoRAParams:
    """Recipe keys of ``method: {name: lora}``."""

    r: int = field(default=16, metadata=bound(ge=1))
    """Rank of the update."""
    alpha: float = field(default=32, metadata=bound(gt=0))
    """Scale numerator (update scaled by alpha / r)."""
    dropout: float = field(default=0.05, metadata=bound(ge=0, lt=1))
    """Dropout on the LoRA input."""
    target_modules: str | list[str] = "all-linear"
    """``all-linear`` (every linear layer but the LM head) or module names (q_proj, ...)."""
    use_dora: bool = False
    """Weight-decomposed LoRA (DoRA)."""
    use_rslora: bool = False
    """Rank-stabilised scaling alpha / sqrt(r)."""
    bias: str = "none"
    """``none`` | ``all`` | ``lora_only``."""
    modules_to_save: list[str] = field(default_factory=list)
    """Extra modules trained in full and saved with the adapter."""


@METHODS.register("lora")
class LoRA(Method):
    """LoRA adapters via peft (rank, alpha, dropout, targets; DoRA and rsLoRA switches)."""

    Params = LoRAParams
    mergeable = True
    trains = ("lora_",)  # lora_A / lora_B (and DoRA's lora_magnitude_vector)

    def __init__(self, params: LoRAParams | None = None) -> None:
        super().__init__(params)
        self.frozen_cast_ok = not self.params.use_dora  # DoRA takes the base weight's norm in fp32

    def apply(self, model: nn.Module) -> nn.Module:
        """Wrap ``model`` in a peft model with LoRA on ``target_modules``; the base stays frozen."""
        p = self.params
        cfg = LoraConfig(
            r=p.r, lora_alpha=p.alpha, lora_dropout=p.dropout, target_modules=p.target_modules,
            use_dora=p.use_dora, use_rslora=p.use_rslora, bias=p.bias,
            modules_to_save=p.modules_to_save or None, task_type="CAUSAL_LM",
        )
        return get_peft_model(model, cfg)

    def may_change(self, param_name: str, model: nn.Module) -> bool:
        """LoRA tensors, plus ``modules_to_save`` copies and biases where the params train them."""
        p = self.params
        return (super().may_change(param_name, model)
                or (bool(p.modules_to_save) and ".modules_to_save." in param_name)
                or (p.bias != "none" and param_name.endswith(".bias")))

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The adapter tensors as peft saves them (names without the adapter name), and an objective's
        head (:mod:`tunelab.models.heads`) when one is attached."""
        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()} | head_state(model)

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Load tensors saved by ``trainable_state`` into the peft model (and its head)."""
        head = {k: v for k, v in state.items() if is_head_param(k)}
        set_peft_model_state_dict(model, {k: v for k, v in state.items() if k not in head})
        if head:
            super().load_trainable_state(model, head)

    @classmethod
    def load_final(cls, base: nn.Module, path: Path) -> nn.Module:
        """``base`` with the saved peft adapter folder attached."""
        return PeftModel.from_pretrained(base, path)

    def merge(self, model: nn.Module) -> nn.Module:
        """W0 + (alpha / r) B A folded into each target weight; the peft wrapper removed."""
        return model.merge_and_unload()
