"""Agent trajectories as rows: the ``trajectory`` format (``tunelab sample``) and agent datasets
(NAT's ReAct trajectories, FireAct, Glaive function calling) converted to trajectories.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tunelab.data.chat_formats import SHAREGPT_ROLES, Converter, Reader, as_turn, chat_turns, read_messages
from tunelab.types import Sample

ACTION = re.compile(r"Action\s*:\s*(\w+)\s*\[([^\]\n]*)\]")
"""An agent action, ``Action: tool[argument]`` (the first one in a turn counts)."""


def _trajectory(r: Reader) -> Sample:
    """An agent trajectory (``tunelab sample``): ``messages`` (observations are user turns, no loss)
    plus its ``outcome`` (``success`` true/false, optional ``score`` in [0, 1]) and ``origin``.
    A broken action is an error, except as the last turn of a trajectory that failed by it
    (``outcome.failure: malformed_action``, as ``tunelab sample`` records a model's bad action)."""
    sample = read_messages(r)
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


def _agent_sample(r: Reader, question: str, form: str, turns: list[dict[str, Any]], success: bool,
                  score: float, outcome: dict[str, Any], origin: dict[str, Any]) -> Sample:
    """A trajectory Sample: the QA prompt, the agent's turns, ``outcome`` (with its failure kind), ``origin``."""
    if not any(t["role"] == "assistant" for t in turns):
        raise r.error(r.col("conversations"), "no assistant turn")
    messages = [as_turn("user", qa_prompt(question, form)), *turns]
    return Sample(messages, {"outcome": {"success": success, "score": score,
                                         "failure": failure_of(messages, success), **outcome}, "origin": origin})


def _nat_react(r: Reader) -> Sample:
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
    turns, _ = _episode(chat_turns(r, "conversations", "role", "content", {"assistant": "assistant", "user": "user"}))
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


def _react_text(r: Reader, text: str) -> tuple[str, list[dict[str, Any]]]:
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
            turns.append(as_turn(role, line))
        elif turns:
            turns[-1]["content"] += "\n" + line
        else:
            raise r.error(r.col("traj"), f"the response must start with Thought or Action, got {line[:40]!r}")
    return m.group(1).strip(), turns


def _react_chat(r: Reader, name: str) -> tuple[str, list[dict[str, Any]]]:
    """(question, turns) of a chat list whose first turn is the user's question."""
    turns = chat_turns(r, name, "role", "content", {"user": "user", "assistant": "assistant"})
    if turns[0]["role"] != "user":
        raise r.error(f"{r.col(name)}[0].role", "the first turn must be the user's question")
    return turns[0]["content"], turns[1:]


def _fireact(r: Reader) -> Sample:
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


def _glaive(r: Reader) -> Sample:
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
    turns = chat_turns(r, "conversations", r.col("from"), r.col("value"), SHAREGPT_ROLES)
    kinds = [item.get(r.col("from")) for item in r.get("conversations", kind=list)]
    calls = [t["content"] for t, kind in zip(turns, kinds) if kind == "function_call"]
    valid = sum(_valid_call(c, tools) for c in calls)
    if listed:
        turns.insert(0, as_turn("system", "You can call these functions; to call one, reply with only a JSON object "
                                        '{"name": ..., "arguments": {...}}.\n' + text))
    success = valid == len(calls)
    outcome = {"success": success, "score": valid / len(calls) if calls else 1.0,
               "failure": None if success else "malformed_action", "calls": len(calls)}
    return Sample(turns, {"outcome": outcome, "origin": {"dataset": "glaive"}, "tools": text})


AGENT_FORMATS: dict[str, Converter] = {
    "trajectory": _trajectory,
    "nat_react": _nat_react,
    "fireact": _fireact,
    "glaive": _glaive,
}
"""This module's converters by format name (:data:`tunelab.data.formats.FORMATS` lists them all)."""
