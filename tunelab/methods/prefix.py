"""Prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for
Generation", arXiv 2101.00190) through ``peft``.

Every attention layer l gets trainable key/value prefixes P_k^l, P_v^l (n virtual tokens):
head = softmax(q [P_k; K]^T / sqrt(d)) [P_v; V]; the base model stays frozen. With
``prefix_projection`` the prefixes are reparametrised by an MLP (the paper's choice for
stable training; the saved adapter holds the projected prefixes). peft feeds the prefixes
as a KV cache, so packed rows need our per-sample mask (``tunelab.methods.prompt_learning``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft import PrefixTuningConfig
from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.peft_base import PeftMethod
from tunelab.methods.prompt_learning import install_prefix


@dataclass
class PrefixParams:
    """Recipe keys of ``method: {name: prefix}``."""

    num_virtual_tokens: int = 20
    """Prefix length (virtual key/value positions per layer)."""
    prefix_projection: bool = False
    """Reparametrise the prefixes through a 2-layer MLP while training."""
    encoder_hidden_size: int | None = None
    """Hidden size of that MLP (None: the model's hidden size)."""


@METHODS.register("prefix")
class PrefixTuning(PeftMethod):
    """Trainable key/value prefixes in every layer via peft (Li & Liang 2021)."""

    Params = PrefixParams
    trains = ("prompt_encoder.",)  # the prefixes (and the projection MLP) live in peft's prompt encoder

    def peft_config(self, model: nn.Module) -> Any:
        """A ``PrefixTuningConfig``; the projection MLP is as wide as the model unless set."""
        p = self.params
        hidden = p.encoder_hidden_size or model.config.get_text_config().hidden_size
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p.num_virtual_tokens,
                                  prefix_projection=p.prefix_projection, encoder_hidden_size=hidden)

    @classmethod
    def install(cls, model: nn.Module) -> nn.Module:
        """Packed-row masking and generation with the prefix cache (``prompt_learning``)."""
        install_prefix(model, model.active_peft_config.num_virtual_tokens)
        return model
