"""One instruction (and its answer, when it has one) from a row of any instruction file.

A row gives its instruction as ``instruction`` (plus ``input``, or the first of ``instances``, as in the
Self-Instruct / Alpaca seed tasks), ``prompt``, ``question`` or ``messages`` (the first user turn); its
answer as ``output`` / ``response`` / ``completion`` / ``answer``, the ``instances``' output, or the last
assistant turn. Read by Evol-Instruct's seeds (:mod:`tunelab.evolve.seeds`) and the ``instructions``
evaluation task; errors name the row (``where``) and the field.
"""

from __future__ import annotations

from typing import Any

from tunelab.io import DataError

TEXT_FIELDS = ("instruction", "prompt", "question")
ANSWER_FIELDS = ("output", "response", "completion", "answer")


def _text(where: str, row: dict[str, Any], key: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r}: expected a string, got {type(value).__name__}")
    return value


def _from_messages(where: str, row: dict[str, Any]) -> tuple[str, str | None]:
    turns = row["messages"]
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise DataError(f"{where}: field 'messages': expected a list of {{role, content}} mappings")
    user = next((t for t in turns if t.get("role") == "user"), None)
    if user is None or not isinstance(user.get("content"), str):
        raise DataError(f"{where}: field 'messages': no user turn with string content")
    answer = next((t.get("content") for t in reversed(turns) if t.get("role") == "assistant"), None)
    return user["content"], answer if isinstance(answer, str) else None


def parse_seed(where: str, row: dict[str, Any], n: int) -> dict[str, Any]:
    """One seed ``{"id", "instruction", "response"}`` from a row (``n``: its line, for the default id).

    Raises:
        DataError: No instruction field, or a field of the wrong type; names the row and field.
    """
    key = next((k for k in TEXT_FIELDS if k in row), None)
    answer: str | None = None
    if key is not None:
        text = _text(where, row, key)
        extra = row.get("input", "")
        instances = row.get("instances")
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            extra = extra or instances[0].get("input", "")
            answer = instances[0].get("output")
        if not isinstance(extra, str):
            raise DataError(f"{where}: field 'input': expected a string, got {type(extra).__name__}")
        text = f"{text}\n\n{extra}" if extra.strip() else text
    elif "messages" in row:
        text, answer = _from_messages(where, row)
    else:
        present = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"{where}: field 'instruction': missing (row has: {present}; "
                        f"an instruction is one of {', '.join(TEXT_FIELDS)} or messages)")
    if not text.strip():
        raise DataError(f"{where}: field {key or 'messages'!r}: empty instruction")
    for k in ANSWER_FIELDS:
        if isinstance(row.get(k), str):
            answer = row[k]
            break
    rid = row.get("id", row.get("idx"))
    rid = str(rid) if isinstance(rid, str | int) and not isinstance(rid, bool) else f"seed-{n}"
    return {"id": rid, "instruction": text, "response": answer if isinstance(answer, str) else None}
