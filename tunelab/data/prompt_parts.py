"""A prompt split as PromptIntern splits it, and the ``prompt_structure`` row format that carries one.

PromptIntern (Zou et al., EMNLP 2024 Findings, arXiv 2407.02211) splits every prompt into a long
instruction *template*, *k few-shot examples* and the *query*. :class:`PromptParts` holds the parts of
one sample (in ``Sample.meta["prompt_parts"]``); :func:`render` makes the user turn of any regime
(template, ``Example i:`` blocks, then the query itself). The ``prompt_structure`` row format reads
``{template, examples: [{query, answer}], query, answer}``; its sample's messages are the bare query and
answer. What acts on the parts (compression, example ranking, the built-in prompt sets, the training
schedule) is PromptIntern's engine, :mod:`tunelab.promptintern`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.data.formats import FORMATS
from tunelab.io import DataError
from tunelab.types import Sample

PARTS_KEY = "prompt_parts"
"""``Sample.meta`` key holding a sample's :class:`PromptParts` (as a dict)."""


@dataclass
class Example:
    """One few-shot demonstration."""

    query: str
    answer: str


@dataclass
class PromptParts:
    """A prompt split as PromptIntern splits it."""

    template: str
    """The instruction template (rules, format, documentation)."""
    examples: list[Example] = field(default_factory=list)
    """Few-shot demonstrations, best first (a prefix of them is what a prompt with fewer shows)."""
    query: str = ""
    """The item's own input."""
    answer: str = ""
    """The reference answer (the training target)."""

    def to_meta(self) -> dict[str, Any]:
        """The parts as plain data (for ``Sample.meta``)."""
        return asdict(self)

    @classmethod
    def from_meta(cls, data: dict[str, Any]) -> PromptParts:
        """The parts stored by :meth:`to_meta`."""
        examples = [e if isinstance(e, Example) else Example(str(e["query"]), str(e["answer"]))
                    for e in data.get("examples", [])]
        return cls(str(data.get("template", "")), examples, str(data.get("query", "")), str(data.get("answer", "")))


def render(template: str, examples: Sequence[Example], query: str) -> str:
    """The user turn: the template, ``Example i:`` blocks (query, then ``Answer:``), then the bare query.

    With no template and no examples it is the query alone (the query-only regime).
    """
    blocks = [template.strip()] if template.strip() else []
    blocks += [f"Example {i}:\n{e.query.strip()}\nAnswer:\n{e.answer.strip()}" for i, e in enumerate(examples, 1)]
    if blocks:
        return "\n\n".join(blocks) + "\n\nNow the task:\n" + query
    return query


def query_turn(messages: Sequence[dict[str, Any]]) -> int:
    """Index of the user turn holding the query: the last user turn before the last assistant turn
    (the last user turn of a prompt without one)."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    users = [i for i, m in enumerate(messages[:last]) if m["role"] == "user"]
    if not users:
        raise DataError("a prompt-structured sample needs a user turn (the query)")
    return users[-1]


def with_user_text(messages: Sequence[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """A copy of ``messages`` whose query turn (:func:`query_turn`) says ``text``."""
    out = [dict(m) for m in messages]
    out[query_turn(out)]["content"] = text
    return out


# ----------------------------------------------------------------------------- the row format


def _prompt_structure(r: Any) -> Sample:
    """``{template, examples: [{query, answer}] or [[query, answer]], query, answer}``: messages are the
    bare query and answer; the parts are in ``meta["prompt_parts"]``."""
    examples = []
    for i, e in enumerate(r.get("examples", default=[], kind=list)):
        if isinstance(e, dict) and isinstance(e.get("query"), str) and isinstance(e.get("answer"), str):
            examples.append(Example(e["query"], e["answer"]))
        elif isinstance(e, list | tuple) and len(e) == 2 and all(isinstance(x, str) for x in e):
            examples.append(Example(e[0], e[1]))
        else:
            raise r.error(f"{r.col('examples')}[{i}]", "expected {query, answer} strings or a [query, answer] pair")
    parts = PromptParts(r.get("template", default=""), examples, r.get("query"), r.get("answer"))
    messages = [{"role": "user", "content": parts.query}, {"role": "assistant", "content": parts.answer}]
    return Sample(messages, {PARTS_KEY: parts.to_meta()})


FORMATS.setdefault("prompt_structure", _prompt_structure)
