"""Preference objectives: DPO (and IPO), SimPO, KTO and ORPO, on sequence log-probabilities.

Formulas follow TRL 1.16's trainers (checked against them in ``tests/train/test_trl_parity.py``),
written here over :func:`~tunelab.train.objectives.base.seq_logps`, whose log-probabilities are
summed over each completion's loss tokens and come from the same chunked, fused LM head as SFT.

- DPO (Rafailov et al. 2023): ``-log σ(β[(log π_c − log π_ref,c) − (log π_r − log π_ref,r)])``;
  ``loss_type: ipo`` (Azar et al. 2023) squares the length-averaged log-ratio margin minus 1/(2β).
- SimPO (Meng et al. 2024): no reference; ``-log σ(β(avg log π_c − avg log π_r) − γ)``.
- KTO (Ethayarajh et al. 2024): desirable ``1 − σ(β(r − z))``, undesirable ``1 − σ(β(z − r))``
  with ``r`` the log-ratio and ``z`` the batch's KL estimate from mismatched (prompt, completion)
  pairs, detached and clamped at 0; weighted by ``desirable_weight`` / ``undesirable_weight``.
- ORPO (Hong et al. 2024): the chosen completion's NLL minus ``β log σ(log odds_c − log odds_r)``
  on length-averaged log-probabilities; no reference.

Logged per step: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margin``, ``rewards/accuracy``
(the implicit rewards ``β × log-ratio``; SimPO and ORPO use ``β × average log-prob``), ``logps/*``,
and ``kl`` for KTO.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config import TrainConfig, bound
from tunelab.train.objectives.base import OBJECTIVES, Objective, seq_logps


def _sources(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The source index of each example."""
    return batch["example_source"]


def _reference(batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The batch's reference log-probabilities; a clear error when they were never computed."""
    ref = batch["ref"]
    if torch.isnan(ref).any():
        raise RuntimeError("reference log-probabilities missing: compute them before training "
                           "(tunelab.train.objectives.reference_logps)")
    return ref.to(like)


class _Paired(Objective):
    """Shared by the pair objectives: reward metrics from per-pair chosen/rejected rewards."""

    kind = "pairs"

    def _log(self, chosen: torch.Tensor, rejected: torch.Tensor, logps: torch.Tensor) -> None:
        self.record("rewards/chosen", chosen)
        self.record("rewards/rejected", rejected)
        self.record("rewards/margin", chosen - rejected)
        self.record("rewards/accuracy", (chosen > rejected).float())
        self.record("logps/chosen", logps[:, 0])
        self.record("logps/rejected", logps[:, 1])


@OBJECTIVES.register("dpo")
class DPO(_Paired):
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
        ratios = logps - _reference(batch, logps)  # (pairs, 2): chosen, rejected
        if p.loss_type == "ipo":
            avg = ratios / count.clamp(min=1)
            losses = (avg[:, 0] - avg[:, 1] - 1 / (2 * p.beta)) ** 2
        else:
            delta = p.beta * (ratios[:, 0] - ratios[:, 1])
            losses = -(1 - p.label_smoothing) * F.logsigmoid(delta) - p.label_smoothing * F.logsigmoid(-delta)
        rewards = p.beta * ratios.detach()
        self._log(rewards[:, 0], rewards[:, 1], logps.detach())
        return losses, _sources(batch)


@OBJECTIVES.register("simpo")
class SimPO(_Paired):
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
        return losses, _sources(batch)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for x < 0, stable on both sides of −log 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


@OBJECTIVES.register("orpo")
class ORPO(_Paired):
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
        return losses, _sources(batch)


@OBJECTIVES.register("kto")
class KTO(Objective):
    """Kahneman-Tversky Optimization on unpaired desirable/undesirable examples (e.g. successes and
    failures of sampled trajectories), with the batch's KL estimate as the reference point."""

    kind = "unpaired"

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
        ratio = logps - _reference(batch, logps)[:, 0]
        with torch.no_grad():
            kl_logps = seq_logps(model, batch, cfg, virtual_tokens, "kl_")[0][:, 0]
            kl = (kl_logps - _reference({"ref": batch["kl_ref"]}, kl_logps)[:, 0]).mean().clamp(min=0)
        good = batch["label"].bool()
        losses = torch.where(good, p.desirable_weight * (1 - torch.sigmoid(p.beta * (ratio - kl))),
                             p.undesirable_weight * (1 - torch.sigmoid(p.beta * (kl - ratio))))
        rewards = p.beta * ratio.detach()
        self.record("rewards/chosen", rewards[good])
        self.record("rewards/rejected", rewards[~good])
        if good.any() and (~good).any():
            self.record("rewards/margin", rewards[good].mean() - rewards[~good].mean())
        self.record("kl", kl.expand(1))
        return losses, _sources(batch)
