"""Very large dropout (Zhang & Bottou 2024, arXiv 2403.00946).

Dropout at rate p (the paper: 0.9) on the penultimate representation: for a causal LM
the final hidden state entering the LM head, h -> lm_head(dropout_p(h)). Applied as a
forward pre-hook on the output embedding, so it works for every method and is a no-op
in eval mode (``module.training`` False).

The paper's own setting is a classifier: ``PooledClassifier`` pools the final hidden state
of the last non-pad token, applies dropout_p and a linear head (logits = W dropout_p(h_last) + b),
trained with ``classification_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import bound
from tunelab.models.load import base_model, final_hidden_states
from tunelab.regularizers.base import REGULARIZERS, Regularizer


@dataclass
class VeryLargeDropoutParams:
    """Recipe keys of ``regularizers: [{name: very_large_dropout}]``."""

    p: float = field(default=0.9, metadata=bound(ge=0, lt=1))
    """Dropout rate on the final hidden state (0 <= p < 1)."""


@REGULARIZERS.register("very_large_dropout")
class VeryLargeDropout(Regularizer):
    """Dropout (p up to 0.95) on the hidden state right before the LM head; off in eval."""

    Params = VeryLargeDropoutParams

    def apply(self, model: nn.Module) -> None:
        """Hook dropout onto the LM head's input.

        Raises:
            ValueError: ``p`` outside [0, 1).
        """
        p = self.params.p
        if not 0 <= p < 1:
            raise ValueError(f"very_large_dropout.p must be in [0, 1), got {p}")
        head = base_model(model).get_output_embeddings()

        def hook(module: nn.Module, args: tuple):
            if not module.training or p == 0:
                return None
            return (F.dropout(args[0], p=p, training=True), *args[1:])

        head.register_forward_pre_hook(hook)


class PooledClassifier(nn.Module):
    """Sequence classifier: last non-pad hidden state -> dropout(p) -> linear (Zhang & Bottou's setting).

    Args:
        model: a causal LM (plain or peft-wrapped); its final normed hidden state is the feature.
        num_labels: classes of the linear head.
        p: dropout rate on the pooled feature (the paper: 0.9); off in eval mode.
    """

    def __init__(self, model: nn.Module, num_labels: int, p: float = 0.9) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.model = model
        self.dropout = nn.Dropout(p)
        self.head = nn.Linear(base_model(model).config.get_text_config().hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (B, num_labels); padding may sit left or right of the tokens."""
        b, t = input_ids.shape
        hidden = final_hidden_states(self.model, input_ids=input_ids, attention_mask=attention_mask)
        hidden = hidden[:, -t:]  # (B, T, C); drops prompt-tuning virtual tokens
        if attention_mask is None:
            last = torch.full((b,), t - 1, device=input_ids.device)
        else:
            last = (attention_mask * torch.arange(t, device=input_ids.device)).argmax(dim=-1)  # (B,)
        pooled = hidden[torch.arange(b, device=input_ids.device), last]  # (B, C)
        return self.head(self.dropout(pooled.to(self.head.weight.dtype)))


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of class logits (B, K) against labels (B,)."""
    return F.cross_entropy(logits.float(), labels)
