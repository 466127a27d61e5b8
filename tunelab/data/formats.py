"""Row formats: one raw record (a dict read from JSON/JSONL/Parquet) -> one Sample.

Each converter reads *canonical* field names (``instruction``, ``messages`` ...); a source's
``fields`` mapping says which column of the row holds each canonical field, e.g.
``{instruction: question, output: answer}``. Errors are :class:`DataError` naming the
row (``where``, e.g. ``data/x.jsonl:17``) and the field as the row spells it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tunelab.io import DataError  # noqa: F401  (the data layer's error; defined low, in tunelab.io)
from tunelab.types import ROLES, Sample

Row = dict[str, Any]
Converter = Callable[["_Reader"], Sample]

SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "model": "assistant",
    "bard": "assistant", "bing": "assistant",
    "function_call": "assistant",  # the model emits the call; the tool answers next
    "system": "system",
    "tool": "tool", "function": "tool", "observation": "tool",
}


class _Reader:
    """Typed access to a row's canonical fields, with errors naming row and field."""

    def __init__(self, row: Row, fields: dict[str, str], where: str) -> None:
        self.row, self.fields, self.where = row, fields, where

    def col(self, name: str) -> str:
        """The row's column holding canonical field ``name``."""
        return self.fields.get(name, name)

    def error(self, field: str, problem: str) -> DataError:
        return DataError(f"{self.where}: field {field!r}: {problem}")

    def has(self, name: str) -> bool:
        return self.row.get(self.col(name)) is not None

    def get(self, name: str, default: Any = ..., kind: type | tuple[type, ...] = str) -> Any:
        """The value of canonical field ``name``; missing (and no default) or wrong type -> DataError."""
        col = self.col(name)
        value = self.row.get(col)
        if value is None:
            if default is not ...:
                return default
            present = ", ".join(sorted(map(str, self.row))) or "none"
            raise self.error(col, f"missing (row has: {present})")
        if not isinstance(value, kind):
            raise self.error(col, f"expected {_kind_name(kind)}, got {type(value).__name__}")
        return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "list": "a list", "dict": "a mapping"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def _turn(role: str, content: str) -> dict[str, Any]:
    return {"role": role, "content": content}


def _check_turns(messages: list[dict[str, Any]], field: str, r: _Reader) -> list[dict[str, Any]]:
    if not messages:
        raise r.error(field, "empty conversation")
    if not any(m["role"] == "assistant" for m in messages):
        raise r.error(field, "no assistant turn")
    return messages


def _user_text(instruction: str, extra: str) -> str:
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


# ----------------------------------------------------------------------------- chat formats


def _chat_list(r: _Reader, name: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[dict]:
    """Turns from a list of dicts, mapping each turn's role through ``roles``."""
    col = r.col(name)
    items = r.get(name, kind=list)
    turns = []
    for i, item in enumerate(items):
        at = f"{col}[{i}]"
        if not isinstance(item, dict):
            raise r.error(at, f"expected a mapping, got {type(item).__name__}")
        role, content = item.get(role_key), item.get(content_key)
        if role is None:
            raise r.error(f"{at}.{role_key}", "missing")
        if role not in roles:
            valid = ", ".join(dict.fromkeys(roles))
            raise r.error(f"{at}.{role_key}", f"unknown role {role!r} (valid: {valid})")
        if not isinstance(content, str):
            got = "missing" if content is None else f"got {type(content).__name__}"
            raise r.error(f"{at}.{content_key}", f"expected a string ({got})")
        turn = _turn(roles[role], content)
        train = item.get("train", item.get("loss"))
        if isinstance(train, bool) and turn["role"] == "assistant":
            turn["train"] = train
        turns.append(turn)
    return _check_turns(turns, col, r)


def _messages(r: _Reader) -> Sample:
    roles = {x: x for x in ROLES}
    name = "messages" if r.has("messages") or not r.has("conversations") else "conversations"
    return Sample(_chat_list(r, name, r.col("role"), r.col("content"), roles))


def _sharegpt(r: _Reader) -> Sample:
    items = r.get("conversations", kind=list)
    if items and isinstance(items[0], dict) and "role" in items[0] and "from" not in items[0]:
        return Sample(_chat_list(r, "conversations", "role", "content", {x: x for x in ROLES}))
    turns = _chat_list(r, "conversations", r.col("from"), r.col("value"), SHAREGPT_ROLES)
    if r.has("system") and turns[0]["role"] != "system":
        turns.insert(0, _turn("system", r.get("system")))
    meta = {"tools": r.get("tools")} if r.has("tools") else {}
    return Sample(turns, meta)


def _alpaca(r: _Reader) -> Sample:
    turns = []
    if r.has("system"):
        turns.append(_turn("system", r.get("system")))
    for i, pair in enumerate(r.get("history", default=[], kind=list)):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise r.error(f"{r.col('history')}[{i}]", "expected a [prompt, response] pair of strings")
        turns += [_turn("user", pair[0]), _turn("assistant", pair[1])]
    user = _user_text(r.get("instruction"), r.get("input", default=""))
    turns += [_turn("user", user), _turn("assistant", r.get("output"))]
    return Sample(turns)


def _prompt_completion(r: _Reader) -> Sample:
    return Sample([_turn("user", r.get("prompt")), _turn("assistant", r.get("completion"))])


# ----------------------------------------------------------------------------- dataset presets

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


def _gsm8k(r: _Reader) -> Sample:
    """GSM8K: the worked solution is the response; the number after ``#### `` is meta ``answer``."""
    solution = r.get("answer")
    match = _GSM8K_FINAL.search(solution)
    if not match:
        raise r.error(r.col("answer"), "no final answer after '#### '")
    answer = match.group(1).replace(",", "")
    return Sample([_turn("user", r.get("question")), _turn("assistant", solution)], {"answer": answer})


def _humaneval(r: _Reader) -> Sample:
    """HumanEval: the function stub is the prompt; the canonical body is the response."""
    prompt = r.get("prompt")
    meta = {"prompt": prompt, "test": r.get("test", default=""), "entry_point": r.get("entry_point", default="")}
    return Sample([_turn("user", prompt), _turn("assistant", r.get("canonical_solution"))], meta)


def _mbpp(r: _Reader) -> Sample:
    """MBPP (full or sanitized): the task text plus its asserts is the prompt; the code is the response."""
    text = r.get("text") if r.has("text") else r.get("prompt")
    tests = r.get("test_list", kind=list)
    prompt = f"{text}\nYour code should pass these tests:\n" + "\n".join(map(str, tests))
    meta = {
        "tests": tests,
        "test_setup_code": r.get("test_setup_code", default="")
        or "\n".join(map(str, r.get("test_imports", default=[], kind=list))),
        "challenge_tests": r.get("challenge_test_list", default=[], kind=list),
    }
    code = r.get("code").replace("\r\n", "\n")
    return Sample([_turn("user", prompt), _turn("assistant", code)], meta)


def _dolly(r: _Reader) -> Sample:
    """Dolly 15k: ``instruction`` (+ ``context``) -> ``response``; ``category`` kept in meta."""
    user = _user_text(r.get("instruction"), r.get("context", default=""))
    meta = {"category": r.get("category")} if r.has("category") else {}
    return Sample([_turn("user", user), _turn("assistant", r.get("response"))], meta)


ACTION = re.compile(r"Action\s*:\s*(\w+)\s*\[([^\]\n]*)\]")
"""An agent action, ``Action: tool[argument]`` (the first one in a turn counts)."""


def _trajectory(r: _Reader) -> Sample:
    """An agent trajectory (``tunelab sample``): ``messages`` (observations are user turns, no loss)
    plus its ``outcome`` (``success`` true/false, optional ``score`` in [0, 1]) and ``origin``."""
    sample = _messages(r)
    items = r.get(r.col("messages") if r.has("messages") else "messages", kind=list)
    for i, item in enumerate(items):
        role, content = item.get("role"), item.get("content", "")
        if role != "assistant" and (item.get("loss") is True or item.get("train") is True):
            raise r.error(f"messages[{i}].loss", f"a {role} turn (an observation or prompt) cannot carry loss")
        if role == "assistant" and "Action" in content and ACTION.search(content) is None:
            raise r.error(f"messages[{i}].content", "broken action (expected Action: tool[argument])")
    outcome = r.get("outcome", kind=dict)
    if not isinstance(outcome.get("success"), bool):
        raise r.error(f"{r.col('outcome')}.success", "expected true or false")
    score = outcome.get("score", float(outcome["success"]))
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise r.error(f"{r.col('outcome')}.score", f"expected a number in [0, 1], got {score!r}")
    sample.meta.update({"outcome": {**outcome, "score": float(score)},
                        "origin": r.get("origin", default={}, kind=dict)})
    if r.has("task_id"):
        sample.meta["task_id"] = str(r.get("task_id", kind=(str, int)))
    return sample


FORMATS: dict[str, Converter] = {
    "trajectory": _trajectory,
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "gsm8k": _gsm8k,
    "humaneval": _humaneval,
    "mbpp": _mbpp,
    "dolly": _dolly,
}
"""Format names usable as a source's ``format:`` (plus ``auto``)."""

# (format, canonical keys that identify it), most specific first.
_SIGNATURES: list[tuple[str, tuple[str, ...]]] = [
    ("trajectory", ("messages", "outcome")),
    ("messages", ("messages",)),
    ("sharegpt", ("conversations",)),
    ("humaneval", ("prompt", "canonical_solution")),
    ("mbpp", ("code", "test_list")),
    ("alpaca", ("instruction", "output")),
    ("dolly", ("instruction", "response")),
    ("gsm8k", ("question", "answer")),
    ("prompt_completion", ("prompt", "completion")),
]


def detect_format(row: Row, fields: dict[str, str], where: str) -> str:
    """The format whose identifying keys the row has (after the ``fields`` mapping)."""
    keys = set(row) | {canon for canon, col in fields.items() if col in row}
    for fmt, needed in _SIGNATURES:
        if all(k in keys for k in needed):
            return fmt
    raise DataError(
        f"{where}: cannot detect the format from keys {sorted(map(str, row))}; "
        f"set format: to one of {', '.join(FORMATS)} (and fields: to map column names)"
    )


def to_sample(row: Row, fmt: str, fields: dict[str, str], where: str) -> Sample:
    """Convert one raw row to a Sample.

    Args:
        row: The record as read from the file.
        fmt: A name in :data:`FORMATS`, or ``auto`` to detect it from the row's keys.
        fields: Canonical field name -> the row's column name.
        where: ``file:line`` or ``file[index]``, used in error messages.

    Returns:
        The Sample; format-specific meta (``answer``, ``tests`` ...) is filled, ``source``
        and ``id`` are left to the caller.

    Raises:
        DataError: The row is malformed (missing field, unknown role, non-string content,
            empty conversation, no assistant turn); the message names the row and field.
    """
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if fmt == "auto":
        fmt = detect_format(row, fields, where)
    if fmt not in FORMATS:
        raise DataError(f"{where}: unknown format {fmt!r}; valid: auto, {', '.join(FORMATS)}")
    return FORMATS[fmt](_Reader(row, fields, where))
