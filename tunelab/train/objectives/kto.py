"""KTO: Kahneman-Tversky Optimization (Ethayarajh et al. 2024, arXiv 2402.01306) on unpaired examples.

Desirable examples ``1 − σ(β(r − z))``, undesirable ``1 − σ(β(z − r))``, with ``r`` the log-ratio to
the reference and ``z`` the batch's KL estimate from mismatched (prompt, completion) pairs, detached
and clamped at 0; weighted by ``desirable_weight`` / ``undesirable_weight``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tunelab.config import TrainConfig, bound
from tunelab.train.objectives.base import OBJECTIVES, Objective, seq_logps
from tunelab.train.objectives.preference import example_sources, reference_of


@OBJECTIVES.register("kto")
class KTO(Objective):
    """Kahneman-Tversky Optimization on unpaired desirable/undesirable examples (e.g. successes and
    failures of sampled trajectories), with the batch's KL estimate as the reference point."""

    kind = "unpaired"
    per_example = False  # the KL reference point is the micro-batch's mean

    @dataclass
    class Params:
        """Recipe keys of ``objective: {name: kto}``."""

        beta: float = field(default=0.1, metadata=bound(gt=0))
        """Strength of the implicit KL constraint (TRL's default 0.1)."""
        desirable_weight: float = field(default=1.0, metadata=bound(gt=0))
        """Weight of desirable examples' losses (raise it when they are the minority)."""
        undesirable_weight: float = field(default=1.0, metadata=bound(gt=0))
        """Weight of undesirable examples' losses."""

    @property
    def needs_reference(self) -> bool:
        """KTO compares against the reference model."""
        return True

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One loss per example; the KL estimate is the batch mean of the mismatched pairs'
        log-ratios (no gradient, clamped at 0), per micro-batch and process."""
        p = self.params
        logps = seq_logps(model, batch, cfg, virtual_tokens)[0][:, 0]
        ratio = logps - reference_of(batch, logps)[:, 0]
        with torch.no_grad():
            kl_logps = seq_logps(model, batch, cfg, virtual_tokens, "kl_")[0][:, 0]
            kl = (kl_logps - reference_of({"ref": batch["kl_ref"]}, kl_logps)[:, 0]).mean().clamp(min=0)
        good = batch["label"].bool()
        losses = torch.where(good, p.desirable_weight * (1 - torch.sigmoid(p.beta * (ratio - kl))),
                             p.undesirable_weight * (1 - torch.sigmoid(p.beta * (kl - ratio))))
        rewards = p.beta * ratio.detach()
        self.record("rewards/chosen", rewards[good])
        self.record("rewards/rejected", rewards[~good])
        if good.any() and (~good).any():
            self.record("rewards/margin", rewards[good].mean() - rewards[~good].mean())
        self.record("kl", kl.expand(1))
        return losses, example_sources(batch)
