"""NEFTune (Jain et al. 2023, arXiv 2310.05914): uniform noise on input embeddings.

noise ~ U(-1, 1) * alpha / sqrt(L * d) added to the token embeddings during training
(L = sequence length, d = hidden size); a no-op in eval mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from tunelab.config import bound
from tunelab.models.load import base_model
from tunelab.regularizers.base import REGULARIZERS, Regularizer


@dataclass
class NEFTuneParams:
    """Recipe keys of ``regularizers: [{name: neftune}]``."""

    alpha: float = field(default=5.0, metadata=bound(ge=0))
    """Noise scale (the paper uses 5, 10 or 15)."""


@REGULARIZERS.register("neftune")
class NEFTune(Regularizer):
    """Uniform noise on input embeddings scaled by alpha/sqrt(L*d); off in eval."""

    Params = NEFTuneParams

    def apply(self, model: nn.Module) -> None:
        """Hook the noise onto the input embedding's output."""
        alpha = self.params.alpha
        emb = base_model(model).get_input_embeddings()

        def hook(module: nn.Module, args: tuple, out: torch.Tensor):
            if not module.training:
                return None
            scale = alpha / math.sqrt(out.shape[-2] * out.shape[-1])
            return out + torch.empty_like(out).uniform_(-scale, scale)

        emb.register_forward_hook(hook)
