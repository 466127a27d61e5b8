"""DPO: Direct Preference Optimization (Rafailov et al. 2023, arXiv 2305.18290), and IPO (Azar et al.
2023, arXiv 2310.12036) as its ``loss_type: ipo``.

``-log σ(β[(log π_c − log π_ref,c) − (log π_r − log π_ref,r)])`` per pair, against the base model
(the reference, scored once before training); ``label_smoothing`` is conservative DPO; IPO squares the
length-averaged log-ratio margin minus 1/(2β).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import TrainConfig, bound
from tunelab.train.objectives.base import OBJECTIVES, seq_logps
from tunelab.train.objectives.preference import Paired, example_sources, reference_of


@OBJECTIVES.register("dpo")
class DPO(Paired):
    """Direct Preference Optimization on success/failure pairs against the base model (reference)."""

    @dataclass
    class Params:
        """Recipe keys of ``objective: {name: dpo}``."""

        beta: float = field(default=0.1, metadata=bound(gt=0))
        """Strength of the implicit KL constraint to the reference (TRL's default 0.1)."""
        loss_type: Literal["sigmoid", "ipo"] = "sigmoid"
        """``sigmoid``: DPO; ``ipo``: IPO's squared loss on length-averaged log-ratios."""
        label_smoothing: float = field(default=0.0, metadata=bound(ge=0, lt=0.5))
        """Conservative DPO: the probability that a pair's label is flipped (sigmoid only)."""

    @property
    def needs_reference(self) -> bool:
        """DPO and IPO compare against the reference model."""
        return True

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One loss per pair."""
        p = self.params
        logps, count = seq_logps(model, batch, cfg, virtual_tokens)
        ratios = logps - reference_of(batch, logps)  # (pairs, 2): chosen, rejected
        if p.loss_type == "ipo":
            avg = ratios / count.clamp(min=1)
            losses = (avg[:, 0] - avg[:, 1] - 1 / (2 * p.beta)) ** 2
        else:
            delta = p.beta * (ratios[:, 0] - ratios[:, 1])
            losses = -(1 - p.label_smoothing) * F.logsigmoid(delta) - p.label_smoothing * F.logsigmoid(-delta)
        rewards = p.beta * ratios.detach()
        self._log(rewards[:, 0], rewards[:, 1], logps.detach())
        return losses, example_sources(batch)
