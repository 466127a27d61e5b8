"""The generator protocol shared by evaluation, judging, Evol-Instruct and trajectory sampling.

A prompt is a chat (list of messages; the backend applies the chat template) or a plain
string (sent as is: completion-style prompts such as HumanEval's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tunelab.models.load import adds_bos

Prompt = str | list[dict[str, Any]]


@dataclass
class GenerationConfig:
    max_new_tokens: int = 256
    """Tokens to generate at most."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    n: int = 1
    """Completions per prompt."""
    stop: list[str] = field(default_factory=list)
    """Cut each completion at the first of these strings."""
    seed: int = 0
    """Sampling seed."""

    def key(self) -> dict[str, Any]:
        return asdict(self)


class Generator(Protocol):
    """Anything that turns prompts into completions."""

    #: identifies the weights/adapter and template (cache keys use it)
    fingerprint: str

    def generate(self, prompts: list[Prompt], cfg: GenerationConfig) -> list[list[str]]:
        """``cfg.n`` completions for each prompt, in order."""
        ...


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


def cut_at_stop(text: str, stop: list[str]) -> str:
    """Truncate ``text`` at the earliest stop string."""
    cut = min((i for s in stop if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def n_generated(seq: list[int], eos: set[int]) -> int:
    """Generated tokens of one sequence: up to and including the first end token."""
    for i, t in enumerate(seq):
        if t in eos:
            return i + 1
    return len(seq)
