"""SimPO: Simple Preference Optimization (Meng et al. 2024, arXiv 2405.14734): no reference model.

``-log σ(β(avg log π_c − avg log π_r) − γ)`` per pair, on length-averaged log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import TrainConfig, bound
from tunelab.train.objectives.base import OBJECTIVES, seq_logps
from tunelab.train.objectives.preference import Paired, example_sources


@OBJECTIVES.register("simpo")
class SimPO(Paired):
    """SimPO: length-normalised log-probability margin with a target gap; no reference model."""

    @dataclass
    class Params:
        """Recipe keys of ``objective: {name: simpo}`` (the paper's defaults for small models)."""

        beta: float = field(default=2.0, metadata=bound(gt=0))
        """Scale of the average log-probability reward."""
        gamma: float = field(default=0.5, metadata=bound(ge=0))
        """Target reward margin (γ in the paper)."""

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One loss per pair."""
        logps, count = seq_logps(model, batch, cfg, virtual_tokens)
        rewards = self.params.beta * logps / count.clamp(min=1)
        losses = -F.logsigmoid(rewards[:, 0] - rewards[:, 1] - self.params.gamma)
        self._log(rewards[:, 0].detach(), rewards[:, 1].detach(), logps.detach())
        return losses, example_sources(batch)
