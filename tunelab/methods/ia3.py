"""(IA)^3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper
than In-Context Learning", arXiv 2205.05638) through ``peft``.

Learned vectors rescale activations: keys and values, k' = l_k * k, v' = l_v * v, and the
feed-forward intermediate, h' = W_down (l_ff * act(W_up x)); all l start at 1, so training
starts from the base model. The vectors fold into the weights, so the method merges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from peft import IA3Config
from torch import nn
from transformers.pytorch_utils import Conv1D

from tunelab.methods.base import METHODS
from tunelab.methods.peft_base import PeftMethod


@dataclass
class IA3Params:
    """Recipe keys of ``method: {name: ia3}``."""

    target_modules: str | list[str] | None = None
    """Modules to rescale; None: peft's table per architecture, the paper's choice
    (``k_proj``, ``v_proj``, ``down_proj`` on Llama-style models); ``all-linear`` for every linear layer."""
    feedforward_modules: list[str] | None = None
    """Targets whose input (not output) is rescaled; None: peft's table (``down_proj`` on Llama-style)."""


@METHODS.register("ia3")
class IA3(PeftMethod):
    """Learned rescaling vectors on keys, values and the FFN via peft (Liu et al. 2022)."""

    Params = IA3Params
    mergeable = True
    trains = ("ia3_",)

    def peft_config(self, model: nn.Module) -> Any:
        """An ``IA3Config``; ``all-linear`` expands to short module names (see ``linear_names``)."""
        p = self.params
        targets = linear_names(model) if p.target_modules == "all-linear" else p.target_modules
        return IA3Config(task_type="CAUSAL_LM", target_modules=targets, feedforward_modules=p.feedforward_modules)


def linear_names(model: nn.Module) -> list[str]:
    """Short names of every linear layer but the LM head (``all-linear``).

    peft would expand ``all-linear`` to full module paths, and then refuse its own saved
    config on loading (short ``feedforward_modules`` are no subset of full paths).
    """
    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, nn.Linear | Conv1D) and m is not head})
