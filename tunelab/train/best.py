"""Best checkpoint and early stopping on a held-out metric (``train.select_best``,
``train.early_stopping_patience``, ``train.best_metric``; lower is better).

Each held-out evaluation (every ``train.eval_every`` steps, and after the last step) is compared with
the best so far. With ``select_best`` a CPU copy of the best evaluation's trainable state is kept and
put back into the model when training ends, so the runner saves and evaluates that model; with
``early_stopping_patience: K`` training stops after K evaluations in a row without improvement. The
best value, its step, the patience counter and the best weights travel with every checkpoint, so a
resumed run decides exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunelab.config import ConfigError, TrainConfig
from tunelab.methods.base import Method


@dataclass
class Best:
    """The best held-out evaluation so far and the early-stopping counter."""

    metric: str = "heldout_loss"
    """The metrics-row key compared (lower is better)."""
    keep_weights: bool = False
    """Keep the best evaluation's trainable state (``select_best``)."""
    patience: int = 0
    """Evaluations without improvement before stopping (0: never)."""
    value: float = math.inf
    step: int | None = None
    bad_evals: int = 0
    stopped_at: int | None = None
    weights: dict[str, torch.Tensor] | None = None

    @classmethod
    def of(cls, cfg: TrainConfig, has_heldout: bool) -> Best | None:
        """The tracker ``cfg`` asks for, or None when neither selection nor early stopping is on."""
        if not (cfg.select_best or cfg.early_stopping_patience):
            return None
        if not (has_heldout and cfg.eval_every > 0):
            key = "train.select_best" if cfg.select_best else "train.early_stopping_patience"
            raise ConfigError(f"{key}: needs held-out evaluations (held-out rows and train.eval_every > 0)")
        return cls(cfg.best_metric, cfg.select_best, cfg.early_stopping_patience)

    def update(self, step: int, row: dict[str, float], trainable: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Record the evaluation in ``row`` made after ``step`` steps; True when training should stop.

        ``trainable`` gives the model's trainable state; it is called (and copied to CPU) on improvement only.
        """
        if row[self.metric] < self.value:  # NaN never improves
            self.value, self.step, self.bad_evals = row[self.metric], step, 0
            if self.keep_weights:
                self.weights = {k: v.detach().to("cpu", copy=True) for k, v in trainable().items()}
        else:
            self.bad_evals += 1
        if self.patience and self.bad_evals >= self.patience:
            self.stopped_at = step
        return self.stopped_at is not None

    def state(self) -> dict[str, Any]:
        """The JSON-serialisable part, for a checkpoint's meta.json (the weights are saved beside it)."""
        return {"value": None if self.step is None else self.value, "step": self.step, "bad_evals": self.bad_evals}

    def load_state(self, state: dict[str, Any], weights: dict[str, torch.Tensor] | None) -> None:
        """Restore :meth:`state` and the best weights of a checkpoint."""
        if state.get("step") is not None:
            self.value, self.step, self.bad_evals = state["value"], state["step"], state["bad_evals"]
        self.weights = weights

    def finish(self, method: Method, model: nn.Module) -> dict[str, Any]:
        """Load the best weights into ``model`` (``select_best``); returns the summary entries."""
        if self.weights is not None:
            missing = set(method.trainable_state(model)) - set(self.weights)
            if missing:  # e.g. LISA layers first activated after the best step
                warnings.warn(f"select_best: {len(missing)} tensors trained after step {self.step} keep their last values",
                              stacklevel=2)
            method.load_trainable_state(model, self.weights)
        return {"best_step": self.step, "best_metric": self.metric, "best_value": None if self.step is None else self.value,
                "selected_best": self.weights is not None, "stopped_early": self.stopped_at is not None,
                "stopped_at": self.stopped_at}
