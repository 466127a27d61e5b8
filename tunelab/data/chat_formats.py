"""The row reader and the converters of chat, instruction, dataset-preset and preference rows.

:class:`Reader` gives a converter typed access to a row's canonical fields, with :class:`DataError`\s
naming the row and the field as the row spells it; the converters here (``messages``, ``sharegpt``,
``alpaca``, ``prompt_completion``, ``gsm8k``, ``humaneval``, ``mbpp``, ``dolly``, ``qa``, ``preference``,
``unpaired``) and the agent ones (:mod:`tunelab.data.agent_formats`) are listed by name in
:data:`tunelab.data.formats.FORMATS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tunelab.io import DataError
from tunelab.types import ROLES, Sample

Row = dict[str, Any]
"""A raw record as read from a file."""

SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "model": "assistant",
    "bard": "assistant", "bing": "assistant",
    "function_call": "assistant",  # the model emits the call; the tool answers next
    "system": "system",
    "tool": "tool", "function": "tool", "observation": "tool",
}


class Reader:
    """Typed access to a row's canonical fields, with errors naming row and field."""

    def __init__(self, row: Row, fields: dict[str, str], where: str) -> None:
        self.row, self.fields, self.where = row, fields, where

    def col(self, name: str) -> str:
        """The row's column holding canonical field ``name``."""
        return self.fields.get(name, name)

    def error(self, field: str, problem: str) -> DataError:
        """A DataError naming the row and ``field``."""
        return DataError(f"{self.where}: field {field!r}: {problem}")

    def has(self, name: str) -> bool:
        """Whether the row holds canonical field ``name`` (not None)."""
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


Converter = Callable[[Reader], Sample]
"""A row format's converter: the row's :class:`Reader` -> its Sample."""


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {"str": "a string", "list": "a list", "dict": "a mapping"}
    return " or ".join(names.get(k.__name__, k.__name__) for k in kinds)


def as_turn(role: str, content: str) -> dict[str, Any]:
    """A ``{role, content}`` turn."""
    return {"role": role, "content": content}


def _check_turns(messages: list[dict[str, Any]], field: str, r: Reader) -> list[dict[str, Any]]:
    if not messages:
        raise r.error(field, "empty conversation")
    if not any(m["role"] == "assistant" for m in messages):
        raise r.error(field, "no assistant turn")
    return messages


def _user_text(instruction: str, extra: str) -> str:
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


# ----------------------------------------------------------------------------- chat formats


def chat_turns(r: Reader, name: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[dict]:
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
        turn = as_turn(roles[role], content)
        train = item.get("train", item.get("loss"))
        if isinstance(train, bool) and turn["role"] == "assistant":
            turn["train"] = train
        turns.append(turn)
    return _check_turns(turns, col, r)


def read_messages(r: Reader) -> Sample:  # no docstring: `tunelab ls` shows "file format"
    roles = {x: x for x in ROLES}
    name = "messages" if r.has("messages") or not r.has("conversations") else "conversations"
    return Sample(chat_turns(r, name, r.col("role"), r.col("content"), roles))


def _sharegpt(r: Reader) -> Sample:
    items = r.get("conversations", kind=list)
    if items and isinstance(items[0], dict) and "role" in items[0] and "from" not in items[0]:
        return Sample(chat_turns(r, "conversations", "role", "content", {x: x for x in ROLES}))
    turns = chat_turns(r, "conversations", r.col("from"), r.col("value"), SHAREGPT_ROLES)
    if r.has("system") and turns[0]["role"] != "system":
        turns.insert(0, as_turn("system", r.get("system")))
    meta = {"tools": r.get("tools")} if r.has("tools") else {}
    return Sample(turns, meta)


def _alpaca(r: Reader) -> Sample:
    turns = []
    if r.has("system"):
        turns.append(as_turn("system", r.get("system")))
    for i, pair in enumerate(r.get("history", default=[], kind=list)):
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise r.error(f"{r.col('history')}[{i}]", "expected a [prompt, response] pair of strings")
        turns += [as_turn("user", pair[0]), as_turn("assistant", pair[1])]
    user = _user_text(r.get("instruction"), r.get("input", default=""))
    turns += [as_turn("user", user), as_turn("assistant", r.get("output"))]
    return Sample(turns)


def _prompt_completion(r: Reader) -> Sample:
    return Sample([as_turn("user", r.get("prompt")), as_turn("assistant", r.get("completion"))])


# ----------------------------------------------------------------------------- dataset presets

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


def _gsm8k(r: Reader) -> Sample:
    """GSM8K: the worked solution is the response; the number after ``#### `` is meta ``answer``."""
    solution = r.get("answer")
    match = _GSM8K_FINAL.search(solution)
    if not match:
        raise r.error(r.col("answer"), "no final answer after '#### '")
    answer = match.group(1).replace(",", "")
    return Sample([as_turn("user", r.get("question")), as_turn("assistant", solution)], {"answer": answer})


def _humaneval(r: Reader) -> Sample:
    """HumanEval: the function stub is the prompt; the canonical body is the response."""
    prompt = r.get("prompt")
    meta = {"prompt": prompt, "test": r.get("test", default=""), "entry_point": r.get("entry_point", default="")}
    return Sample([as_turn("user", prompt), as_turn("assistant", r.get("canonical_solution"))], meta)


def _mbpp(r: Reader) -> Sample:
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
    return Sample([as_turn("user", prompt), as_turn("assistant", code)], meta)


def _dolly(r: Reader) -> Sample:
    """Dolly 15k: ``instruction`` (+ ``context``) -> ``response``; ``category`` kept in meta."""
    user = _user_text(r.get("instruction"), r.get("context", default=""))
    meta = {"category": r.get("category")} if r.has("category") else {}
    return Sample([as_turn("user", user), as_turn("assistant", r.get("response"))], meta)


def _qa(r: Reader) -> Sample:
    """Question-answer rows: the question, then the answer (Yes / No for booleans).

    ``question`` and ``answer`` (text, a number or true/false), e.g. NAT's HotpotQA and StrategyQA
    evaluation sets: the question -> the answer (Yes / No for booleans); ``answer``
    and, where present, ``type`` kept in meta."""
    answer = r.get("answer", kind=(str, bool, int, float))
    text = ("Yes" if answer else "No") if isinstance(answer, bool) else str(answer)
    meta = {"answer": text} | ({"type": r.get("type")} if r.has("type") else {})
    return Sample([as_turn("user", r.get("question")), as_turn("assistant", text)], meta)


def _completion_turns(r: Reader, name: str) -> list[dict[str, Any]]:
    """A completion given as a string (one assistant turn) or as a list of turns."""
    value = r.get(name, kind=(str, list))
    if isinstance(value, str):
        if not value.strip():
            raise r.error(r.col(name), "empty completion")
        return [as_turn("assistant", value)]
    turns = chat_turns(r, name, "role", "content", {x: x for x in ROLES})
    if not "".join(t["content"] for t in turns if t["role"] == "assistant").strip():
        raise r.error(r.col(name), "empty completion")
    return turns


def _split_prompt(turns: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(prompt turns, completion turns) of a full conversation: the prompt ends before its first
    assistant turn."""
    first = next(i for i, t in enumerate(turns) if t["role"] == "assistant")
    return turns[:first], turns[first:]


def _prompt_turns(r: Reader) -> list[dict[str, Any]]:
    """The ``prompt`` field as turns (a string is one user turn); [] when absent."""
    if not r.has("prompt"):
        return []
    value = r.get("prompt", kind=(str, list))
    if isinstance(value, str):
        return [as_turn("user", value)]
    return [{**t, "train": False} if t["role"] == "assistant" else t
            for t in _chat_list_any(r, "prompt")]


def _chat_list_any(r: Reader, name: str) -> list[dict[str, Any]]:
    """Turns of a list of ``{role, content}`` that may hold no assistant turn (a prompt)."""
    items = r.get(name, kind=list)
    turns = []
    for i, item in enumerate(items):
        at = f"{r.col(name)}[{i}]"
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            raise r.error(at, f"expected {{role: one of {', '.join(ROLES)}, content: a string}}")
        turns.append(as_turn(item["role"], item["content"]))
    if not turns:
        raise r.error(r.col(name), "empty prompt")
    return turns


def _preference(r: Reader) -> Sample:
    """A preference pair: ``prompt`` (a string or turns) with a ``chosen`` and a ``rejected``
    completion (strings or turns), or, without ``prompt``, two full conversations that share their
    prompt turns (the turns before the first assistant turn; a mismatch is an error). The Sample's
    messages are the prompt and the chosen completion; ``meta["rejected"]`` holds the rejected turns."""
    prompt = _prompt_turns(r)
    chosen, rejected = _completion_turns(r, "chosen"), _completion_turns(r, "rejected")
    if not prompt:
        (p_c, chosen), (p_r, rejected) = _split_prompt(chosen), _split_prompt(rejected)
        if p_c != p_r:
            raise r.error(r.col("rejected"), "prompt mismatch between chosen and rejected (the turns before "
                          "the first assistant turn differ)")
        if not p_c:
            raise r.error(r.col("prompt"), "missing (and chosen/rejected hold no prompt turns)")
        prompt = p_c
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[0]["role"] != "assistant":
            raise r.error(r.col(name), "a completion starts with an assistant turn")
    return Sample(prompt + chosen, {"rejected": rejected})


def _unpaired(r: Reader) -> Sample:
    """An unpaired example for KTO: ``prompt`` and ``completion`` (strings or turns, or a full
    conversation in ``messages``) with a boolean ``label`` (true: desirable)."""
    if r.has("messages"):
        sample = read_messages(r)
    else:
        prompt = _prompt_turns(r)
        if not prompt:
            r.get("prompt")  # raises: missing
        sample = Sample(prompt + _completion_turns(r, "completion"))
    label = r.get("label", kind=bool)
    return Sample(sample.messages, {**sample.meta, "label": bool(label)})


CHAT_FORMATS: dict[str, Converter] = {
    "qa": _qa,
    "preference": _preference,
    "unpaired": _unpaired,
    "messages": read_messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "gsm8k": _gsm8k,
    "humaneval": _humaneval,
    "mbpp": _mbpp,
    "dolly": _dolly,
}
"""This module's converters by format name (:data:`tunelab.data.formats.FORMATS` lists them all)."""
