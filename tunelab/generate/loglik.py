"""Log-likelihood scoring of continuations by a local model (multiple choice, perplexity).

A :class:`LoglikScorer` answers ``log p(continuation | prompt)`` summed over the continuation's
tokens, as lm-eval's ``loglikelihood`` requests do. :func:`scorer_for` gives the scorer behind a
local generator, with the generator's own weights and precision.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from tunelab.device import autocast
from tunelab.generate.base import Generator, Prompt, encode_prompt
from tunelab.generate.hf import HFGenerator, fingerprint


class LoglikScorer(Protocol):
    """Anything that scores continuations: ``log p(continuation | prompt)`` summed over tokens."""

    fingerprint: str

    def loglik(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """One summed log-probability per (prompt, continuation) pair, in order."""
        ...

    def token_counts(self, pairs: list[tuple[Prompt, str]]) -> list[int]:
        """Tokens of each continuation (what ``loglik`` summed over); per-token tasks need it."""
        ...


class HFLoglikScorer:
    """Log-likelihoods from a local transformers model: batched, left-padded, one forward per batch.

    Args:
        model: A causal LM (possibly peft-wrapped).
        tok: Its tokenizer (chat prompts are rendered with its chat template).
        batch_size: Pairs per forward pass.
        precision: ``fp32`` or ``bf16`` (autocast).
    """

    def __init__(self, model: Any, tok: Any, batch_size: int = 16, precision: str = "fp32") -> None:
        self.model, self.tok, self.batch_size, self.precision = model.eval(), tok, batch_size, precision
        self.device = next(model.parameters()).device
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.model, self.tok)
        return self._fingerprint

    def encode(self, prompt: Prompt, continuation: str) -> tuple[list[int], int]:
        """Token ids of prompt + continuation, and how many trailing ids are the continuation."""
        ctx = encode_prompt(self.tok, prompt)
        cont = self.tok(continuation, add_special_tokens=False)["input_ids"]
        return ctx + cont, len(cont)

    def token_counts(self, pairs: list[tuple[Prompt, str]]) -> list[int]:
        return [len(self.tok(c, add_special_tokens=False)["input_ids"]) for _, c in pairs]

    def loglik(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        encoded = [self.encode(p, c) for p, c in pairs]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
        out = [0.0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, value in zip(chunk, self._batch([encoded[i] for i in chunk])):
                out[i] = value
        return out

    def _batch(self, batch: list[tuple[list[int], int]]) -> list[float]:
        """Summed continuation log-probabilities of one batch. Rows are left-padded (with position ids
        counted from each row's first real token), so every continuation ends at the last position and
        only the last ``max continuation + 1`` positions go through the LM head (``logits_to_keep``):
        the head over a 49k vocabulary at every prompt position was most of the cost."""
        width = max(len(ids) for ids, _ in batch)
        keep = max(n for _, n in batch) + 1  # positions whose logits predict some row's continuation
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(x)) + x for x, _ in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x, _ in batch], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad(), autocast(self.device.type, self.precision):
            logits = self._logits(ids, mask, positions, keep)[:, -keep:]  # (B, keep, V)
        out = []
        for row, (_, n_cont) in enumerate(batch):
            # continuation tokens: ids[row, width - n_cont:], each predicted by the position before it
            logp = torch.log_softmax(logits[row, keep - 1 - n_cont : keep - 1].float(), dim=-1)  # (n_cont, V)
            target = ids[row, width - n_cont :]
            out.append(float(logp.gather(-1, target[:, None]).sum()))
        return out

    def _logits(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, keep: int) -> torch.Tensor:
        """The model's logits at (at least) the last ``keep`` positions; a model whose forward takes
        neither ``position_ids`` nor ``logits_to_keep`` gives them all."""
        try:
            return self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        except TypeError:
            return self.model(input_ids=ids, attention_mask=mask).logits


def scorer_for(generator: Generator, batch_size: int | None = None) -> LoglikScorer:
    """The log-likelihood scorer over a local generator's weights, in its precision.

    Raises:
        ValueError: The generator is remote (an HTTP endpoint or vLLM): it returns text, not
            log-probabilities of given continuations.
    """
    if not isinstance(generator, HFGenerator):
        raise ValueError(f"log-likelihood tasks need a local model (backend 'hf'); got {type(generator).__name__}")
    return HFLoglikScorer(generator.source_model, generator.tok, batch_size=batch_size or generator.batch_size,
                          precision=generator.precision)
