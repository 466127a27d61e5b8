"""Token surprisal under a causal LM: the score Selective Context (Li et al. 2023, arXiv 2310.06201) and
PromptIntern's template compression rank text by (predictable text is dropped first).

The scoring model is loaded here, in the models layer, once per process (:func:`model_scorer`), or a model
at hand is wrapped without being kept (:func:`surprisal_scorer`); the caller (the runner, the prompt-regime
eval tasks) builds the scorer and passes it to
:class:`tunelab.promptintern.compress.Compressor`, which loads nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tunelab.config import ModelConfig
from tunelab.models.load import load_model


@torch.no_grad()
def token_surprisal(text: str, model, tok) -> list[tuple[int, float]]:
    """``(character offset, -log p(token | tokens before))`` of every token of ``text`` under ``model``
    (fp32, eval mode; the first token, which has no context, gets the mean of the others)."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    if len(ids) < 2:
        return [(a, 0.0) for a, _ in offsets]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device)).logits[0, :-1].float()  # (T-1, V)
    model.train(was_training)
    logp = torch.log_softmax(logits, dim=-1)
    s = (-logp.gather(1, torch.tensor(ids[1:], device=device)[:, None])[:, 0]).cpu().tolist()
    return [(a, v) for (a, _), v in zip(offsets, [sum(s) / len(s)] + s)]


Scorer = Callable[[str], list[tuple[int, float]]]
"""``text -> [(character offset, surprisal)]`` per token (:func:`token_surprisal` of some model)."""
_SCORERS: dict[str, Scorer] = {}


def surprisal_scorer(model, tok) -> Scorer:
    """The surprisal scorer of a model at hand (a run's base model, before training), kept by the caller only.

    Nothing is registered for the process: a run's model is changed by its training (adapters, frozen
    weights cast to bf16), so a later scorer of the same name (:func:`model_scorer`, e.g. the evaluation's
    compressed prompts) loads the model afresh instead of scoring with the tuned one."""
    return lambda text: token_surprisal(text, model, tok)


def model_scorer(name: str) -> Scorer:
    """The surprisal scorer of model ``name`` (an alias, hub id or folder), loaded once per process on CPU
    as :func:`tunelab.models.load.load_model` gives it and kept for the process."""
    if name not in _SCORERS:
        model, tok, _ = load_model(ModelConfig(name=name))
        _SCORERS[name] = surprisal_scorer(model, tok)
    return _SCORERS[name]
