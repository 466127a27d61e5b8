"""Row formats: one raw record (a dict read from JSON/JSONL/Parquet) -> one Sample.

Each converter reads *canonical* field names (``instruction``, ``messages`` ...); a source's
``fields`` mapping says which column of the row holds each canonical field, e.g.
``{instruction: question, output: answer}``. Errors are :class:`DataError` naming the
row (``where``, e.g. ``data/x.jsonl:17``) and the field as the row spells it.
"""

from __future__ import annotations

import json
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
    plus its ``outcome`` (``success`` true/false, optional ``score`` in [0, 1]) and ``origin``.
    A broken action is an error, except as the last turn of a trajectory that failed by it
    (``outcome.failure: malformed_action``, as ``tunelab sample`` records a model's bad action)."""
    sample = _messages(r)
    items = r.get(r.col("messages") if r.has("messages") else "messages", kind=list)
    outcome = r.get("outcome", kind=dict)
    last = max((i for i, m in enumerate(items) if m.get("role") == "assistant"), default=-1)
    for i, item in enumerate(items):
        role, content = item.get("role"), item.get("content", "")
        if role != "assistant" and (item.get("loss") is True or item.get("train") is True):
            raise r.error(f"messages[{i}].loss", f"a {role} turn (an observation or prompt) cannot carry loss")
        if role == "assistant" and "Action" in content and ACTION.search(content) is None \
                and not (i == last and outcome.get("failure") == "malformed_action"):
            raise r.error(f"messages[{i}].content", "broken action (expected Action: tool[argument])")
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


# ----------------------------------------------------------------------------- agent datasets as trajectories

REACT_QA = ("Answer the question. Each step: a Thought, then an Action, either search[query] or finish[answer]. "
            "After each search you get an Observation.")
ANSWER_FORMS = {"yesno": "The answer is Yes or No.", "short": "The answer is a short phrase."}
_EPISODE_END = re.compile(r"Observation:\s*Episode finished(?:, reward = (True|False))?\s*")


def qa_prompt(question: str, form: str = "short") -> str:
    """The first user turn of a ReAct QA trajectory (the QA environments ask the same).

    Args:
        question: The question.
        form: ``yesno`` or ``short``: what the answer looks like.
    """
    return f"{REACT_QA} {ANSWER_FORMS[form]}\n\nQuestion: {question.strip()}"


def failure_of(messages: list[dict[str, Any]], success: bool) -> str | None:
    """How a recorded trajectory failed, in ``tunelab sample``'s words: None (it succeeded),
    ``wrong_answer`` (it ended with finish[...]), ``malformed_action`` (its last turn has no
    parseable action) or ``no_answer`` (it stopped before finishing)."""
    if success:
        return None
    acts = [m["content"] for m in messages if m["role"] == "assistant"]
    action = ACTION.search(acts[-1]) if acts else None
    if action is None:
        return "malformed_action" if acts else "no_answer"
    return "wrong_answer" if action.group(1).lower() == "finish" else "no_answer"


def _episode(turns: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool | None]:
    """The turns without a closing "Episode finished" observation (a label, not something the agent
    saw), and the reward it states (None: it states none)."""
    if turns and turns[-1]["role"] == "user" and (m := _EPISODE_END.fullmatch(turns[-1]["content"].strip())):
        return turns[:-1], None if m.group(1) is None else m.group(1) == "True"
    return turns, None


def _agent_sample(r: _Reader, question: str, form: str, turns: list[dict[str, Any]], success: bool,
                  score: float, outcome: dict[str, Any], origin: dict[str, Any]) -> Sample:
    """A trajectory Sample: the QA prompt, the agent's turns, ``outcome`` (with its failure kind), ``origin``."""
    if not any(t["role"] == "assistant" for t in turns):
        raise r.error(r.col("conversations"), "no assistant turn")
    messages = [_turn("user", qa_prompt(question, form)), *turns]
    return Sample(messages, {"outcome": {"success": success, "score": score,
                                         "failure": failure_of(messages, success), **outcome}, "origin": origin})


def _nat_react(r: _Reader) -> Sample:
    """NAT paper ReAct trajectories with success labels (the question joined by id).

    NATInstruct rows: ``conversations`` of assistant / observation turns with ``loss`` flags, ``info.reward`` (success), ``info.gt`` / ``info.pred``, the sampling temperature in
    ``source``. The rows hold no question: sources join it by ``id`` from the questions file
    (source option ``questions``, default ``train.jsonl`` beside the data file)."""
    info = r.get("info", kind=dict)
    if not isinstance(info.get("reward"), bool):
        raise r.error(f"{r.col('info')}.reward", "expected true or false")
    for i, item in enumerate(r.get("conversations", kind=list)):
        if isinstance(item, dict) and item.get("role") != "assistant" and item.get("loss") is True:
            raise r.error(f"{r.col('conversations')}[{i}].loss", "an observation turn cannot carry loss")
    turns, _ = _episode(_chat_list(r, "conversations", "role", "content", {"assistant": "assistant", "user": "user"}))
    if not r.has("question"):
        raise r.error(r.col("question"), "missing: NAT rows hold no question; it is joined by id from the questions "
                      "file (source option questions:, default train.jsonl beside the data file)")
    gold = info.get("gt", r.row.get("answer"))
    form = "yesno" if isinstance(gold, bool) else "short"
    score = info.get("f1", float(info["reward"]))
    temperature = r.row.get("source")
    sample = _agent_sample(r, r.get("question"), form, turns, info["reward"],
                           float(score) if isinstance(score, int | float) else float(info["reward"]),
                           {"answer": info.get("pred"), "gold": ("Yes" if gold else "No") if form == "yesno" else gold},
                           {"dataset": "NAT", "temperature": _number(temperature)})
    if r.has("id"):
        sample.meta["task_id"] = str(r.get("id", kind=(str, int)))
    return sample


def _number(value: Any) -> Any:
    """``value`` as a float when it is a number or a numeric string, else as it is."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _react_text(r: _Reader, text: str) -> tuple[str, list[dict[str, Any]]]:
    """(question, turns) of an Alpaca-style ReAct text: ``### Instruction:`` the question, ``### Response:``
    Thought / Action lines (assistant turns) and Observation lines (user turns)."""
    m = re.search(r"### Instruction:\s*\n(.*?)\n\s*### Response:\s*\n(.*)", text, re.S)
    if m is None:
        raise r.error(r.col("traj"), "expected '### Instruction:' and '### Response:' sections")
    turns: list[dict[str, Any]] = []
    for line in filter(str.strip, m.group(2).splitlines()):
        role = "user" if line.startswith("Observation:") else "assistant" if line.startswith(("Thought", "Action")) \
            else None
        if role is not None and (not turns or turns[-1]["role"] != role or role == "user"):
            turns.append(_turn(role, line))
        elif turns:
            turns[-1]["content"] += "\n" + line
        else:
            raise r.error(r.col("traj"), f"the response must start with Thought or Action, got {line[:40]!r}")
    return m.group(1).strip(), turns


def _react_chat(r: _Reader, name: str) -> tuple[str, list[dict[str, Any]]]:
    """(question, turns) of a chat list whose first turn is the user's question."""
    turns = _chat_list(r, name, "role", "content", {"user": "user", "assistant": "assistant"})
    if turns[0]["role"] != "user":
        raise r.error(f"{r.col(name)}[0].role", "the first turn must be the user's question")
    return turns[0]["content"], turns[1:]


def _fireact(r: _Reader) -> Sample:
    """FireAct HotpotQA ReAct trajectories with exact-match labels and F1.

    ``traj`` (chat turns, or Alpaca-style text of Thought / Action / Observation lines) with ``reward`` (exact match), ``f1``, ``gt``, ``pred``; or the SFT
    file's ``messages``. The closing "Episode finished, reward = ..." observation is dropped; it gives
    the outcome where no ``reward`` field does."""
    if r.has("traj"):
        traj = r.get("traj", kind=(str, list))
        question, turns = _react_text(r, traj) if isinstance(traj, str) else _react_chat(r, "traj")
    else:
        question, turns = _react_chat(r, "messages")
    turns, stated = _episode(turns)
    reward = r.get("reward", kind=bool) if r.has("reward") else stated
    if reward is None:
        raise r.error(r.col("reward"), "missing (and no closing 'Episode finished, reward = ...' observation)")
    f1 = r.row.get(r.col("f1"))
    score = float(f1) if isinstance(f1, int | float) and not isinstance(f1, bool) and 0 <= f1 <= 1 else float(reward)
    return _agent_sample(r, question, "short", turns, reward, score,
                         {"answer": r.row.get("pred"), "gold": r.row.get("gt")}, {"dataset": "FireAct"})


def _valid_call(text: str, tools: dict[str, list[str]]) -> bool:
    """Whether a function call is a JSON object naming a listed tool with its required arguments."""
    try:
        call = json.loads(text)
        args = call.get("arguments", {}) if isinstance(call, dict) else None
        args = json.loads(args) if isinstance(args, str) else args
    except (json.JSONDecodeError, AttributeError):
        return False
    return isinstance(args, dict) and call.get("name") in tools and all(k in args for k in tools[call["name"]])


def _glaive(r: _Reader) -> Sample:
    """Glaive function-calling conversations, outcome from a schema check of the calls.

    LLaMA-Factory's ``glaive_toolcall``: human / gpt / function_call / observation turns and a ``tools`` JSON string, as a trajectory: the tools in a system turn, calls
    as assistant turns, observations as tool turns. The demonstrations carry no success label, so the
    outcome is a schema check: success when every call is JSON naming a listed tool with its required
    arguments (else ``malformed_action``); score = the share of valid calls."""
    text = r.get("tools", default="[]")
    try:
        listed = json.loads(text)
    except json.JSONDecodeError as e:
        raise r.error(r.col("tools"), f"invalid JSON ({e.msg})") from None
    if not isinstance(listed, list) or not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in listed):
        raise r.error(r.col("tools"), "expected a JSON list of {name, parameters} objects")
    tools = {t["name"]: list((t.get("parameters") or {}).get("required") or []) for t in listed}
    turns = _chat_list(r, "conversations", r.col("from"), r.col("value"), SHAREGPT_ROLES)
    kinds = [item.get(r.col("from")) for item in r.get("conversations", kind=list)]
    calls = [t["content"] for t, kind in zip(turns, kinds) if kind == "function_call"]
    valid = sum(_valid_call(c, tools) for c in calls)
    if listed:
        turns.insert(0, _turn("system", "You can call these functions; to call one, reply with only a JSON object "
                                        '{"name": ..., "arguments": {...}}.\n' + text))
    success = valid == len(calls)
    outcome = {"success": success, "score": valid / len(calls) if calls else 1.0,
               "failure": None if success else "malformed_action", "calls": len(calls)}
    return Sample(turns, {"outcome": outcome, "origin": {"dataset": "glaive"}, "tools": text})


def _qa(r: _Reader) -> Sample:
    """Question-answer rows: the question, then the answer (Yes / No for booleans).

    ``question`` and ``answer`` (text, a number or true/false), e.g. NAT's HotpotQA and StrategyQA
    evaluation sets: the question -> the answer (Yes / No for booleans); ``answer``
    and, where present, ``type`` kept in meta."""
    answer = r.get("answer", kind=(str, bool, int, float))
    text = ("Yes" if answer else "No") if isinstance(answer, bool) else str(answer)
    meta = {"answer": text} | ({"type": r.get("type")} if r.has("type") else {})
    return Sample([_turn("user", r.get("question")), _turn("assistant", text)], meta)


def _completion_turns(r: _Reader, name: str) -> list[dict[str, Any]]:
    """A completion given as a string (one assistant turn) or as a list of turns."""
    value = r.get(name, kind=(str, list))
    if isinstance(value, str):
        if not value.strip():
            raise r.error(r.col(name), "empty completion")
        return [_turn("assistant", value)]
    turns = _chat_list(r, name, "role", "content", {x: x for x in ROLES})
    if not "".join(t["content"] for t in turns if t["role"] == "assistant").strip():
        raise r.error(r.col(name), "empty completion")
    return turns


def _split_prompt(turns: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """(prompt turns, completion turns) of a full conversation: the prompt ends before its first
    assistant turn."""
    first = next(i for i, t in enumerate(turns) if t["role"] == "assistant")
    return turns[:first], turns[first:]


def _prompt_turns(r: _Reader) -> list[dict[str, Any]]:
    """The ``prompt`` field as turns (a string is one user turn); [] when absent."""
    if not r.has("prompt"):
        return []
    value = r.get("prompt", kind=(str, list))
    if isinstance(value, str):
        return [_turn("user", value)]
    return [{**t, "train": False} if t["role"] == "assistant" else t
            for t in _chat_list_any(r, "prompt")]


def _chat_list_any(r: _Reader, name: str) -> list[dict[str, Any]]:
    """Turns of a list of ``{role, content}`` that may hold no assistant turn (a prompt)."""
    items = r.get(name, kind=list)
    turns = []
    for i, item in enumerate(items):
        at = f"{r.col(name)}[{i}]"
        if not isinstance(item, dict) or item.get("role") not in ROLES or not isinstance(item.get("content"), str):
            raise r.error(at, f"expected {{role: one of {', '.join(ROLES)}, content: a string}}")
        turns.append(_turn(item["role"], item["content"]))
    if not turns:
        raise r.error(r.col(name), "empty prompt")
    return turns


def _preference(r: _Reader) -> Sample:
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


def _unpaired(r: _Reader) -> Sample:
    """An unpaired example for KTO: ``prompt`` and ``completion`` (strings or turns, or a full
    conversation in ``messages``) with a boolean ``label`` (true: desirable)."""
    if r.has("messages"):
        sample = _messages(r)
    else:
        prompt = _prompt_turns(r)
        if not prompt:
            r.get("prompt")  # raises: missing
        sample = Sample(prompt + _completion_turns(r, "completion"))
    label = r.get("label", kind=bool)
    return Sample(sample.messages, {**sample.meta, "label": bool(label)})


FORMATS: dict[str, Converter] = {
    "trajectory": _trajectory,
    "nat_react": _nat_react,
    "fireact": _fireact,
    "glaive": _glaive,
    "qa": _qa,
    "preference": _preference,
    "unpaired": _unpaired,
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
    ("nat_react", ("conversations", "info")),
    ("fireact", ("traj", "reward")),
    ("preference", ("chosen", "rejected")),
    ("unpaired", ("completion", "label")),
    ("unpaired", ("messages", "label")),
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
