"""What the one loop minimises, per micro-batch: the seam for objectives other than SFT.

An objective turns a collated micro-batch into per-unit losses with the source index of each
unit; the loop sums them over the micro-batches of a step and divides by the step's
:meth:`Objective.units` (summed over micro-batches and processes), so gradient accumulation and
data parallelism give the loss of one large batch. SFT's units are target tokens; a preference
objective (DPO, KTO, ORPO) would return one loss per pair or example and count those.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from tunelab.config import TrainConfig
from tunelab.data.tokenize import IGNORE
from tunelab.train.loss import token_losses


class Objective(Protocol):
    """A per-batch training objective (see the module docstring)."""

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """How many loss units the micro-batch holds (the step's loss is their mean)."""
        ...

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(losses (N,) on the graph, source index (N,)) for the micro-batch's N units."""
        ...


class SFT:
    """Supervised fine-tuning: next-token cross-entropy on the target tokens (assistant turns)."""

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """Target tokens of the micro-batch."""
        return int((batch["targets"] != IGNORE).sum())

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-target-token losses and their source index (chunked head, fused where it applies)."""
        return token_losses(model, batch, cfg.loss_chunk, virtual_tokens, cfg.compile)
