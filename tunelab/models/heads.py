"""Heads an objective adds on top of a language model: the multiple-choice classifier head.

The classifier setting of very large dropout (Zhang & Bottou 2024, arXiv 2403.00946): the penultimate
features (the decoder's final normed hidden state) pass through dropout(p) into a linear layer. For
classification with label sets that differ between tasks and domains (other label words, unseen topics)
the head scores each (prompt, choice) sequence, as BERT's multiple-choice head does (Devlin et al. 2019,
``BertForMultipleChoice``): score = w . dropout_p(h_last) + b, where h_last is the hidden state of the
sequence's last token, and the class probabilities are the softmax of the scores over the item's choices.

The head sits on the base model under :data:`HEAD_ATTR`, so it moves, trains, checkpoints and averages
with the method's own trainable tensors (every method includes :func:`head_state` in its trainable
state) and evaluation finds it (:func:`head_of`): a model with a choice head answers multiple-choice
tasks with it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab.models.load import base_model, final_hidden_states

HEAD_ATTR = "tunelab_head"
"""The attribute of the base model that holds an objective's head (parameter names contain it)."""
HEAD_FILE = "tunelab_head.safetensors"
"""The head's weights in a run's ``final/`` folder (a peft adapter folder does not hold them)."""


class ChoiceHead(nn.Module):
    """dropout(p) -> linear(hidden, 1): one score per (prompt, choice) sequence.

    Args:
        hidden: the model's hidden size.
        p: dropout rate on the pooled feature (the paper: 0.9); off in eval mode.
    """

    def __init__(self, hidden: int, p: float = 0.0) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.dropout = nn.Dropout(p)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Scores (N,) of pooled features (N, hidden)."""
        return self.linear(self.dropout(pooled.to(self.linear.weight.dtype))).squeeze(-1)


def is_head_param(name: str) -> bool:
    """Whether parameter ``name`` (as ``named_parameters`` gives it, wrappers included) is a head's."""
    return name.startswith(HEAD_ATTR + ".") or f".{HEAD_ATTR}." in name


def head_of(model: nn.Module) -> ChoiceHead | None:
    """The head attached to ``model`` (plain or peft-wrapped), or None."""
    return getattr(base_model(model), HEAD_ATTR, None)


def attach_choice_head(model: nn.Module, p: float = 0.0) -> ChoiceHead:
    """Attach a new :class:`ChoiceHead` (or return the one attached, with dropout ``p``) on ``model``'s
    device; trainable. Initialised as ``nn.Linear`` is, from torch's global RNG (the run seeds it)."""
    head = head_of(model)
    if head is not None:
        head.dropout.p = p
        return head
    base = base_model(model)
    head = ChoiceHead(base.config.get_text_config().hidden_size, p)
    setattr(base, HEAD_ATTR, head.to(next(base.parameters()).device))
    return head


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The head's tensors by their parameter names in ``model`` (copies); {} without a head."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if is_head_param(n)}


def last_token_features(model: nn.Module, input_ids: torch.Tensor, lengths: torch.Tensor,
                        position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Final hidden state (N, hidden) at each row's last real token of right-padded causal rows.

    No attention mask is needed: with right padding and causal attention no real token sees a pad.
    ``lengths`` (N,) counts each row's real tokens; a row of length 0 gives position 0 (mask it out)."""
    t = input_ids.shape[1]
    inputs = {"input_ids": input_ids} | ({"position_ids": position_ids} if position_ids is not None else {})
    hidden = final_hidden_states(model, **inputs)[:, -t:]  # drops prompt-tuning virtual tokens
    last = (lengths - 1).clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def load_head(model: nn.Module, path: str | Path) -> ChoiceHead | None:
    """Attach the head saved at ``path`` (a :data:`HEAD_FILE`) to ``model``; None when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    state = load_file(str(path))
    head = attach_choice_head(model)
    head.load_state_dict({k.split(f"{HEAD_ATTR}.", 1)[-1]: v for k, v in state.items()})
    return head


def save_head(model: nn.Module, path: str | Path) -> bool:
    """Write the attached head's weights to ``path``; False (nothing written) without a head."""
    head = head_of(model)
    if head is None:
        return False
    save_file({f"{HEAD_ATTR}.{k}": v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, str(path))
    return True
