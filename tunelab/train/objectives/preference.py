"""Shared by the preference objectives (:mod:`~tunelab.train.objectives.dpo`, ``simpo``, ``orpo``, ``kto``).

Each objective is one module named after its paper; their formulas follow TRL 1.16's trainers (checked
against them in ``tests/train/test_trl_parity.py``), written over
:func:`~tunelab.train.objectives.base.seq_logps`, whose log-probabilities are summed over each
completion's loss tokens and come from the same chunked, fused LM head as SFT. Logged per step:
``rewards/chosen``, ``rewards/rejected``, ``rewards/margin``, ``rewards/accuracy`` (the implicit rewards
``β × log-ratio``; SimPO and ORPO use ``β × average log-prob``), ``logps/*``, and ``kl`` for KTO.
"""

from __future__ import annotations

import torch

from tunelab.train.objectives.base import Objective


def example_sources(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The source index of each example."""
    return batch["example_source"]


def reference_of(batch: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The batch's reference log-probabilities; a clear error when they were never computed."""
    ref = batch["ref"]
    if torch.isnan(ref).any():
        raise RuntimeError("reference log-probabilities missing: compute them before training "
                           "(tunelab.train.objectives.reference_logps)")
    return ref.to(like)


class Paired(Objective):
    """Shared by the pair objectives: reward metrics from per-pair chosen/rejected rewards."""

    kind = "pairs"

    def _log(self, chosen: torch.Tensor, rejected: torch.Tensor, logps: torch.Tensor) -> None:
        self.record("rewards/chosen", chosen)
        self.record("rewards/rejected", rejected)
        self.record("rewards/margin", chosen - rejected)
        self.record("rewards/accuracy", (chosen > rejected).float())
        self.record("logps/chosen", logps[:, 0])
        self.record("logps/rejected", logps[:, 1])
