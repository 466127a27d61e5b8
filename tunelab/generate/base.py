"""The generator protocol shared by evaluation, judging, Evol-Instruct and trajectory sampling.

A prompt is a chat (list of messages; the backend applies the chat template) or a plain
string (sent as is: completion-style prompts such as HumanEval's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tunelab.models.prompt import Prompt, encode_prompt, render_prompt  # noqa: F401  (re-exported)


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
