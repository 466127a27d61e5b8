"""Very large dropout (Zhang & Bottou 2024, arXiv 2403.00946).

Dropout at rate p (the paper: 0.9) on the penultimate representation: for a causal LM
the final hidden state entering the LM head, h -> lm_head(dropout_p(h)). Applied as a
forward pre-hook on the output embedding, so it works for every method and is a no-op
in eval mode (``module.training`` False).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from tunelab.regularizers.base import REGULARIZERS, Regularizer, base_model


@dataclass
class VeryLargeDropoutParams:
    p: float = 0.9
    """Dropout rate on the final hidden state (0 <= p < 1)."""


@REGULARIZERS.register("very_large_dropout")
class VeryLargeDropout(Regularizer):
    """Dropout (p up to 0.95) on the hidden state right before the LM head; off in eval."""

    Params = VeryLargeDropoutParams

    def apply(self, model: nn.Module) -> None:
        p = self.params.p
        if not 0 <= p < 1:
            raise ValueError(f"very_large_dropout.p must be in [0, 1), got {p}")
        head = base_model(model).get_output_embeddings()

        def hook(module: nn.Module, args: tuple):
            if not module.training or p == 0:
                return None
            return (F.dropout(args[0], p=p, training=True), *args[1:])

        head.register_forward_pre_hook(hook)
