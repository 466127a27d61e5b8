"""ORPO: Odds-Ratio Preference Optimization (Hong et al. 2024, arXiv 2403.07691): no reference model.

The chosen completion's NLL minus ``β log σ(log odds_c − log odds_r)`` on length-averaged
log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import TrainConfig, bound
from tunelab.train.objectives.base import OBJECTIVES, seq_logps
from tunelab.train.objectives.preference import Paired, example_sources


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for x < 0, stable on both sides of −log 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


@OBJECTIVES.register("orpo")
class ORPO(Paired):
    """Odds-Ratio Preference Optimization: SFT on the chosen plus an odds-ratio penalty; no reference."""

    @dataclass
    class Params:
        """Recipe keys of ``objective: {name: orpo}``."""

        beta: float = field(default=0.1, metadata=bound(gt=0))
        """Weight of the odds-ratio term (λ in the paper; TRL's ``beta``)."""

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor], cfg: TrainConfig,
                 virtual_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One loss per pair: its share of the micro-batch's chosen NLL (mean over all chosen
        tokens, as TRL pools it) minus ``β log σ(log odds ratio)``."""
        logps, count = seq_logps(model, batch, cfg, virtual_tokens)
        avg = logps / count.clamp(min=1)
        log_odds = (avg[:, 0] - avg[:, 1]) - (log1mexp(avg[:, 0]) - log1mexp(avg[:, 1]))
        ratio = F.logsigmoid(log_odds)
        pairs = logps.shape[0]
        nll = -logps[:, 0] * pairs / count[:, 0].sum().clamp(min=1)
        losses = nll - self.params.beta * ratio
        rewards = self.params.beta * avg.detach()
        self._log(rewards[:, 0], rewards[:, 1], logps.detach())
        self.record("nll_loss", nll.detach().mean().expand(pairs))
        self.record("log_odds_ratio", ratio.detach())
        return losses, example_sources(batch)
