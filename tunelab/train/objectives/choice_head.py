"""``choice_head``: fine-tune a classifier head on the model's features, the setting of very large dropout.

Zhang & Bottou 2024 ("Fine-tuning with Very Large Dropout", arXiv 2403.00946) fine-tune a pre-trained
network with dropout p ~ 0.9 on the penultimate features right before a linear classifier. Here the
features are the decoder's final hidden state at the last token of each (prompt, choice) sequence and
the classifier scores each choice (:class:`~tunelab.models.heads.ChoiceHead`: dropout_p then linear, as
BERT's multiple-choice head), so label sets may differ between training and the shifted evaluation
(other label words, unseen topics). The loss is the cross-entropy of the softmax over an example's
choices against its answer; the method (LoRA, full, ...) decides what else trains.

Recipe: ``objective: {name: choice_head, dropout: 0.9}`` on sources whose rows carry ``choices`` and
``answer`` (the ``nlp`` family's sentiment, topic and yes/no sub-tasks). Held-out metrics are the same
cross-entropy and the accuracy (``heldout_accuracy``), so ``select_best`` chooses on them. Evaluation
of multiple-choice tasks (``nlp_mc``, ``nlp_mc_ood``) then scores with the head
(:func:`tunelab.generate.loglik.scorer_for`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import TrainConfig, bound
from tunelab.data.preference import SeqRow, collate_seqs
from tunelab.device import autocast
from tunelab.models.heads import attach_choice_head, head_of, last_token_features
from tunelab.train.objectives.base import OBJECTIVES, Objective


@dataclass
class ChoiceHeadParams:
    """Recipe keys of ``objective: {name: choice_head}``."""

    dropout: float = field(default=0.0, metadata=bound(ge=0, lt=1))
    """Dropout rate on the pooled features before the linear head (very large dropout: 0.9)."""


def choice_scores(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Head scores (examples, choices) of a collated ``choices`` micro-batch; -inf where an example
    has fewer choices than the widest (its padding sequences)."""
    n_rows, n = batch["ref"].shape  # batch rows are the examples' sequences, row-major
    lengths = (batch["source_idx"] >= 0).sum(dim=1)
    pooled = last_token_features(model, batch["input_ids"], lengths, batch["position_ids"])
    scores = head_of(model)(pooled).float().view(n_rows, n)
    return scores.masked_fill(lengths.view(n_rows, n) == 0, float("-inf"))


@OBJECTIVES.register("choice_head")
class ChoiceHeadObjective(Objective):
    """Cross-entropy over each example's choices of a linear head on dropout_p(last hidden state)."""

    Params = ChoiceHeadParams
    kind: ClassVar[str] = "choices"

    def prepare(self, model: nn.Module) -> None:
        """Attach the head (dropout ``p``) to ``model``.

        Raises:
            ValueError: ``dropout`` outside [0, 1).
        """
        attach_choice_head(model, self.params.dropout)

    def collate(self, rows: list, pad_id: int, packing: bool) -> dict[str, torch.Tensor]:
        """One causal batch row per (example, choice) sequence."""
        return collate_seqs(rows, pad_id)

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cross-entropy per example (N,), source index (N,)); logs ``accuracy``."""
        scores = choice_scores(model, batch)
        labels = batch["label"]
        self.record("accuracy", (scores.argmax(dim=-1) == labels).float())
        return F.cross_entropy(scores, labels, reduction="none"), batch["example_source"]

    @torch.no_grad()
    def heldout(self, model: nn.Module, rows: list[SeqRow], sources: list[str], pad_id: int, precision: str,
                cfg: TrainConfig, virtual_tokens: int) -> dict[str, Any] | None:
        """Mean cross-entropy (overall and per source) and accuracy of the held-out examples, dropout off."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        loss_sum = torch.zeros(len(sources), dtype=torch.float64)
        count = torch.zeros_like(loss_sum)
        correct = 0
        with autocast(device.type, precision):
            for i in range(0, len(rows), cfg.batch_size):
                batch = {k: v.to(device) for k, v in collate_seqs(rows[i : i + cfg.batch_size], pad_id).items()}
                scores = choice_scores(model, batch)
                losses = F.cross_entropy(scores, batch["label"], reduction="none").double().cpu()
                src = batch["example_source"].cpu()
                loss_sum.index_add_(0, src, losses)
                count.index_add_(0, src, torch.ones_like(losses))
                correct += int((scores.argmax(dim=-1) == batch["label"]).sum())
        model.train(was_training)
        out = {f"heldout_loss/{n}": (loss_sum[i] / count[i]).item() for i, n in enumerate(sources) if count[i] > 0}
        out["heldout_loss"] = (loss_sum.sum() / count.sum().clamp(min=1)).item()
        out["heldout_accuracy"] = correct / max(1, len(rows))
        return out
