"""The nouns shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Sample:
    """One training or evaluation example.

    Attributes:
        messages: OpenAI-style chat turns, each ``{"role": ..., "content": ...}``.
            Loss is taken on every assistant turn (unless a turn says ``"train": false``).
        meta: Provenance and task data: ``source`` (the recipe's source name), ``id``
            (stable within the source), and for task families ``answer`` and anything the
            verifier needs.
    """

    messages: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.meta.get("source", ""))

    def prompt_messages(self) -> list[dict[str, Any]]:
        """All turns before the last assistant turn (what a model is asked at evaluation)."""
        last = max((i for i, m in enumerate(self.messages) if m["role"] == "assistant"), default=None)
        return list(self.messages if last is None else self.messages[:last])

    def response(self) -> str:
        """The content of the last assistant turn ("" if there is none)."""
        for m in reversed(self.messages):
            if m["role"] == "assistant":
                return str(m["content"])
        return ""
