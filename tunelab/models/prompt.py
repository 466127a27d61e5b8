"""A prompt as the model sees it: chat messages through the tokenizer's chat template, or a plain string.

Below training and generation alike, so a classifier head trained on (prompt, choice) sequences and the
scorer that evaluates it encode them the same way (:mod:`tunelab.data.choices`).
"""

from __future__ import annotations

from typing import Any

from tunelab.models.load import adds_bos

Prompt = str | list[dict[str, Any]]
"""A plain string or chat messages (``[{"role": ..., "content": ...}, ...]``)."""


def render_prompt(tok, prompt: Prompt) -> str:
    """A chat prompt through the tokenizer's chat template (generation prompt added); a string as is."""
    if isinstance(prompt, str):
        return prompt
    return tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_prompt(tok, prompt: Prompt) -> list[int]:
    """Token ids of a prompt as the model should see it.

    A chat prompt goes through the chat template, which writes any special tokens itself; a plain
    string gets the tokenizer's BOS where the tokenizer puts one before text (Gemma, Llama; nothing
    for SmolLM2), never an EOS. Gemma and Llama produce noise without their BOS.
    """
    ids = tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"]
    if isinstance(prompt, str) and adds_bos(tok) and ids[:1] != [tok.bos_token_id]:
        ids = [tok.bos_token_id, *ids]
    return ids
