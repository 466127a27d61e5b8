"""LISA (Pan et al. 2024, "LISA: Layerwise Importance Sampling for Memory-Efficient Large
Language Model Fine-Tuning", arXiv 2403.17919).

Embeddings, the final norm and the LM head (everything outside the decoder layers; tied
embeddings are one tensor) always train. Every K steps all decoder layers freeze and gamma
of the L layers unfreeze, drawn uniformly without replacement:
active(step) = sample(range(L), gamma; rng(seed, step // K)).
The draw is a pure function of (seed, step // K), so a resumed run draws the same layers.
``on_step`` returns True at a switch and the loop rebuilds AdamW, keeping the state of the
always-on parameters (and of layers drawn again) and dropping the rest, so optimizer memory
stays flat (the pitfall of LMFlow issues 726/729/768/778); the LR schedule stays global.
Checkpoints hold every parameter that may have changed: the always-on ones and every layer
that was ever active. ``final/`` is a full HF checkpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.full import Full
from tunelab.methods.layers import params_by_layer, set_trainable
from tunelab.models.heads import is_head_param


@dataclass
class LISAParams:
    """Recipe keys of ``method: {name: lisa}``."""

    gamma: int = 2
    """Decoder layers trained at a time (the paper: 1-2)."""
    interval: int = 20
    """K: steps between re-drawing the active layers (the paper: 20)."""
    seed: int | None = None
    """Seed of the layer draws (each draw also depends on step // K); None: the run's ``train.seed``, so
    a sweep's seeds draw different layers."""


@METHODS.register("lisa")
class LISA(Full):
    """Always-on embeddings/norm/head plus gamma random decoder layers, re-drawn every K steps."""

    Params = LISAParams

    def __init__(self, params: Any = None) -> None:
        super().__init__(params)
        self.active: list[int] = []
        self.ever_active: set[int] = set()
        self._layers: dict[int, list[str]] = {}
        self._always: list[str] = []
        self._seed = self.params.seed

    def draw(self, period: int) -> list[int]:
        """The active layers of period ``step // K``: deterministic in (seed, period)."""
        n = len(self._layers)
        rng = random.Random((self._seed or 0) * 1_000_003 + period)
        return sorted(rng.sample(range(n), min(self.params.gamma, n)))

    def apply(self, model: nn.Module) -> nn.Module:
        """Train the always-on parameters and the layers of the first draw; freeze the rest.

        Raises:
            ValueError: ``gamma`` or ``interval`` below 1.
        """
        if self.params.gamma < 1 or self.params.interval < 1:
            raise ValueError(f"method.gamma and method.interval must be >= 1, got {self.params}")
        if self.params.seed is None:  # the runner seeds torch with train.seed just before building the method
            self._seed = torch.initial_seed()
        self._layers, self._always = params_by_layer(model)
        self._activate(model, self.draw(0))
        return model

    def _activate(self, model: nn.Module, layers: list[int]) -> None:
        """Make ``layers`` (and the always-on parameters) exactly the trainable set."""
        self.active = list(layers)
        self.ever_active.update(layers)
        set_trainable(model, set(self._always) | {n for i in layers for n in self._layers[i]})

    def may_change(self, param_name: str, model: nn.Module) -> bool:
        """The always-on parameters and those of every layer active so far (anything before ``apply``)."""
        if not self._layers:
            return True
        return param_name in self._always or any(param_name in self._layers[i] for i in self.ever_active)

    def on_step(self, step: int, model: nn.Module) -> bool:
        """Re-draw the active layers at each period start; True when they changed."""
        want = self.draw(step // self.params.interval)
        if want == self.active:
            return False
        self._activate(model, want)
        return True

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The always-on parameters and every layer that was ever active (frozen now or not)."""
        keep = set(self._always) | {n for i in self.ever_active for n in self._layers[i]}
        return {n: p.detach().clone() for n, p in model.named_parameters() if n in keep or is_head_param(n)}

    def load_trainable_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Restore the weights and the active set saved with them (``load_state`` runs first)."""
        super().load_trainable_state(model, state)
        self._activate(model, self.active)

    def state(self) -> dict[str, Any]:
        """The active and ever-active layers."""
        return {"active": self.active, "ever_active": sorted(self.ever_active)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the layers of ``state()`` (an empty state keeps the current ones)."""
        if state:
            self.active = list(state["active"])
            self.ever_active = set(state["ever_active"])
