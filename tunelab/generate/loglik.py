"""Log-likelihood scoring of continuations by a local model (multiple choice, perplexity).

A :class:`LoglikScorer` answers ``log p(continuation | prompt)`` summed over the continuation's
tokens, as lm-eval's ``loglikelihood`` requests do. :func:`scorer_for` gives the scorer behind a
local generator, with the generator's own weights and precision.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from tunelab.data.choices import choice_ids
from tunelab.device import autocast
from tunelab.generate.base import Generator, Prompt, encode_prompt
from tunelab.generate.hf import HFGenerator, fingerprint
from tunelab.models.heads import head_of, last_token_features
from tunelab.models.load import cache_kwarg, final_hidden_states, keep_last


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
            return self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                              logits_to_keep=keep_last(min(keep, ids.shape[1]), ids.device)).logits
        except TypeError:
            return self.model(input_ids=ids, attention_mask=mask).logits


class ChoiceHeadScorer(HFLoglikScorer):
    """Scores from a classifier head (``choice_head`` objective) instead of log-likelihoods.

    Each (prompt, choice) pair is the sequence training saw (:func:`tunelab.data.choices.choice_ids`),
    scored by the head on its last token's final hidden state; multiple-choice tasks take the best score,
    and the softmax of an item's scores is the head's class distribution (what an ensemble averages).
    The choices of an item share its prompt: each distinct prompt runs once (left-padded, its KV cache
    kept) and only the choices' few tokens run again per choice on the cache, about 3x fewer tokens
    than one sequence per pair on the ``nlp`` items (:meth:`score_each` is the one-sequence-per-pair
    reference, and the path of prompt-tuned models, whose virtual tokens a cache would hide).
    """

    def loglik(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """One head score per pair, in order (not a log-probability: its softmax over an item's choices is)."""
        if _prompt_learning(self.model):
            return self.score_each(pairs)
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
        for i, (p, c) in enumerate(pairs):
            groups.setdefault(tuple(encode_prompt(self.tok, p)), []).append(
                (i, self.tok(c, add_special_tokens=False)["input_ids"]))
        prompts = sorted(groups, key=len, reverse=True)
        head = head_of(self.model)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        out = [0.0] * len(pairs)
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start : start + self.batch_size]
            ids, mask, positions = self._padded([list(c) for c in chunk])
            rows = [(r, i, cont) for r, prompt in enumerate(chunk) for i, cont in groups[prompt]]
            width = max(1, max(len(cont) for _, _, cont in rows))
            pick = torch.tensor([r for r, _, _ in rows], device=self.device)
            cont_ids = torch.tensor([cont + [pad] * (width - len(cont)) for _, _, cont in rows], device=self.device)
            cont_mask = torch.tensor([[1] * len(cont) + [0] * (width - len(cont)) for _, _, cont in rows],
                                     device=self.device)
            lengths = torch.tensor([len(cont) for _, _, cont in rows], device=self.device)
            with torch.no_grad(), autocast(self.device.type, self.precision):
                out_prompt = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                                        logits_to_keep=keep_last(device=self.device))
                cache = getattr(out_prompt, "cache", None) or out_prompt.past_key_values
                cache.batch_select_indices(pick)  # one cache row per (prompt, choice) row
                full_mask = torch.cat([mask[pick], cont_mask], dim=1)
                cont_pos = positions[pick, -1:] + 1 + torch.arange(width, device=self.device)[None]
                hidden = final_hidden_states(self.model, input_ids=cont_ids, attention_mask=full_mask,
                                             position_ids=cont_pos, **{cache_kwarg(self.model): cache})
                last = (lengths - 1).clamp(min=0)
                scores = head(hidden[torch.arange(len(rows), device=self.device), last]).float().cpu()
            for (_, i, _), v in zip(rows, scores.tolist()):
                out[i] = float(v)
        return out

    def score_each(self, pairs: list[tuple[Prompt, str]]) -> list[float]:
        """One head score per pair from one whole right-padded sequence per pair (no cache)."""
        encoded = [choice_ids(self.tok, p, c) for p, c in pairs]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        head = head_of(self.model)
        out = [0.0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.tensor([encoded[i] + [pad] * (width - len(encoded[i])) for i in chunk], device=self.device)
            lengths = torch.tensor([len(encoded[i]) for i in chunk], device=self.device)
            with torch.no_grad(), autocast(self.device.type, self.precision):
                scores = head(last_token_features(self.model, ids, lengths)).float().cpu()
            for i, v in zip(chunk, scores.tolist()):
                out[i] = float(v)
        return out


def _prompt_learning(model: Any) -> bool:
    """Whether ``model`` is a peft prompt-learning model (prefix or prompt tuning: virtual tokens)."""
    return bool(getattr(model, "active_peft_config", None) is not None
                and getattr(model.active_peft_config, "is_prompt_learning", False))


def scorer_for(generator: Generator, batch_size: int | None = None) -> LoglikScorer:
    """The log-likelihood scorer over a local generator's weights, in its precision; a model with a
    classifier head (:mod:`tunelab.models.heads`) is scored by its head (:class:`ChoiceHeadScorer`).

    Raises:
        ValueError: The generator is remote (an HTTP endpoint or vLLM): it returns text, not
            log-probabilities of given continuations.
    """
    if not isinstance(generator, HFGenerator):
        raise ValueError(f"log-likelihood tasks need a local model (backend 'hf'); got {type(generator).__name__}")
    cls = ChoiceHeadScorer if head_of(generator.source_model) is not None else HFLoglikScorer
    return cls(generator.source_model, generator.tok, batch_size=batch_size or generator.batch_size,
               precision=generator.precision)
