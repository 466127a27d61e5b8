"""Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt
Tuning", arXiv 2104.08691) through ``peft``.

n trainable embeddings P (n x d) are prepended to the token embeddings: the frozen model
reads [P; E(x)]. Initialising P from real vocabulary embeddings (sampled, or the tokens of a
text) trains better than random, per the paper. The model's hidden states are n positions
longer than the input, so the method sets ``virtual_tokens`` and the loss drops them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from peft import PromptTuningConfig
from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.peft_base import PeftMethod
from tunelab.methods.prompt_learning import install_prompt


@dataclass
class PromptParams:
    """Recipe keys of ``method: {name: prompt}``."""

    num_virtual_tokens: int = 20
    """Number of soft prompt tokens prepended to every input."""
    init: Literal["random", "sample_vocab"] = "sample_vocab"
    """Initialisation when no ``init_text`` is given: random, or embeddings of sampled vocabulary."""
    init_text: str | None = None
    """Initialise from the embeddings of this text's tokens (repeated or cut to length)."""
    tokenizer: str | None = None
    """Tokenizer for ``init_text`` (None: the model's own folder)."""


@METHODS.register("prompt")
class PromptTuning(PeftMethod):
    """Trainable soft prompt embeddings prepended to the input via peft (Lester et al. 2021)."""

    Params = PromptParams
    trains = ("prompt_encoder.",)  # the soft prompt embeddings

    @property
    def virtual_tokens(self) -> int:  # type: ignore[override]
        """The soft prompt length: the model's hidden states are this much longer than the input."""
        return self.params.num_virtual_tokens

    def peft_config(self, model: nn.Module) -> Any:
        """A ``PromptTuningConfig``, initialised from ``init_text`` tokens when given.

        Raises:
            ValueError: ``init_text`` without a tokenizer to encode it.
        """
        p = self.params
        kwargs: dict[str, Any] = {"prompt_tuning_init": p.init.upper()}
        if p.init_text:
            tokenizer = p.tokenizer or getattr(model, "name_or_path", "")
            if not tokenizer:
                raise ValueError("method.init_text needs method.tokenizer (the model was not loaded from a folder)")
            kwargs = {"prompt_tuning_init": "TEXT", "prompt_tuning_init_text": p.init_text,
                      "tokenizer_name_or_path": tokenizer}
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p.num_virtual_tokens, **kwargs)

    @classmethod
    def install(cls, model: nn.Module) -> nn.Module:
        """Packed-row positions/masking and generation with the soft prompt (``prompt_learning``)."""
        install_prompt(model, model.active_peft_config.num_virtual_tokens)
        return model
