"""Multiple choice by log-likelihood: pick the answer the model finds most probable.

For each item and each choice the score is the summed log-probability of the choice's tokens
given the chat prompt (rendered with the generation prompt), as in lm-eval's ``acc``; ``acc_norm``
divides by the choice's length in characters. No text is generated, so these tasks need a model
behind a :class:`LoglikScorer`, not a Generator; their ``kind`` is ``"loglik"`` and
:func:`evaluate_loglik` runs them (the harness's ``evaluate`` is for generation tasks).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tunelab.data.tasks.base import TASK_FAMILIES
from tunelab.eval.harness import EvalResult, write_jsonl
from tunelab.eval.stats import proportion_score
from tunelab.eval.tasks.base import EVAL_TASKS, EvalItem, EvalTask
from tunelab.generate.base import Prompt, encode_prompt

CLASSIFICATION_SUBTASKS = ("sentiment", "topic", "yesno")


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
    """Log-likelihoods from a local transformers model: batched, right-padded, one forward per batch.

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
            from tunelab.generate.hf import fingerprint

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
        import torch

        from tunelab.train.precision import autocast

        width = max(len(ids) for ids, _ in batch)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in batch], device=self.device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch], device=self.device)
        with torch.no_grad(), autocast(self.device.type, self.precision):
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            logits = logits[:, -width:]  # (B, T, V); prompt tuning prepends virtual positions
        out = []
        for row, (x, n_cont) in enumerate(batch):
            start = len(x) - n_cont  # first continuation position; predicted by position start-1
            logp = torch.log_softmax(logits[row, start - 1 : len(x) - 1].float(), dim=-1)  # (n_cont, V)
            target = ids[row, start : len(x)]
            out.append(float(logp.gather(-1, target[:, None]).sum()))
        return out


@EVAL_TASKS.register("nlp_mc")
class NlpMultipleChoice(EvalTask):
    """The ``nlp`` family's classification items (sentiment, topic, yes/no) as log-likelihood multiple choice.

    Options:
        split: ``test`` (default) or ``ood``.
    """

    name = "nlp_mc"
    kind: ClassVar[str] = "loglik"

    def __init__(self, split: str = "test") -> None:
        self.split = split
        self.family = TASK_FAMILIES.get("nlp")(subtasks=list(CLASSIFICATION_SUBTASKS))

    def items(self, limit: int | None, seed: int) -> list[EvalItem]:
        samples = self.family.samples(self.split, limit or 200, seed)
        return [EvalItem(s.meta["id"], s.prompt_messages(), s.meta) for s in samples if s.meta.get("choices")]

    def score_choices(self, item: EvalItem, logliks: list[float]) -> dict[str, Any]:
        """Per-item row from the log-likelihood of each choice."""
        choices = list(item.meta["choices"])
        best = max(range(len(choices)), key=lambda j: logliks[j])
        best_norm = max(range(len(choices)), key=lambda j: logliks[j] / max(1, len(choices[j])))
        answer = item.meta["answer"]
        return {
            "answer": answer,
            "choices": choices,
            "logliks": [round(v, 4) for v in logliks],
            "pred": choices[best],
            "correct": int(choices[best] == answer),
            "correct_norm": int(choices[best_norm] == answer),
        }

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, dict]:
        return {
            "accuracy": proportion_score([r["correct"] for r in rows]),
            "accuracy_norm": proportion_score([r["correct_norm"] for r in rows]),
        }


def evaluate_loglik(
    task: Any, scorer: LoglikScorer, *, limit: int | None = None, seed: int = 1234, out: Path | None = None
) -> EvalResult:
    """The log-likelihood counterpart of ``harness.evaluate``: score every choice of every item.

    Args:
        task: A task with ``kind == "loglik"`` (``items``, ``score_choices``, ``aggregate``).
        scorer: The model behind a :class:`LoglikScorer`.
        limit: Items at most.
        seed: Item sampling seed.
        out: Where to write the per-item rows (JSONL), if given.
    """
    items = task.items(limit, seed)
    pairs = [(it.prompt, c) for it in items for c in it.meta["choices"]]
    t0 = time.perf_counter()
    scores = scorer.loglik(pairs)
    counts = scorer.token_counts(pairs) if getattr(task, "needs_token_counts", False) else None
    elapsed = time.perf_counter() - t0
    rows, pos = [], 0
    for it in items:
        k = len(it.meta["choices"])
        extra = (counts[pos : pos + k],) if counts is not None else ()
        rows.append({"id": it.id, **task.score_choices(it, scores[pos : pos + k], *extra)})
        pos += k
    if out is not None:
        write_jsonl(out, rows)
    return EvalResult(task.aggregate(rows), rows, elapsed)
