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
        """Summed continuation log-probabilities. Multiple-choice pairs share their prompt: the first
        token of every continuation is read from one forward pass of each distinct prompt, and only
        continuations of two or more tokens are scored again as whole sequences, for their later tokens
        (on the ``nlp`` tasks that is 2-3x fewer sequences than one per pair)."""
        encoded = [self.encode(p, c) for p, c in pairs]
        out = [0.0] * len(encoded)
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, (ids, n_cont) in enumerate(encoded):
            if n_cont:
                by_prompt.setdefault(tuple(ids[: len(ids) - n_cont]), []).append(i)
        prompts = sorted(by_prompt, key=len, reverse=True)
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            logp = self._next_token_logp([list(c) for c in chunk])  # (B, V)
            for row, prompt in enumerate(chunk):
                for i in by_prompt[prompt]:
                    ids, n_cont = encoded[i]
                    out[i] += float(logp[row, ids[len(ids) - n_cont]])
        longer = sorted((i for i, (_, n) in enumerate(encoded) if n > 1), key=lambda i: -len(encoded[i][0]))
        for start in range(0, len(longer), self.batch_size):
            chunk = longer[start : start + self.batch_size]
            for i, value in zip(chunk, self._batch([encoded[i] for i in chunk], skip=1)):
                out[i] += value
        return out

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded ids, attention mask and position ids counted from each row's first real token."""
        width = max(len(x) for x in rows)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(x)) + x for x in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in rows], device=self.device)
        return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)

    def _next_token_logp(self, prompts: list[list[int]]) -> torch.Tensor:
        """log p(next token | prompt) over the vocabulary, one row per prompt: (B, V)."""
        ids, mask, positions = self._padded(prompts)
        with torch.no_grad(), autocast(self.device.type, self.precision):
            logits = self._logits(ids, mask, positions, 1)[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    def _batch(self, batch: list[tuple[list[int], int]], skip: int = 0) -> list[float]:
        """Summed log-probabilities of each row's continuation tokens after its first ``skip``. Rows are
        left-padded, so every continuation ends at the last position and only the last positions go
        through the LM head (``logits_to_keep``)."""
        ids, mask, positions = self._padded([x for x, _ in batch])
        width = ids.shape[1]
        keep = max(n for _, n in batch) - skip + 1  # positions whose logits predict a scored token
        with torch.no_grad(), autocast(self.device.type, self.precision):
            logits = self._logits(ids, mask, positions, keep)[:, -keep:]  # (B, keep, V)
        out = []
        for row, (_, n_cont) in enumerate(batch):
            # token k of the continuation sits at width - n_cont + k and is predicted by the position before
            logp = torch.log_softmax(logits[row, keep - 1 - n_cont + skip : keep - 1].float(), dim=-1)
            target = ids[row, width - n_cont + skip :]
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
