"""Weight averaging along the training trajectory: an exponential moving average of the trainable weights.

The baseline Zhang & Bottou (2024, "Fine-tuning with Very Large Dropout", arXiv 2403.00946) compare very
large dropout against, after ensembles: averaging the weights visited while fine-tuning (the "moving
average" of Arpit et al. 2022, "Ensemble of Averages", arXiv 2110.10832), which smooths the trajectory and
tends to help out of distribution. ``train.weight_average`` (the decay ``beta``, 0 = off) keeps

    avg <- beta * avg + (1 - beta) * w        after every optimizer step, from avg = w at the first step,

over the method's trainable tensors (a LoRA run averages its adapters; a full fine-tune every weight).
Held-out evaluations score the averaged weights, so ``select_best`` chooses among averaged snapshots,
and the model a run returns, saves and evaluates holds the average. The average lives in memory, in
fp32: a resumed run starts it again from the weights it resumes with (said in the summary).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from tunelab.methods.base import Method


class WeightAverage:
    """An exponential moving average of ``method``'s trainable tensors of ``model``."""

    def __init__(self, method: Method, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.weight_average: the decay must be in (0, 1), got {decay}")
        self.method, self.decay, self.updates = method, decay, 0
        self.avg: dict[str, torch.Tensor] = {}

    @classmethod
    def of(cls, decay: float, method: Method) -> WeightAverage | None:
        """The average a config asks for (``decay`` 0: none)."""
        return cls(method, decay) if decay else None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current trainable weights into the average (after an optimizer step)."""
        for name, w in self.method.trainable_state(model).items():
            w = w.float()
            if name not in self.avg:  # the first step, or a tensor first trained now (LISA's layers)
                self.avg[name] = w.clone()
            else:
                self.avg[name].mul_(self.decay).add_(w, alpha=1.0 - self.decay)
        self.updates += 1

    def _as(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The average in the dtypes of the model's tensors."""
        current = self.method.trainable_state(model)
        return {n: t.to(current[n].dtype) for n, t in self.avg.items() if n in current}

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Within the block the model holds the averaged weights; its own come back after."""
        if not self.avg:
            yield
            return
        own = self.method.trainable_state(model)
        self.method.load_trainable_state(model, self._as(model))
        try:
            yield
        finally:
            self.method.load_trainable_state(model, own)

    def apply(self, model: nn.Module) -> None:
        """Put the averaged weights into ``model`` for good (the end of training)."""
        if self.avg:
            self.method.load_trainable_state(model, self._as(model))
