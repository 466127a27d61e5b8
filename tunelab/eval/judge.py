"""LLM-as-a-judge over MT-Bench-style questions (Zheng et al., 2023, arXiv 2306.05685).

* Single grading: a 1-10 rating of the assistant's reply; math, reasoning and coding questions show
  the judge a reference answer when one exists.
* Pairwise: A vs B, asked in both orders; a verdict that flips with the order counts as a tie, and
  the share of order-consistent verdicts is reported (``position_consistency``).
* Later turns (MT-Bench's second question), as MT-Bench's multi-turn judge prompts do: the judge
  sees the whole conversation and grades the reply to the last question; with references, the
  reference answers of every turn so far are shown; pairwise shows each assistant's own
  conversation (A's and B's earlier replies differ). Its own prompt versions (``*-multi-v1``).
* Length control: AlpacaEval 2's GLM of the outcome (win 1, tie 0.5, loss 0) on the standardised
  length difference; the length-controlled win rate is the fitted win probability at equal lengths,
  and the slope the judge's length bias (:mod:`tunelab.eval.length_control`). Position bias (flip
  rate, first-shown preference) and self-preference: :mod:`tunelab.eval.judge_bias`.

Every judgement keeps the judge's fingerprint, the prompt version (the wording below is ours and
versioned) and the raw response; unparseable responses are counted, never guessed. Judges favour
answers from their own model family ("preference leakage", arXiv 2502.01534): see
:func:`circularity_warning`.
"""

from __future__ import annotations

import re
from typing import Any

from tunelab.eval.length_control import length_controlled
from tunelab.eval.stats import bootstrap_ci, clustered_mean, proportion_score
from tunelab.generate.base import GenerationConfig, Generator

SINGLE_PROMPT_VERSION = "tunelab-judge-single-v1"
PAIR_PROMPT_VERSION = "tunelab-judge-pair-v1"
SINGLE_MULTI_PROMPT_VERSION = "tunelab-judge-single-multi-v1"
PAIR_MULTI_PROMPT_VERSION = "tunelab-judge-pair-multi-v1"
REFERENCE_CATEGORIES = ("math", "reasoning", "coding")

SYSTEM = "You are a careful and impartial evaluator of answers written by AI assistants."
SINGLE_TEMPLATE = """Grade the assistant's last reply in the conversation below.
Consider whether it is correct, helpful, relevant, sufficiently detailed and clear. Length alone is not a merit.{ref_note}

{conversation}{reference}

Write a short justification, then give your grade from 1 (worst) to 10 (best) on the last line, exactly in this form: Rating: [[N]]"""
PAIR_TEMPLATE = """Two AI assistants replied to the same conversation. Decide which last reply serves the user better.
Consider correctness, helpfulness, relevance, detail and clarity. Do not let the order of the replies, their length or the assistants' names sway you.{ref_note}

{conversation}

[Reply of assistant A]
{answer_a}
[End of reply A]

[Reply of assistant B]
{answer_b}
[End of reply B]{reference}

Write a short justification, then end with exactly one verdict: [[A]] if A is better, [[B]] if B is better, [[C]] if they are equally good."""
JUSTIFY = "Write a short justification, then end with exactly one verdict:"
DIRECT = "Reply with exactly one verdict and nothing else:"
VERDICT_MODES = ("text", "logprob")
"""How a pairwise judge gives its verdict: ``text`` (a justification, then the verdict, parsed) or
``logprob`` (a local model's most likely verdict token sequence, asked for the verdict alone)."""
REF_NOTE = " A reference answer is given; an answer that contradicts it on facts or results is wrong."
SINGLE_MULTI_TEMPLATE = """Grade the assistant's reply to the {ordinal} user question in the conversation below; the earlier exchanges are context.
Consider whether it is correct, helpful, relevant, sufficiently detailed and clear, and whether it follows up on the conversation as asked. Length alone is not a merit.{ref_note}{reference}

[Conversation]
{conversation}
[End of conversation]

Write a short justification, then give your grade for the reply to the {ordinal} question from 1 (worst) to 10 (best) on the last line, exactly in this form: Rating: [[N]]"""
PAIR_MULTI_TEMPLATE = """Two AI assistants held a conversation with a user who asked both the same questions; each assistant replied in its own conversation. Decide which assistant's reply to the {ordinal} user question serves the user better; the earlier exchanges are context.
Consider correctness, helpfulness, relevance, detail and clarity. Do not let the order of the assistants, the length of their replies or their names sway you.{ref_note}{reference}

[Conversation of assistant A]
{conversation_a}
[End of conversation A]

[Conversation of assistant B]
{conversation_b}
[End of conversation B]

Write a short justification, then end with exactly one verdict: [[A]] if A is better, [[B]] if B is better, [[C]] if they are equally good."""
REF_NOTE_MULTI = " Reference answers are given; an answer that contradicts them on facts or results is wrong."
ORDINALS = ("first", "second", "third", "fourth", "fifth")

_RATING_PATTERNS = [re.compile(p, re.I) for p in (
    r"\[\[\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?\]\]",
    r"rating\s*[:=]?\s*\[?\s*(\d+(?:\.\d+)?)",
    r"\b(\d+(?:\.\d+)?)\s*/\s*10\b",
    r"score\s*[:=]\s*(\d+(?:\.\d+)?)",
)]  # fmt: skip
_VERDICT_RE = re.compile(r"\[\[\s*(A|B|C|tie)\s*\]\]", re.I)
_VERDICT_FALLBACK = re.compile(r"verdict\s*[:=]?\s*\**\s*(A|B|C|tie)\b", re.I)

FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("smollm", ("smollm",)), ("llama", ("llama", "vicuna", "alpaca")), ("qwen", ("qwen", "qwq")),
    ("gpt", ("gpt", "openai", "davinci", "chatgpt", "o1-", "o3-", "o4-")), ("gemma", ("gemma",)),
    ("gemini", ("gemini",)), ("mistral", ("mistral", "mixtral")), ("phi", ("phi-", "phi3", "phi4")),
    ("claude", ("claude",)), ("deepseek", ("deepseek",)), ("olmo", ("olmo",)),
)  # fmt: skip


# ----------------------------------------------------------------------------- parsing


def parse_rating(text: str) -> float | None:
    """A 1-10 rating from a judge response (``[[8]]``, ``Rating: 8``, ``8/10``), else None.

    The last match of the most specific pattern wins; values outside 1-10 count as failures.
    """
    for pattern in _RATING_PATTERNS:
        found = pattern.findall(text)
        if found:
            value = float(found[-1])
            return value if 1 <= value <= 10 else None
    return None


def parse_verdict(text: str) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (last one wins), else None."""
    found = _VERDICT_RE.findall(text) or _VERDICT_FALLBACK.findall(text)
    if not found:
        return None
    v = found[-1].upper()
    return "tie" if v in ("C", "TIE") else v


# ----------------------------------------------------------------------------- families


def model_family(name: str | None) -> str | None:
    """Model family from a model name or family name (``HuggingFaceTB/SmolLM2-135M`` -> ``smollm``)."""
    if not name:
        return None
    low = name.lower()
    for family, needles in FAMILIES:
        if low == family or any(n in low for n in needles):
            return family
    return None


def circularity_warning(judge_family: str, data_generator_family: str | None) -> str | None:
    """A warning when the judge comes from the family that generated the training data, else None.

    Args:
        judge_family: The judge's family or model name.
        data_generator_family: Family or model name of the model that wrote the training data.
    """
    judge = model_family(judge_family) or (judge_family or "").lower()
    data = model_family(data_generator_family) or (data_generator_family or "").lower()
    if not judge or not data or judge != data:
        return None
    return (
        f"judge family {judge!r} also generated the training data: judges prefer answers from "
        "related models (preference leakage, arXiv 2502.01534); use a judge from another family"
    )


# ----------------------------------------------------------------------------- prompts


def render_conversation(turns: list[str], answers: list[str], speaker: str = "Assistant") -> str:
    """User turns interleaved with ``speaker``'s answers (as many answers as given)."""
    parts = []
    for i, user in enumerate(turns):
        parts.append(f"[User]\n{user}")
        if i < len(answers):
            parts.append(f"[{speaker}]\n{answers[i]}")
    return "\n\n".join(parts)


def _ordinal(turn: int) -> str:
    return ORDINALS[turn] if turn < len(ORDINALS) else f"number {turn + 1}"


def _reference_block(question: dict[str, Any], turn: int) -> str:
    """The reference answer to ``turn`` (first turn) or the reference conversation up to it, else ""."""
    ref = question.get("reference")
    if question.get("category") not in REFERENCE_CATEGORIES or not ref or turn >= len(ref):
        return ""
    if turn == 0:
        return f"\n\n[Reference answer to the last user message]\n{ref[0]}\n[End of reference answer]"
    convo = render_conversation(question["turns"][: turn + 1], ref[: turn + 1], "Reference answer")
    return f"\n\n[Reference answers]\n{convo}\n[End of reference answers]"


def single_prompt(question: dict[str, Any], answers: list[str], turn: int = 0) -> list[dict[str, str]]:
    """Judge messages to grade ``answers[turn]``; later turns show the whole conversation up to ``turn``."""
    ref = _reference_block(question, turn)
    conversation = render_conversation(question["turns"][: turn + 1], answers[: turn + 1])
    if turn == 0:
        text = SINGLE_TEMPLATE.format(
            ref_note=REF_NOTE if ref else "", reference=ref, conversation=conversation
        )
    else:
        text = SINGLE_MULTI_TEMPLATE.format(
            ordinal=_ordinal(turn),
            ref_note=REF_NOTE_MULTI if ref else "",
            reference=ref,
            conversation=conversation,
        )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def pair_prompt(
    question: dict[str, Any], answers_a: list[str], answers_b: list[str], turn: int = 0
) -> list[dict[str, str]]:
    """Judge messages comparing ``answers_a[turn]`` with ``answers_b[turn]`` (A shown first).

    For later turns each assistant's own conversation (its earlier answers) is shown in full.
    """
    ref = _reference_block(question, turn)
    if turn == 0:
        text = PAIR_TEMPLATE.format(
            ref_note=REF_NOTE if ref else "",
            reference=ref,
            conversation=render_conversation(question["turns"][:1], []),
            answer_a=answers_a[0],
            answer_b=answers_b[0],
        )
    else:
        turns = question["turns"][: turn + 1]
        text = PAIR_MULTI_TEMPLATE.format(
            ordinal=_ordinal(turn),
            ref_note=REF_NOTE_MULTI if ref else "",
            reference=ref,
            conversation_a=render_conversation(turns, answers_a[: turn + 1], "Assistant A"),
            conversation_b=render_conversation(turns, answers_b[: turn + 1], "Assistant B"),
        )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


# ----------------------------------------------------------------------------- the judge


class Judge:
    """A Generator used as a judge (greedy, one response per prompt).

    Args:
        generator: The judge model (e.g. ``OpenAIGenerator`` or ``HFGenerator``).
        max_new_tokens: Response budget.
    """

    def __init__(self, generator: Generator, max_new_tokens: int = 512, verdict: str = "text") -> None:
        if verdict not in VERDICT_MODES:
            raise ValueError(f"judge verdict: {verdict!r} is not one of {', '.join(VERDICT_MODES)}")
        self.generator, self.max_new_tokens, self.verdict = generator, max_new_tokens, verdict
        self._scorer = None
        if verdict == "logprob":  # a local model's log-probabilities of the three verdicts
            from tunelab.generate.loglik import scorer_for

            self._scorer = scorer_for(generator)

    def _ask(self, prompts: list[list[dict[str, str]]]) -> list[str]:
        cfg = GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=0.0, n=1)
        return [c[0] for c in self.generator.generate(prompts, cfg)] if prompts else []

    def _ask_verdicts(self, prompts: list[list[dict[str, str]]]) -> list[str]:
        """Pairwise replies: generated text (``verdict: text``), or with ``logprob`` the most likely of
        ``[[A]]`` / ``[[B]]`` / ``[[C]]`` as the whole reply, asked for the verdict alone (a small local
        judge that never writes the format still gives one), its log-probabilities kept in the reply."""
        if self._scorer is None:
            return self._ask(prompts)
        direct = [[*m[:-1], {**m[-1], "content": m[-1]["content"].replace(JUSTIFY, DIRECT)}] for m in prompts]
        scores = self._scorer.loglik([(m, f"[[{v}]]") for m in direct for v in "ABC"])
        out = []
        for i in range(len(direct)):
            lp = dict(zip("ABC", scores[3 * i : 3 * i + 3]))
            best = max(lp, key=lambda v: lp[v])
            out.append(f"[[{best}]] (log-probabilities: " + ", ".join(f"{v} {x:.3f}" for v, x in lp.items()) + ")")
        return out

    def single(self, questions: list[dict[str, Any]], answers: list[list[str]], turn: int = 0) -> list[dict]:
        """Grade each question's answer at ``turn`` (0-based; records say ``turn`` 1, 2, ...); one record per question."""
        raws = self._ask([single_prompt(q, a, turn) for q, a in zip(questions, answers)])
        records = []
        for q, raw in zip(questions, raws):
            rating = parse_rating(raw)
            records.append(
                {
                    "id": str(q["id"]),
                    "turn": turn + 1,
                    "category": q.get("category", ""),
                    "rating": rating,
                    "parse_failed": rating is None,
                    "reference_used": bool(_reference_block(q, turn)),
                    "judge": self.generator.fingerprint,
                    "prompt_version": SINGLE_PROMPT_VERSION if turn == 0 else SINGLE_MULTI_PROMPT_VERSION,
                    "raw": raw,
                }
            )
        return records

    def pairwise(
        self,
        questions: list[dict[str, Any]],
        answers_a: list[list[str]],
        answers_b: list[list[str]],
        turn: int = 0,
    ) -> list[dict]:
        """Compare A and B on each question in both orders; one record per question (see :func:`combine_orders`)."""
        prompts = []
        for q, a, b in zip(questions, answers_a, answers_b):
            prompts += [pair_prompt(q, a, b, turn), pair_prompt(q, b, a, turn)]
        raws = self._ask_verdicts(prompts)
        records = []
        for i, (q, a, b) in enumerate(zip(questions, answers_a, answers_b)):
            raw_ab, raw_ba = raws[2 * i], raws[2 * i + 1]
            rec = combine_orders(parse_verdict(raw_ab), parse_verdict(raw_ba))
            records.append(
                {
                    "id": str(q["id"]),
                    "turn": turn + 1,
                    "category": q.get("category", ""),
                    **rec,
                    "len_a": len(a[turn]),
                    "len_b": len(b[turn]),
                    "judge": self.generator.fingerprint,
                    "prompt_version": (PAIR_PROMPT_VERSION if turn == 0 else PAIR_MULTI_PROMPT_VERSION)
                    + ("+logprob" if self.verdict == "logprob" else ""),
                    "raw_ab": raw_ab,
                    "raw_ba": raw_ba,
                }
            )
        return records


def combine_orders(verdict_ab: str | None, verdict_ba: str | None) -> dict[str, Any]:
    """Merge the verdicts of both orders into one outcome for model A.

    Args:
        verdict_ab: Parsed verdict with A shown first (``"A"``/``"B"``/``"tie"``/None).
        verdict_ba: Parsed verdict with B shown first (its ``"A"`` means model B).

    Returns:
        ``winner`` (``"a"``, ``"b"``, ``"tie"`` or ``"error"`` when a verdict did not parse),
        ``consistent`` (both orders agree; None on error) and ``parse_failed``.
    """
    first = {"A": "a", "B": "b", "tie": "tie"}.get(verdict_ab or "")
    second = {"A": "b", "B": "a", "tie": "tie"}.get(verdict_ba or "")
    if first is None or second is None:
        return {
            "winner": "error",
            "consistent": None,
            "parse_failed": True,
            "verdict_ab": verdict_ab,
            "verdict_ba": verdict_ba,
        }
    return {
        "winner": first if first == second else "tie",
        "consistent": first == second,
        "parse_failed": False,
        "verdict_ab": verdict_ab,
        "verdict_ba": verdict_ba,
    }


# ----------------------------------------------------------------------------- summaries

OUTCOME = {"a": 1.0, "tie": 0.5, "b": 0.0}


def _mean_score(values: list[float]) -> dict:
    return bootstrap_ci(values) if values else {"value": float("nan"), "ci": [float("nan")] * 2, "n": 0}


def summarize_single(records: list[dict]) -> dict[str, dict]:
    """``rating`` (mean 1-10 over parsed grades, bootstrap CI) and ``parse_failure_rate``."""
    ratings = [r["rating"] for r in records if r.get("rating") is not None]
    return {
        "rating": _mean_score(ratings),
        "parse_failure_rate": proportion_score([int(r.get("rating") is None) for r in records]),
    }


def summarize_pairwise(records: list[dict]) -> dict[str, dict]:
    """Win rate of A (ties count half), tie rate, position consistency, parse failures, LC win rate."""
    ok = [r for r in records if r["winner"] != "error"]
    out = {
        "win_rate": _mean_score([OUTCOME[r["winner"]] for r in ok]),
        "tie_rate": proportion_score([int(r["winner"] == "tie") for r in ok]),
        "parse_failure_rate": proportion_score([int(r["winner"] == "error") for r in records]),
    }
    consistency = [int(r["consistent"]) for r in ok if r.get("consistent") is not None]
    out["position_consistency"] = proportion_score(consistency)
    if len(ok) >= 2 and all("len_a" in r for r in ok):
        lc = length_controlled([OUTCOME[r["winner"]] for r in ok], [r["len_a"] for r in ok], [r["len_b"] for r in ok])
        out["lc_win_rate"], out["length_bias"] = lc["lc_win_rate"], lc["length_bias"]
    return out


def summarize_turns(judgements: list[list[dict]], mode: str = "single") -> dict[str, dict]:
    """Scores of questions judged turn by turn (``judgements[i]``: question i's records, one per turn).

    Single: ``rating``, the mean of every parsed grade of every turn (MT-Bench's overall score), and
    ``score_turn<t>`` per turn; pairwise: ``win_rate`` over every turn's verdict and
    ``win_rate_turn<t>``. The overall CI resamples questions with their turns (:func:`clustered_mean`);
    per-turn CIs resample questions. Parse failures, tie rate, position consistency and the
    length-controlled win rate are over all judged turns.
    """
    flat = [r for rs in judgements for r in rs]
    if mode == "single":
        rest, name, per_turn = summarize_single(flat), "rating", "score_turn"

        def value(r: dict) -> float | None:
            return r.get("rating")

    else:
        rest, name, per_turn = summarize_pairwise(flat), "win_rate", "win_rate_turn"

        def value(r: dict) -> float | None:
            return OUTCOME.get(r["winner"])

    out = {name: clustered_mean([[v for r in rs if (v := value(r)) is not None] for rs in judgements])}
    for t in sorted({r["turn"] for r in flat}):
        out[f"{per_turn}{t}"] = _mean_score(
            [v for r in flat if r["turn"] == t and (v := value(r)) is not None]
        )
    return {**out, **{k: v for k, v in rest.items() if k != name}}


def combine_judges(first: list[dict], second: list[dict], mode: str = "single") -> tuple[list[dict], dict]:
    """Merge two judges' records (same questions, same order) and measure their agreement.

    Single mode averages the parsed ratings (one judge's rating when the other failed) and counts
    agreement as ratings within 1 point; pairwise mode keeps a winner both judges name, else a tie.

    Returns:
        (combined records, ``{"judge_agreement": score}``).
    """
    merged = []
    for r1, r2 in zip(first, second):
        if mode == "single":
            vals = [r["rating"] for r in (r1, r2) if r["rating"] is not None]
            rec = {
                **r1,
                "rating": sum(vals) / len(vals) if vals else None,
                "ratings": [r1["rating"], r2["rating"]],
                "judges": [r1["judge"], r2["judge"]],
                "raw2": r2["raw"],
            }
            rec["judges_agree"] = int(abs(vals[0] - vals[1]) <= 1) if len(vals) == 2 else None
        else:
            w1, w2 = r1["winner"], r2["winner"]
            winner = w2 if w1 == "error" else w1 if w2 == "error" else (w1 if w1 == w2 else "tie")
            rec = {
                **r1,
                "winner": winner,
                "winners": [w1, w2],
                "judges": [r1["judge"], r2["judge"]],
                "raw2_ab": r2["raw_ab"],
                "raw2_ba": r2["raw_ba"],
            }
            rec["judges_agree"] = int(w1 == w2) if "error" not in (w1, w2) else None
        merged.append(rec)
    return merged, agreement_score(merged)


def agreement_score(records: list[dict]) -> dict:
    """``{"judge_agreement": score}`` over records where both judges parsed (``judges_agree`` not None)."""
    return {
        "judge_agreement": proportion_score(
            [r["judges_agree"] for r in records if r.get("judges_agree") is not None]
        )
    }
