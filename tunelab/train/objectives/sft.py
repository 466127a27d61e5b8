"""Supervised fine-tuning: next-token cross-entropy on the target tokens (assistant turns)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tunelab.config import TrainConfig
from tunelab.data.tokenize import IGNORE, collate
from tunelab.train.loss import token_losses
from tunelab.train.objectives.base import OBJECTIVES, Objective


@OBJECTIVES.register("sft")
class SFT(Objective):
    """Next-token cross-entropy on the assistant turns (the default)."""

    @dataclass
    class Params:
        """Recipe keys of ``objective: {name: sft}`` (none)."""

    def __init__(self, params: Params | None = None) -> None:
        super().__init__(params if params is not None else self.Params())

    def collate(self, rows: list, pad_id: int, packing: bool) -> dict[str, torch.Tensor]:
        """Token rows into a padded micro-batch."""
        return collate(rows, pad_id, packing)

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """Target tokens of the micro-batch."""
        return int((batch["targets"] != IGNORE).sum())

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-target-token losses and their source index (chunked head, fused where it applies)."""
        return token_losses(model, batch, cfg.loss_chunk, virtual_tokens, cfg.compile)
